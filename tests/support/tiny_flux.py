"""A tiny random FLUX-shaped model for CPU tests: ComfyUI's own FLUX transformer (comfy.ldm.flux.model.Flux) with
2 double- and 2 single-stream blocks, hidden 128 with one 128-wide head (so a file of it is detected by ComfyUI as
FLUX: heads = hidden / 128, RoPE axes 16/56/56), 16 latent channels, 32-wide text context and pooled vector.
``guidance_embed=True`` is the guidance-distilled (FLUX.1-dev-like, cfg 1) variant, False the CFG one.
``build_tiny_flux2`` is the FLUX.2-shaped one (patch size 1, 128 latent channels, 4 RoPE axes, global modulation; its
text is padded to 512 tokens by ComfyUI). ``sharpen_attention`` raises the QK-norm scales so RoPE's positional
similarity dominates the logits: attention becomes local, as in trained FLUX, and FASA's effect large."""
from __future__ import annotations

import torch

from .tiny_models import _comfy, init_weights_

CONTEXT_DIM, VEC_DIM, TEXT_TOKENS = 32, 32, 8


# FluxParams fields that newer ComfyUIs require, with the value their model detection gives a FLUX.1 file
# (0.33 added txt_ids_dims: [] for FLUX.1, [3] for FLUX.2)
_NEWER_FIELDS = {"txt_ids_dims": []}


def unet_config(guidance_embed: bool = True) -> dict:
    """The tiny model's ComfyUI unet config, with the fields the installed ComfyUI's FluxParams requires."""
    config = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": VEC_DIM,
              "context_in_dim": CONTEXT_DIM, "hidden_size": 128, "mlp_ratio": 4.0, "num_heads": 1, "depth": 2,
              "depth_single_blocks": 2, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True,
              "guidance_embed": guidance_embed}
    _comfy()
    import dataclasses
    import comfy.ldm.flux.model
    fields = {f.name for f in dataclasses.fields(comfy.ldm.flux.model.FluxParams)}
    config.update({k: v for k, v in _NEWER_FIELDS.items() if k in fields})
    return config


def flux2_unet_config() -> dict:
    """The FLUX.2-shaped tiny config (ComfyUI's FLUX.2 detection with tiny sizes), for the installed FluxParams."""
    config = dict(unet_config(True), image_model="flux2", in_channels=128, out_channels=128, vec_in_dim=None,
                  mlp_ratio=3.0, axes_dim=[32, 32, 32, 32], theta=2000, patch_size=1, qkv_bias=False,
                  global_modulation=True, mlp_silu_act=True, ops_bias=False, default_ref_method="index",
                  ref_index_scale=10.0)
    if "txt_ids_dims" in config:
        config["txt_ids_dims"] = [3]
    return config


def _build(cls, config: dict, seed: int, dtype):
    comfy = _comfy()
    cfg = cls(dict(config, dtype=dtype))
    cfg.set_inference_dtype(dtype, None)
    cpu = torch.device("cpu")
    model = cfg.get_model({}, device=cpu)
    init_weights_(model.diffusion_model, seed=seed, gain=0.5)
    model.diffusion_model.to(dtype).eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def build_tiny_flux(seed: int = 0, guidance_embed: bool = True, dtype=torch.float32):
    """A ModelPatcher (CPU, fp32 unless dtype says otherwise) around ComfyUI's Flux model with the tiny config and
    seeded weights."""
    _comfy()
    import comfy.supported_models
    cls = comfy.supported_models.Flux if guidance_embed else comfy.supported_models.FluxSchnell
    return _build(cls, unet_config(guidance_embed), seed, dtype)


def build_tiny_flux2(seed: int = 0):
    """A ModelPatcher (fp32, CPU) around ComfyUI's Flux model in its FLUX.2 shape (patch 1, 128 latent channels)."""
    _comfy()
    import comfy.supported_models
    return _build(comfy.supported_models.Flux2, flux2_unet_config(), seed, torch.float32)


def sharpen_attention(model_patcher, scale: float = 6.0):
    """Set every QK-norm scale of the FLUX model to `scale` (in place; returns the patcher)."""
    with torch.no_grad():
        for name, p in model_patcher.model.diffusion_model.named_parameters():
            if name.endswith(("query_norm.scale", "key_norm.scale")):
                p.fill_(scale)
    return model_patcher


def flux_conditioning(seed: int, batch: int = 1, guidance: float | None = 3.5):
    """[[context (B, 8, 32), {"pooled_output": (B, 32), "guidance": g}]] from a seeded generator."""
    g = torch.Generator().manual_seed(int(seed))
    ctx = torch.randn(batch, TEXT_TOKENS, CONTEXT_DIM, generator=g)
    extra = {"pooled_output": torch.randn(batch, VEC_DIM, generator=g)}
    if guidance is not None:
        extra["guidance"] = guidance
    return [[ctx, extra]]


def diffusion_model_state_dict(seed: int = 0, guidance_embed: bool = True) -> dict:
    """The tiny model's weights in the FLUX diffusion-model file layout (what UNETLoader reads from
    models/diffusion_models), fp16 like released FLUX files."""
    patcher = build_tiny_flux(seed, guidance_embed)
    return {k: v.half().contiguous() for k, v in patcher.model.diffusion_model.state_dict().items()}
