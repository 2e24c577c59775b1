"""Tiny random InstantID adapters in the exact key layout of InstantX's ip-adapter.bin, for CPU tests.

The keys are spelled out here, independently of freecure_core.identity.resampler, so the tests check the
loader against the file layout rather than against itself.  Deterministic in `seed`; the global torch RNG
state is left alone.

random_instantid_state(...) -> {"image_proj": {...}, "ip_adapter": {...}}
write_instantid_bin(path, state)            torch.save of the nested dict (the ip-adapter.bin form)
write_instantid_safetensors(path, state)    flat image_proj.* / ip_adapter.* keys (the converted form)
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

DIM_HEAD = 64


def random_instantid_state(dim: int = 64, depth: int = 2, heads: int = 2, num_queries: int = 4,
                           embedding_dim: int = 512, output_dim: int = 64, ff_mult: int = 2, layers: int = 70,
                           hidden: Sequence[int] | Callable[[int], int] | None = None, seed: int = 0) -> dict:
    """A nested InstantID state dict with small random weights; hidden[i] / hidden(i) is adapter layer i's width."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, std=0.05: torch.randn(*shape, generator=g) * std
    inner, ff = heads * DIM_HEAD, dim * ff_mult
    image_proj = {
        "latents": rand(1, num_queries, dim, std=dim ** -0.5),
        "proj_in.weight": rand(dim, embedding_dim), "proj_in.bias": rand(dim, std=0.02),
        "proj_out.weight": rand(output_dim, dim, std=0.1), "proj_out.bias": rand(output_dim, std=0.02),
        "norm_out.weight": torch.ones(output_dim), "norm_out.bias": torch.zeros(output_dim),
    }
    for i in range(depth):
        p = f"layers.{i}."
        image_proj.update({
            p + "0.norm1.weight": torch.ones(dim), p + "0.norm1.bias": torch.zeros(dim),
            p + "0.norm2.weight": torch.ones(dim), p + "0.norm2.bias": torch.zeros(dim),
            p + "0.to_q.weight": rand(inner, dim, std=0.1), p + "0.to_kv.weight": rand(2 * inner, dim, std=0.1),
            p + "0.to_out.weight": rand(dim, inner, std=0.1),
            p + "1.0.weight": torch.ones(dim), p + "1.0.bias": torch.zeros(dim),
            p + "1.1.weight": rand(ff, dim, std=0.1), p + "1.3.weight": rand(dim, ff, std=0.1),
        })
    if hidden is None:
        width = lambda i: 32
    elif callable(hidden):
        width = hidden
    else:
        width = lambda i: hidden[i]
    ip_adapter = {}
    for i in range(layers):
        n = 2 * i + 1
        ip_adapter[f"{n}.to_k_ip.weight"] = rand(width(i), output_dim)
        ip_adapter[f"{n}.to_v_ip.weight"] = rand(width(i), output_dim)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def flat_instantid_state(state: dict) -> dict:
    """The nested state with image_proj.* / ip_adapter.* keys, as .safetensors files store it."""
    return {f"{part}.{k}": v for part in ("image_proj", "ip_adapter") for k, v in state[part].items()}


def write_instantid_bin(path: str | os.PathLike, state: dict) -> None:
    """torch.save the nested {"image_proj", "ip_adapter"} dict, like InstantX's ip-adapter.bin."""
    torch.save({part: dict(state[part]) for part in ("image_proj", "ip_adapter")}, os.fspath(path))


def write_instantid_safetensors(path: str | os.PathLike, state: dict) -> None:
    """Save the state as .safetensors with flat image_proj.* / ip_adapter.* keys."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in flat_instantid_state(state).items()}, os.fspath(path),
              metadata={"format": "pt"})
