"""A tiny random FLUX-shaped model for CPU tests: ComfyUI's own FLUX transformer (comfy.ldm.flux.model.Flux) with
2 double- and 2 single-stream blocks, hidden 128 with one 128-wide head (so a file of it is detected by ComfyUI as
FLUX: heads = hidden / 128, RoPE axes 16/56/56), 16 latent channels, 32-wide text context and pooled vector.
``guidance_embed=True`` is the guidance-distilled (FLUX.1-dev-like, cfg 1) variant, False the CFG one."""
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


def build_tiny_flux(seed: int = 0, guidance_embed: bool = True):
    """A ModelPatcher (fp32, CPU) around ComfyUI's Flux model with the tiny config and seeded weights."""
    comfy = _comfy()
    import comfy.supported_models
    cls = comfy.supported_models.Flux if guidance_embed else comfy.supported_models.FluxSchnell
    cfg = cls(dict(unet_config(guidance_embed), dtype=torch.float32))
    cfg.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = cfg.get_model({}, device=cpu)
    init_weights_(model.diffusion_model, seed=seed, gain=0.5)
    model.diffusion_model.float().eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


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
