"""PhotoMaker (v1) prompts as a FreeCure pair: the personalised (PD) and the foundation (FD) conditioning.

This follows PhotoMaker's reference pipeline (method.md §1.3), not ComfyUI 0.3.75's core PhotoMakerEncode
(whose word-id rule keeps the trigger tokens and gives the identity to one token only). Two prompts are encoded:
the clean prompt (the trigger word 'photomaker' removed, the class word once) and the expanded prompt (the same,
with the class word's last CLIP token repeated once per reference photo; the trailing padding shrinks so every
chunk keeps its length). As in the reference's denoising loop, before `merge_start` both branches use the clean
prompt and its pooled output; after it PD uses the expanded prompt with photo i fused into the i-th class-token
copy by the PhotoMaker model's own forward, FD the expanded prompt without the fusion, and both the expanded
prompt's pooled output. The switch is a ComfyUI timestep range (start_percent/end_percent, as
ConditioningSetTimestepRange). The prompt and token logic is in identity/photomaker_tokens.py; this module
encodes and fuses.
"""
from __future__ import annotations

import logging

import torch

import comfy.clip_vision

from ..identity.photomaker_tokens import class_token_mask, class_word, photomaker_tokens, split_trigger

log = logging.getLogger("FreeCure")

# The reference (PhotoMaker/run_photomaker_freecure.py) runs DDIM with SDXL's scheduler config over 50 steps, at
# model timesteps 981, 961, ..., 1 (ComfyUI: sampler ddim, scheduler ddim_uniform), and uses the clean prompt for
# the steps i <= start_merge_step = 10 (timesteps 981..781), the fused one from step 11 (timestep 761). ComfyUI
# maps a conditioning percent p to the model timestep (1 - p) * 999, so any p in (0.218, 0.238) switches there;
# 0.23 (timestep 769.2) sits near the middle of that gap, away from both steps.
MERGE_START = 0.23


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


def merge_schedule(early: tuple, late: tuple, merge_start: float) -> list:
    """CONDITIONING from two (embedding, pooled) pairs: `early` for [0, merge_start] and `late` for
    [merge_start, 1] (ConditioningSetTimestepRange's keys); a single entry without a range when merge_start is
    0 (late only) or 1 (early only). Each entry has its own new options dict."""
    if merge_start <= 0.0:
        return [[late[0], {"pooled_output": late[1]}]]
    if merge_start >= 1.0:
        return [[early[0], {"pooled_output": early[1]}]]
    return [[early[0], {"pooled_output": early[1], "start_percent": 0.0, "end_percent": merge_start}],
            [late[0], {"pooled_output": late[1], "start_percent": merge_start, "end_percent": 1.0}]]


def encode_pair(photomaker, image: torch.Tensor, clip, text: str,
                merge_start: float = MERGE_START) -> tuple[list, list]:
    """(pd_conditioning, fd_conditioning) for a PhotoMaker v1 prompt with the trigger word.

    image: (N, H, W, C) reference photos, one class-token copy each. Before merge_start both are the clean prompt
    (trigger removed, class word once) with its pooled output; after it PD is the expanded prompt with the identity
    fused, FD the expanded prompt without it, both with the expanded prompt's pooled output.
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
    expanded = clip.encode_from_tokens(tokens, return_pooled=True)
    _check_width(expanded[0], width)
    clean = clip.encode_from_tokens(clip.tokenize(split_trigger(text)[1]), return_pooled=True)
    log.info("FreeCure: PhotoMaker identity of %d photo(s) goes into the class word '%s' (its last CLIP token, "
             "repeated at prompt tokens %d-%d).", photos, class_word(text), positions[0], positions[-1])
    fd = merge_schedule(clean, expanded, merge_start)
    if merge_start >= 1.0:
        log.warning("FreeCure: merge_start is 1.0, so the identity is never fused: PD equals FD (the clean prompt).")
        return merge_schedule(clean, expanded, merge_start), fd
    fused = (fuse_identity(photomaker, image, expanded[0], positions), expanded[1])
    return merge_schedule(clean, fused, merge_start), fd
