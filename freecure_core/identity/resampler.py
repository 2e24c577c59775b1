"""InstantID's image projection: a Perceiver-style "Resampler" from face embeddings to image tokens.

Learned latent queries (num_queries of width dim) attend, in `depth` layers, to the projected face
embedding concatenated with themselves; a feed-forward block follows each attention; the latents are
finally projected to the UNet's cross-attention width and layer-normed.  InstantX's ``ip-adapter.bin``
stores it under ``image_proj`` with the module names used here, so ``Resampler.state_dict()`` *is* the
file layout:

    latents (1, Q, dim); proj_in (dim, E); proj_out (C, dim); norm_out (C)
    layers.{i}.0.norm1 / norm2 (dim); layers.{i}.0.to_q (inner, dim); to_kv (2*inner, dim); to_out (dim, inner)
    layers.{i}.1.0 LayerNorm (dim); layers.{i}.1.1 (dim*ff_mult, dim); layers.{i}.1.3 (dim, dim*ff_mult)

with inner = heads * 64, linear layers inside the layers bias-free.  InstantID: Q=16, dim=1280, E=512,
C=2048, depth=4, heads=20, ff_mult=4.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn as nn

DIM_HEAD = 64  # fixed by the InstantID / IP-Adapter layout: heads = inner width / 64
INSTANTID_CONFIG = {"dim": 1280, "depth": 4, "dim_head": DIM_HEAD, "heads": 20, "num_queries": 16,
                    "embedding_dim": 512, "output_dim": 2048, "ff_mult": 4}
_TOP_KEYS = ("latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias",
             "norm_out.weight", "norm_out.bias")
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.")
_FIX = "Use InstantX's ip-adapter.bin (or CrossFaceID's pytorch_model.bin) unmodified."


class PerceiverAttention(nn.Module):
    """Latents attend to [norm1(x); norm2(latents)]; q and k both scaled by dim_head ** -0.25."""

    def __init__(self, dim: int, dim_head: int = DIM_HEAD, heads: int = 8):
        super().__init__()
        self.dim_head, self.heads = dim_head, heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, H, N, dh)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Attention output (B, Q, dim) for features x (B, N, dim) and latents (B, Q, dim)."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, q_len, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1))
        scale = 1.0 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * scale) @ (k * scale).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
        out = (weight @ v).transpose(1, 2).reshape(b, q_len, -1)
        return self.to_out(out)


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """LayerNorm → Linear(dim, dim*mult, no bias) → GELU → Linear(dim*mult, dim, no bias)."""
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


class Resampler(nn.Module):
    """Face embeddings (B, E) or (B, N, E) → image tokens (B, num_queries, output_dim)."""

    def __init__(self, dim: int = 1280, depth: int = 4, dim_head: int = DIM_HEAD, heads: int = 20,
                 num_queries: int = 16, embedding_dim: int = 512, output_dim: int = 2048, ff_mult: int = 4):
        super().__init__()
        self.config = {"dim": dim, "depth": depth, "dim_head": dim_head, "heads": heads, "num_queries": num_queries,
                       "embedding_dim": embedding_dim, "output_dim": output_dim, "ff_mult": ff_mult}
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), feed_forward(dim, ff_mult)])
            for _ in range(depth))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        if embeds.dim() == 2:
            embeds = embeds.unsqueeze(1)
        x = self.proj_in(embeds)
        latents = self.latents.expand(x.shape[0], -1, -1)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def _shape(state: dict, key: str) -> tuple[int, ...]:
    return tuple(state[key].shape)


def resampler_config(image_proj: dict) -> dict:
    """Resampler constructor arguments inferred from an image_proj state dict's shapes.

    Raises ValueError naming the missing or malformed keys when it is not an InstantID image_proj.
    """
    not_ours = ("FreeCure: this is not an InstantID image_proj (the Resampler of InstantX's ip-adapter.bin: "
                "latents, proj_in, proj_out, norm_out, layers.N.*). ")
    missing = [k for k in _TOP_KEYS + ("layers.0.0.to_q.weight", "layers.0.1.1.weight") if k not in image_proj]
    if missing:
        raise ValueError(not_ours + f"Missing key(s): {', '.join(missing)}. {_FIX}")
    try:
        _, num_queries, dim = _shape(image_proj, "latents")
        dim_in, embedding_dim = _shape(image_proj, "proj_in.weight")
        output_dim, dim_out = _shape(image_proj, "proj_out.weight")
        inner, dim_q = _shape(image_proj, "layers.0.0.to_q.weight")
        ff_inner, dim_ff = _shape(image_proj, "layers.0.1.1.weight")
    except ValueError:
        shapes = {k: _shape(image_proj, k) for k in ("latents", "proj_in.weight", "proj_out.weight",
                                                     "layers.0.0.to_q.weight", "layers.0.1.1.weight")}
        raise ValueError(not_ours + f"Malformed shapes: {shapes}. {_FIX}") from None
    problems = []
    if not dim == dim_in == dim_out == dim_q == dim_ff:
        problems.append(f"widths disagree (latents {dim}, proj_in {dim_in}, proj_out {dim_out}, to_q {dim_q}, "
                        f"feed-forward {dim_ff})")
    if inner % DIM_HEAD:
        problems.append(f"to_q width {inner} is not a multiple of the head width {DIM_HEAD}")
    if ff_inner % dim:
        problems.append(f"feed-forward width {ff_inner} is not a multiple of {dim}")
    if problems:
        raise ValueError(not_ours + "; ".join(problems) + f". {_FIX}")
    depth = 1 + max(int(m.group(1)) for m in map(_LAYER_KEY.match, image_proj) if m)
    return {"dim": dim, "depth": depth, "dim_head": DIM_HEAD, "heads": inner // DIM_HEAD,
            "num_queries": num_queries, "embedding_dim": embedding_dim, "output_dim": output_dim,
            "ff_mult": ff_inner // dim}


def expected_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """image_proj key → shape for a Resampler(**config) (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = Resampler(**config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_image_proj(image_proj: dict) -> dict:
    """The Resampler config of a complete, correctly shaped image_proj; ValueError listing what is wrong."""
    config = resampler_config(image_proj)
    layout = expected_layout(config)
    missing = [k for k in layout if k not in image_proj]
    unexpected = [k for k in image_proj if k not in layout]
    wrong = [f"{k} {_shape(image_proj, k)} (expected {layout[k]})" for k in layout
             if k in image_proj and _shape(image_proj, k) != layout[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            "FreeCure: this is not an InstantID image_proj: for a Resampler of width "
            f"{config['dim']}, depth {config['depth']}, {config['heads']} heads it has "
            f"{_listing('missing', missing)}{_listing('unexpected', unexpected)}{_listing('wrong shape', wrong)}"
            + _FIX)
    return config


def resampler_from_state_dict(image_proj: dict) -> Resampler:
    """A float32 CPU Resampler in eval mode holding the image_proj weights (validated first)."""
    config = check_image_proj(image_proj)
    with torch.device("meta"):
        model = Resampler(**config)
    state = {k: v.detach().to("cpu", torch.float32) for k, v in image_proj.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _listing(what: str, keys: list[str], show: int = 8) -> str:
    if not keys:
        return ""
    more = f", ... and {len(keys) - show} more" if len(keys) > show else ""
    return f"{len(keys)} {what} key(s): {', '.join(keys[:show])}{more}. "
