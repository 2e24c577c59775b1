"""PhotoMaker (v1) prompts as tokens: the trigger word, the class word and its per-photo copies.

As in PhotoMaker's reference pipeline (method.md §1.3): the trigger word 'photomaker' is removed, the class
word's last CLIP token is repeated once per reference photo (the trailing padding shrinks so every chunk keeps
its length), and the copies' positions mark where the PhotoMaker model fuses each photo. `clip` is any object
with ComfyUI CLIP's `tokenize(text, return_word_ids=True)`: {tokenizer key: [chunk: [(token, weight,
word id), ...]]}, word id 0 for start, end and padding. No ComfyUI imports; the encoding and the fusion are in
comfy_bridge/photomaker.py.
"""
from __future__ import annotations

import re

import torch

TRIGGER = "photomaker"
NEEDS_TRIGGER = ("FreeCure: the PhotoMaker prompt needs the trigger word 'photomaker' right after the class word, "
                 "e.g. 'a photo of a woman photomaker with blonde hair'")
EXAMPLE = "'a photo of a woman photomaker with blonde hair'"

# The trigger as a whole word: after whitespace, then the end, whitespace or punctuation (which stays).
_TRIGGER_RE = re.compile(r"(?<=\s)photomaker(?=$|\s|[,.;:!?])", re.IGNORECASE)
_ANY_TRIGGER_RE = re.compile(r"\bphotomaker\b", re.IGNORECASE)


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


def class_word(text: str) -> str:
    """The class word of a PhotoMaker prompt: the last word before the trigger."""
    return re.search(r"\w+$", split_trigger(text)[0].rstrip()).group(0)


def class_token_mask(positions: list, length: int, device) -> torch.Tensor:
    """(1, length) bool mask, True exactly at the class-token `positions`."""
    if not positions or not all(0 < p < length for p in positions):
        raise ValueError(f"FreeCure: the class-word tokens {positions} are outside the {length}-token prompt "
                         f"embedding; write the class word as a plain word right before 'photomaker', e.g. {EXAMPLE}.")
    mask = torch.zeros(1, length, dtype=torch.bool, device=device)
    mask[0, positions] = True
    return mask
