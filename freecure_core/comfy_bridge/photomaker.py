"""PhotoMaker (v1) prompts as a FreeCure pair: the personalised (PD) and the foundation (FD) conditioning.

This follows PhotoMaker's reference pipeline (method.md §1.3), not ComfyUI 0.3.75's core PhotoMakerEncode
(whose word-id rule keeps the trigger tokens and gives the identity to one token only): the trigger word
'photomaker' is removed, the class word's last CLIP token is repeated once per reference photo (the
trailing padding shrinks so every chunk keeps its length), and that sequence is encoded. FD is this
encoding; PD is the PhotoMaker model's own forward on a copy of it, which fuses photo i into the i-th
class-token copy. Both share the pooled output. As in the reference pipeline, PD may start from the FD
embedding and switch to the fused one at `merge_start` (a ComfyUI timestep range). The prompt and token
logic (trigger, class word, its copies) is in identity/photomaker_tokens.py; this module encodes and fuses.
"""
from __future__ import annotations

import logging

import torch

import comfy.clip_vision

from ..identity.photomaker_tokens import class_token_mask, class_word, photomaker_tokens

log = logging.getLogger("FreeCure")


# ------------------------------------------------------------------------------------------ inputs
def fuse_width(photomaker) -> int:
    """Text-embedding width the PhotoMaker fuse module works on (2048 for PhotoMaker v1)."""
    fuse = getattr(photomaker, "fuse_module", None)
    norm = getattr(fuse, "layer_norm", None)
    if not callable(photomaker) or not hasattr(photomaker, "load_device") or norm is None:
        raise ValueError(f"FreeCure: 'photomaker' must be the PHOTOMAKER output of ComfyUI's Load PhotoMaker node "
                         f"(PhotoMakerLoader) with a PhotoMaker v1 file; got {type(photomaker).__name__}.")
    return int(norm.normalized_shape[0])


def _check_clip(clip) -> None:
    if not (callable(getattr(clip, "tokenize", None)) and callable(getattr(clip, "encode_from_tokens", None))):
        raise ValueError(f"FreeCure: 'clip' must be a CLIP (from the SDXL checkpoint loader or Load CLIP); "
                         f"got {type(clip).__name__}.")


def _check_width(cond: torch.Tensor, width: int) -> None:
    if cond.shape[-1] != width:
        raise ValueError(f"FreeCure: this CLIP gives {cond.shape[-1]}-wide text embeddings but the PhotoMaker model "
                         f"fuses {width}-wide ones. PhotoMaker v1 needs SDXL's CLIP (CLIP-L 768 + CLIP-G 1280 = 2048): "
                         f"connect the CLIP of an SDXL checkpoint.")


# ------------------------------------------------------------------------------------------ fusion
def fuse_identity(photomaker, image: torch.Tensor, cond: torch.Tensor, positions: list) -> torch.Tensor:
    """(1, T, 2048) PD embedding: the PhotoMaker model's forward on a copy of `cond` (it writes in place),
    photos preprocessed as core does; photo i goes into the i-th class position."""
    device = photomaker.load_device
    pixels = comfy.clip_vision.clip_preprocess(image.to(device)).float()
    with torch.no_grad():
        return photomaker(id_pixel_values=pixels.unsqueeze(0), prompt_embeds=cond.to(device, copy=True),
                          class_tokens_mask=class_token_mask(positions, cond.shape[1], device))


def merge_schedule(fd_cond: torch.Tensor, fused: torch.Tensor, extra: dict, merge_start: float) -> list:
    """PD CONDITIONING: one fused entry when merge_start is 0, else the FD embedding for
    [0, merge_start] and the fused one for [merge_start, 1] (ConditioningSetTimestepRange's keys)."""
    if merge_start <= 0.0:
        return [[fused, dict(extra)]]
    return [[fd_cond, {**extra, "start_percent": 0.0, "end_percent": merge_start}],
            [fused, {**extra, "start_percent": merge_start, "end_percent": 1.0}]]


def encode_pair(photomaker, image: torch.Tensor, clip, text: str, merge_start: float = 0.2) -> tuple[list, list]:
    """(pd_conditioning, fd_conditioning) for a PhotoMaker v1 prompt with the trigger word.

    image: (N, H, W, C) reference photos, one class-token copy each. Both conditionings share the pooled
    output of the trigger-free, expanded prompt.
    """
    width = fuse_width(photomaker)
    _check_clip(clip)
    merge_start = float(merge_start)
    if not 0.0 <= merge_start <= 1.0:
        raise ValueError(f"FreeCure: merge_start must be between 0 and 1 (got {merge_start}).")
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[0] == 0:
        raise ValueError("FreeCure: 'image' must be an IMAGE batch with at least one reference photo.")
    photos = int(image.shape[0])
    tokens, positions = photomaker_tokens(clip, text, photos)
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    _check_width(cond, width)
    log.info("FreeCure: PhotoMaker identity of %d photo(s) goes into the class word '%s' (its last CLIP token, "
             "repeated at prompt tokens %d-%d).", photos, class_word(text), positions[0], positions[-1])
    extra = {"pooled_output": pooled}
    fd = [[cond, dict(extra)]]
    if merge_start >= 1.0:
        log.warning("FreeCure: merge_start is 1.0, so the identity is never fused: PD equals FD.")
        return [[cond, dict(extra)]], fd
    fused = fuse_identity(photomaker, image, cond, positions)
    return merge_schedule(cond, fused, extra, merge_start), fd
