"""Reading weight files that may come from strangers, with errors that say what is wrong with the file.

torch pickles (.pth/.pt/.bin/.ckpt) are only read with torch.load(weights_only=True): a pickle that would build
Python objects (and so could run code) is refused before anything in it runs. Broken files (a download cut short,
random bytes, a .safetensors header promising more data than the file holds) raise ValueError naming the file
instead of a library traceback. No ComfyUI imports.
"""
from __future__ import annotations

import os
import re

import torch

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TRUNCATED = re.compile(r"central directory|failed reading zip archive|failed finding|unexpected end|"
                        r"ran out of input|truncated|invalid load key|file not fully covered", re.IGNORECASE)


def refusal_reason(exc: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (its own message suggests
    weights_only=False, which would run the file's code: never repeated)."""
    text = _ANSI.sub("", str(exc))
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if found:
        return (f"it holds a pickled {found.group(1)} object, not only tensors: unpickling it could run code, "
                "so nothing in it was run")
    if isinstance(exc, EOFError) or _TRUNCATED.search(text):
        return "it is truncated or corrupt (not a complete torch file)"
    if "Weights only load failed" in text or not text.strip():
        return "it is damaged or not a torch weights file"
    # garbage makes the unpickler fail anywhere (IndexError, UnicodeDecodeError, KeyError ...)
    return f"it is damaged or not a torch weights file: {type(exc).__name__}: {text.strip().splitlines()[0][:200]}"


def torch_load_weights(path: str | os.PathLike):
    """torch.load(path, map_location='cpu', weights_only=True); any failure re-raised by the caller with
    refusal_reason(exc). Kept as the one place FreeCure unpickles anything."""
    return torch.load(os.fspath(path), map_location="cpu", weights_only=True)


def safetensors_reason(exc: BaseException) -> str:
    """Why safetensors could not read a file, in words a user can act on."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"the file is truncated or corrupt: {text}"


def load_safetensors(path: str | os.PathLike, what: str = "model", fix: str = "download it again") -> dict:
    """All tensors of a .safetensors file on the CPU; ValueError naming the file when it is damaged."""
    from safetensors.torch import load_file
    path = os.fspath(path)
    try:
        return load_file(path, device="cpu")
    except Exception as exc:  # SafetensorError (truncated, bad header), OSError
        end = "" if fix.endswith(".") else "."
        raise ValueError(f"FreeCure: {path} is not a readable .safetensors {what} file ({safetensors_reason(exc)}); "
                         f"{fix}{end}") from exc
