"""The image tokens of an InstantID PD/FD pair, and their per-layer keys/values.

InstantID turns a face embedding (ArcFace, 512-d) into image tokens with its Resampler. FreeCure's
foundation branch (FD) for InstantID is the *zero* face embedding through the same Resampler
(Resampler(0): not zero tokens), used for both the UNet's image-token attention and the IdentityNet
context, with the same keypoint image (method.md §1.3). The negative (uncond) rows use Resampler(0) too,
or Resampler(noise) when the user asks for the peer packs' anti-burn noise.

The adapter's to_k_ip / to_v_ip only ever see these few tokens, so their keys/values are computed once
per layer here and the big adapter matrices never enter the sampling loop.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

COMBINE_METHODS = ("average", "norm average", "concat")


@dataclass(frozen=True)
class IdentityTokens:
    """Resampler tokens (1, T, C) for the PD cond rows (face), the uncond rows, and the FD cond rows (zero face)."""
    face: torch.Tensor
    uncond: torch.Tensor
    zero: torch.Tensor


def combine_embeddings(embeddings: torch.Tensor, method: str = "average") -> torch.Tensor:
    """One identity from n face embeddings (n, D): (1, D) for the averages, (1, n, D) for concat.

    "norm average" averages the unit-length embeddings and restores the mean length, so one photo with an
    unusually strong embedding does not dominate; "concat" keeps every photo as its own Resampler input token.
    """
    if embeddings.ndim != 2 or embeddings.shape[0] < 1:
        raise ValueError(f"FreeCure: expected face embeddings (n, D), got {tuple(embeddings.shape)}")
    embeddings = embeddings.float()
    if method == "average":
        return embeddings.mean(0, keepdim=True)
    if method == "norm average":
        norms = embeddings.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (embeddings / norms).mean(0, keepdim=True) * norms.mean()
    if method == "concat":
        return embeddings.unsqueeze(0)
    raise ValueError(f"FreeCure: combine_embeds must be one of {list(COMBINE_METHODS)}, got {method!r}")


def uncond_embedding(embedding: torch.Tensor, noise: float) -> torch.Tensor:
    """The negative rows' face embedding: zeros, or noise * uniform(0, 1) from a generator seeded by the embedding.

    The seed comes from the embedding itself, so the same photo gives the same noise in every run without
    touching torch's global random state.
    """
    if noise <= 0:
        return torch.zeros_like(embedding)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(embedding.double().abs().sum().item() * 1e4) % (2 ** 31 - 1))
    return noise * torch.rand(embedding.shape, generator=gen, dtype=embedding.dtype)


def identity_tokens(weights, embedding: torch.Tensor, noise: float = 0.0) -> IdentityTokens:
    """Face, uncond and zero-face tokens from a combined embedding ((1, D) or (1, n, D)) via `weights.face_tokens`."""
    zero = torch.zeros_like(embedding)
    uncond = uncond_embedding(embedding, noise)
    zero_tokens = weights.face_tokens(zero)
    uncond_tokens = zero_tokens if noise <= 0 else weights.face_tokens(uncond)
    return IdentityTokens(face=weights.face_tokens(embedding), uncond=uncond_tokens, zero=zero_tokens)


@torch.no_grad()
def layer_kv(to_k: torch.Tensor, to_v: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values (1, T, hidden) of one adapter layer for the given tokens (fp32)."""
    tokens = tokens.float()
    return tokens @ to_k.float().t(), tokens @ to_v.float().t()
