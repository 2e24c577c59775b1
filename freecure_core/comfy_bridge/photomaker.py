"""PhotoMaker (v1) prompts as a FreeCure pair: the personalised (PD) and the foundation (FD) conditioning.

This follows PhotoMaker's reference pipeline (method.md §1.3), not ComfyUI 0.3.75's core PhotoMakerEncode
(whose word-id rule keeps the trigger tokens and gives the identity to one token only): the trigger word
'photomaker' is removed, the class word's last CLIP token is repeated once per reference photo (the
trailing padding shrinks so every chunk keeps its length), and that sequence is encoded. FD is this
encoding; PD is the PhotoMaker model's own forward on a copy of it, which fuses photo i into the i-th
class-token copy. Both share the pooled output. As in the reference pipeline, PD may start from the FD
embedding and switch to the fused one at `merge_start` (a ComfyUI timestep range).
"""
from __future__ import annotations

import logging
import re

import torch

import comfy.clip_vision

TRIGGER = "photomaker"
NEEDS_TRIGGER = ("FreeCure: the PhotoMaker prompt needs the trigger word 'photomaker' right after the class word, "
                 "e.g. 'a photo of a woman photomaker with blonde hair'")
EXAMPLE = "'a photo of a woman photomaker with blonde hair'"

# The trigger as a whole word: after whitespace, then the end, whitespace or punctuation (which stays).
_TRIGGER_RE = re.compile(r"(?<=\s)photomaker(?=$|\s|[,.;:!?])", re.IGNORECASE)
_ANY_TRIGGER_RE = re.compile(r"\bphotomaker\b", re.IGNORECASE)

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


# ------------------------------------------------------------------------------------------ text
def split_trigger(text: str) -> tuple[str, str]:
    """(text before the trigger, text without the trigger). The trigger is the whole word 'photomaker'
    (any case, punctuation after it stays); it and the whitespace before it are removed.

    ValueError when the trigger is missing, repeated, or not right after a plain class word.
    """
    found = len(_ANY_TRIGGER_RE.findall(text))
    if found > 1:
        raise ValueError(f"FreeCure: the prompt has the trigger word 'photomaker' {found} times; PhotoMaker fuses "
                         f"one identity into one class word: keep a single 'photomaker', e.g. {EXAMPLE}.")
    match = _TRIGGER_RE.search(text)
    if match is None:
        raise ValueError(NEEDS_TRIGGER)
    prefix = text[:match.start() - 1]
    if not re.search(r"\w$", prefix.rstrip()):  # nothing before it, or it follows punctuation / a bracket
        raise ValueError(NEEDS_TRIGGER)
    return prefix, prefix + text[match.end():]


# ------------------------------------------------------------------------------------------ tokens
def _same_token(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):  # embedding vectors
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _content(chunks: list) -> list:
    """(chunk index, position, token) of every prompt token (word id != 0: not start, end or padding)."""
    return [(c, p, t[0]) for c, chunk in enumerate(chunks) for p, t in enumerate(chunk) if t[2] != 0]


def class_token_positions(clip, prefix: str, tokens: dict) -> dict:
    """{tokenizer key: (chunk index, position)} of the class token, the last token of `prefix` inside
    `tokens` (clip.tokenize(text without the trigger, return_word_ids=True)).

    The CLIP BPE splits at whitespace, so the prefix's tokens must start the prompt's tokens; this is checked.
    """
    prefix_tokens = clip.tokenize(prefix, return_word_ids=True)
    out = {}
    for key, chunks in tokens.items():
        whole = _content(chunks)
        head = [t for _, _, t in _content(prefix_tokens.get(key, []))]
        if not head:
            raise ValueError(NEEDS_TRIGGER)
        if len(head) > len(whole) or not all(_same_token(a, b) for a, b in zip(head, (t for _, _, t in whole))):
            raise ValueError(f"FreeCure: could not find the class word before 'photomaker' among the prompt's CLIP "
                             f"tokens (the text before it tokenizes differently inside the whole prompt, e.g. inside a "
                             f"'(...:1.2)' weight). Write the class word as a plain word right before 'photomaker', "
                             f"outside brackets, e.g. {EXAMPLE}.")
        chunk, position, _ = whole[len(head) - 1]
        out[key] = (chunk, position)
    return out


