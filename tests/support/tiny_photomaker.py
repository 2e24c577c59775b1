"""Tiny, deterministic PhotoMaker and SDXL CLIP built from ComfyUI's own classes (CPU, fp32 compute).

build_tiny_sdxl_clip(seed=0) -> comfy.sd.CLIP    SDXL tokenizers + SDXLClipModel with 3-layer text towers at
                                                the real widths (768 + 1280), so conds are (1, 77, 2048)
build_tiny_sd1_clip(seed=0) -> comfy.sd.CLIP     SD1 tokenizer + 64-wide tiny CLIP-L (width-mismatch cases)
build_tiny_photomaker(seed=0) -> PhotoMakerIDEncoder  ComfyUI's class with a 1-layer vision tower; the real
                                                projections (1024 -> 768 and 1024 -> 1280) and FuseModule(2048)
reference_images(n, seed=0) -> IMAGE            (n, 96, 80, 3) random photos in [0, 1]
tiny_vision_config(base) -> dict                ComfyUI's PhotoMaker vision config `base` shrunk to the tiny tower
write_tiny_photomaker(path, seed=0)             that encoder as a PhotoMaker v1 file for PhotoMakerLoader
"""
from __future__ import annotations

import os
from unittest import mock

import torch

from .tiny_models import TINY_SDXL_TEXT_TOWER, _comfy, init_weights_, tiny_clip_model_class

# Text towers: 3 layers (SDXL reads the penultimate hidden state, and ComfyUI asserts |layer_idx| < layers),
# narrow MLPs; widths, heads and vocabulary stay real so the SDXL tokenizers and the 2048-wide concat are real.
# The same towers as tiny_models.TinySDXLClipModel (the CLIP of tiny_sdxl_2048.safetensors).
TINY_TEXT_TOWER = TINY_SDXL_TEXT_TOWER
# Vision tower: 1 layer, narrow MLP. hidden_size stays 1024 because PhotoMakerIDEncoder hard-codes
# visual_projection_2 = Linear(1024, 1280); image and patch size stay 224/14 for clip_preprocess.
TINY_VISION_TOWER = {"num_hidden_layers": 1, "intermediate_size": 256}


def _clip(target, seed: int, model_options: dict):
    comfy = _comfy()
    import comfy.sd
    clip = comfy.sd.CLIP(target=target, model_options={"dtype": torch.float32, **model_options})
    init_weights_(clip.cond_stage_model, seed=seed)
    return clip


def build_tiny_sdxl_clip(seed: int = 0):
    """comfy.sd.CLIP with SDXL's real tokenizers and SDXLClipModel, towers shrunk via ComfyUI's
    `<clip_name>_model_config` model option."""
    _comfy()
    import comfy.sdxl_clip
    import comfy.supported_models_base as smb
    target = smb.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    return _clip(target, seed, {"clip_l_model_config": dict(TINY_TEXT_TOWER),
                                "clip_g_model_config": dict(TINY_TEXT_TOWER)})


def build_tiny_sd1_clip(seed: int = 0):
    """comfy.sd.CLIP with the SD1 tokenizer and the 64-wide tiny CLIP-L of tiny_models."""
    _comfy()
    import comfy.sd1_clip
    import comfy.supported_models_base as smb
    return _clip(smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, tiny_clip_model_class()), seed, {})


def build_tiny_photomaker(seed: int = 0):
    """ComfyUI's PhotoMakerIDEncoder (what PhotoMakerLoader returns) with a 1-layer vision tower.

    The class reads its vision config from a module constant; it is swapped only while constructing.
    """
    _comfy()
    from comfy_extras import nodes_photomaker as pm
    config = tiny_vision_config(pm.VISION_CONFIG_DICT)
    with mock.patch.object(pm, "VISION_CONFIG_DICT", config):
        model = pm.PhotoMakerIDEncoder()
    init_weights_(model, seed=seed)
    return model.eval()


def tiny_vision_config(base: dict) -> dict:
    """A copy of ComfyUI's PhotoMaker VISION_CONFIG_DICT `base` with the tiny vision tower."""
    return dict(base, **TINY_VISION_TOWER)


def tiny_photomaker_state_dict(seed: int = 0) -> dict:
    """``{"id_encoder": {...}}``, fp16: the key layout of PhotoMaker v1's photomaker-v1.bin (its id encoder, which
    PhotoMakerLoader takes from the "id_encoder" entry) for the encoder of ``build_tiny_photomaker(seed)``. The
    released file also holds the SDXL UNet LoRA ("lora_weights"), which PhotoMakerLoader ignores; it is left out."""
    model = build_tiny_photomaker(seed)
    return {"id_encoder": {k: v.detach().half().contiguous().clone() for k, v in model.state_dict().items()}}


def write_tiny_photomaker(path, seed: int = 0) -> str:
    """Save ``tiny_photomaker_state_dict(seed)`` with torch.save (a .bin like the released file); loading it with
    ComfyUI's PhotoMakerLoader needs its VISION_CONFIG_DICT shrunk by ``tiny_vision_config`` (tests/e2e_pack)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(tiny_photomaker_state_dict(seed), tmp)
    os.replace(tmp, path)
    return path


def reference_images(n: int, seed: int = 0, height: int = 96, width: int = 80) -> torch.Tensor:
    """(n, H, W, 3) IMAGE batch in [0, 1] from a seeded generator."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand(n, height, width, 3, generator=g)
