"""Writing trained InstantID weights in the layouts the InstantID loaders read.

- the adapter: one .safetensors with flat ``image_proj.<Resampler key>`` and ``ip_adapter.<index>.to_k_ip.weight`` /
  ``.to_v_ip.weight`` keys (index = position in the UNet's attention processors, odd = attn2), which FreeCure's
  InstantID Loader reads and ``python -m freecure_core.convert`` documents; optionally also ``ip-adapter.bin``
  (the nested ``{"image_proj": ..., "ip_adapter": ...}`` dict of InstantX's file, which cubiq's ComfyUI_InstantID
  loads), saved with plain tensors only;
- the IdentityNet: a diffusers ControlNet folder (``config.json`` + ``diffusion_pytorch_model.safetensors``).
"""
from __future__ import annotations

import pathlib

import torch


def adapter_state(trainable) -> dict[str, dict[str, torch.Tensor]]:
    """{"image_proj": Resampler state, "ip_adapter": {"<i>.to_k_ip.weight": ..., ...}} on CPU, contiguous."""
    proj = {k: v.detach().cpu().contiguous() for k, v in trainable.image_proj.state_dict().items()}
    ip = {k: v.detach().cpu().contiguous() for k, v in trainable.ip_adapter.state_dict().items()}
    return {"image_proj": proj, "ip_adapter": ip}


def save_adapter(trainable, path, dtype=torch.float16, also_bin: bool = False) -> list[str]:
    """Write the adapter as flat .safetensors (and ip-adapter.bin next to it when also_bin); returns the paths."""
    from safetensors.torch import save_file
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = adapter_state(trainable)
    flat = {f"{part}.{k}": v.to(dtype) for part, d in state.items() for k, v in d.items()}
    save_file(flat, str(path))
    written = [str(path)]
    if also_bin:
        nested = {part: {k: v.to(dtype) for k, v in d.items()} for part, d in state.items()}
        torch.save(nested, path.with_name("ip-adapter.bin"))
        written.append(str(path.with_name("ip-adapter.bin")))
    return written


def save_controlnet(controlnet, folder) -> str:
    """save_pretrained of the diffusers ControlNet (safetensors)."""
    controlnet.save_pretrained(str(folder), safe_serialization=True)
    return str(folder)