def expand_class_token(tokens: dict, where: dict, copies: int) -> dict:
    """tokens with the class token at where[key] repeated `copies` times in place; that chunk drops as many
    trailing padding entries, so chunk lengths do not change. New lists; the input is not changed.

    ValueError when the chunk has too little padding (prompt too long for that many photos).
    """
    out = {}
    for key, chunks in tokens.items():
        c, p = where[key]
        chunk = chunks[c]
        extra = copies - 1
        trailing = next((i for i, t in enumerate(reversed(chunk)) if t[2] != 0), len(chunk))
        free = max(trailing - 1, 0)  # the first of the trailing non-word entries is the end token
        if extra > free:
            raise ValueError(f"FreeCure: the prompt is too long for {copies} reference photos: the class word is "
                             f"repeated once per photo, but its {len(chunk)}-token chunk has room for only "
                             f"{free + 1}. Shorten the prompt or use fewer photos.")
        grown = chunk[:p + 1] + [chunk[p]] * extra + chunk[p + 1:len(chunk) - extra]
        out[key] = [list(x) for x in chunks[:c]] + [grown] + [list(x) for x in chunks[c + 1:]]
    return out


def photomaker_tokens(clip, text: str, copies: int) -> tuple[dict, list]:
    """(tokens, class positions) for a PhotoMaker prompt: the tokens of `text` without the trigger, with
    the class token repeated `copies` times, and the flat token indices of those copies (the same for
    every tokenizer key, e.g. SDXL's 'l' and 'g')."""
    prefix, plain = split_trigger(text)
    tokens = clip.tokenize(plain, return_word_ids=True)
    where = class_token_positions(clip, prefix, tokens)
    flat = {key: sum(len(chunk) for chunk in tokens[key][:c]) + p for key, (c, p) in where.items()}
    if len(set(flat.values())) != 1:
        raise ValueError(f"FreeCure: this CLIP's tokenizers put the class word at different positions {flat}; "
                         f"write the class word as a plain word right before 'photomaker', e.g. {EXAMPLE}.")
    start = next(iter(flat.values()))
    return expand_class_token(tokens, where, copies), list(range(start, start + copies))


# ------------------------------------------------------------------------------------------ fusion
def class_token_mask(positions: list, length: int, device) -> torch.Tensor:
    """(1, length) bool mask, True exactly at the class-token `positions`."""
    if not positions or not all(0 < p < length for p in positions):
        raise ValueError(f"FreeCure: the class-word tokens {positions} are outside the {length}-token prompt "
                         f"embedding; write the class word as a plain word right before 'photomaker', e.g. {EXAMPLE}.")
    mask = torch.zeros(1, length, dtype=torch.bool, device=device)
    mask[0, positions] = True
    return mask


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
    class_word = re.search(r"\w+$", split_trigger(text)[0].rstrip()).group(0)
    log.info("FreeCure: PhotoMaker identity of %d photo(s) goes into the class word '%s' (its last CLIP token, "
             "repeated at prompt tokens %d-%d).", photos, class_word, positions[0], positions[-1])
    extra = {"pooled_output": pooled}
    fd = [[cond, dict(extra)]]
    if merge_start >= 1.0:
        log.warning("FreeCure: merge_start is 1.0, so the identity is never fused: PD equals FD.")
        return [[cond, dict(extra)]], fd
    fused = fuse_identity(photomaker, image, cond, positions)
    return merge_schedule(cond, fused, extra, merge_start), fd
