"""The trainable InstantID parts around a frozen diffusers SDXL UNet.

- ``IPAttention``: a diffusers attention processor for every cross-attention (attn2) layer. The UNet's context is
  the text tokens followed by `num_tokens` face tokens; the text part goes through the layer's own to_k/to_v, the
  face part through the adapter's to_k_ip/to_v_ip, and the two attention results are added with `scale` (1.0 in
  training, as InstantID trains). Self-attention keeps diffusers' plain processor.
- ``install_adapters``: puts them in place, initialised from each layer's to_k/to_v (as InstantID's trainer does),
  and returns them as a ModuleList indexed like ``unet.attn_processors`` (attn1 entries empty), so the exported
  keys are ``ip_adapter.<odd index>.to_k_ip.weight`` — the InstantX ip-adapter.bin layout.
- ``InstantIDTrainable``: Resampler + adapters + optional ControlNet (the IdentityNet) in one module for the
  optimizer and accelerate.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..identity.resampler import INSTANTID_CONFIG, Resampler


class IPAttention(nn.Module):
    """Decoupled cross-attention (see the module docstring); holds to_k_ip / to_v_ip (no bias)."""

    def __init__(self, hidden_size: int, cross_attention_dim: int, num_tokens: int = 16, scale: float = 1.0):
        super().__init__()
        self.to_k_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim, hidden_size, bias=False)
        self.num_tokens = num_tokens
        self.scale = scale

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args,
                 **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        four_d = hidden_states.ndim == 4
        if four_d:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] <= self.num_tokens:
            raise ValueError(f"FreeCure: the UNet context must be text tokens followed by {self.num_tokens} face "
                             "tokens")
        text, face = encoder_hidden_states[:, :-self.num_tokens], encoder_hidden_states[:, -self.num_tokens:]
        if attn.norm_cross:
            text = attn.norm_encoder_hidden_states(text)
        batch = hidden_states.shape[0]
        heads = attn.heads
        q = attn.to_q(hidden_states)
        split = lambda t: t.view(batch, -1, heads, t.shape[-1] // heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(attn.to_k(text)), split(attn.to_v(text)))
        ip = F.scaled_dot_product_attention(split(q), split(self.to_k_ip(face)), split(self.to_v_ip(face)))
        hidden_states = (out + self.scale * ip).transpose(1, 2).reshape(batch, -1, heads * q.shape[-1] // heads)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if four_d:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install_adapters(unet, num_tokens: int = 16, scale: float = 1.0) -> nn.ModuleList:
    """Set IPAttention on every attn2 of a diffusers UNet (initialised from its to_k/to_v) and return the list of
    all processors' trainable modules in ``unet.attn_processors`` order (nn.Identity for attn1)."""
    from diffusers.models.attention_processor import AttnProcessor2_0
    modules = dict(unet.named_modules())
    procs, adapters = {}, []
    for name in unet.attn_processors:
        attn = modules[name.rsplit(".processor", 1)[0]]
        if name.endswith("attn2.processor"):
            p = IPAttention(attn.to_q.out_features, attn.to_k.in_features, num_tokens, scale)
            with torch.no_grad():
                p.to_k_ip.weight.copy_(attn.to_k.weight)
                p.to_v_ip.weight.copy_(attn.to_v.weight)
            procs[name] = p
            adapters.append(p)
        else:
            procs[name] = AttnProcessor2_0()
            adapters.append(nn.Identity())
    unet.set_attn_processor(procs)
    return nn.ModuleList(adapters)


def new_resampler(cross_attention_dim: int, num_tokens: int = 16, **overrides) -> Resampler:
    """A Resampler with InstantID's configuration, projecting to the UNet's cross-attention width."""
    cfg = {**INSTANTID_CONFIG, "output_dim": cross_attention_dim, "num_queries": num_tokens, **overrides}
    return Resampler(**cfg)


class InstantIDTrainable(nn.Module):
    """The parts InstantID trains: image projection (Resampler), the IP attention adapters and, unless
    adapter_only, the IdentityNet ControlNet."""

    def __init__(self, resampler: Resampler, adapters: nn.ModuleList, controlnet=None):
        super().__init__()
        self.image_proj = resampler
        self.ip_adapter = adapters
        self.controlnet = controlnet

    def face_tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, 512) ArcFace embeddings -> (B, num_tokens, cross_attention_dim)."""
        return self.image_proj(embeds)
