"""Discover a model's self-attention sites with one small forward pass, and name its family."""
from __future__ import annotations

import weakref

import torch

import comfy.model_base as model_base
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from ..fasa.layers import Site
from ..fasa.masks import downsampled_grid

PROBE_LATENT_HW = (16, 24)  # non-square, so height and width levels cannot be confused


class UnsupportedModel(ValueError):
    """The MODEL is not an SD1.x/SD2.x/SDXL UNet."""


def _unet_families():
    sdxl = tuple(getattr(model_base, n) for n in ("SDXL", "SDXLRefiner") if hasattr(model_base, n))
    sd1 = tuple(getattr(model_base, n) for n in ("SD21UNCLIP", "SD15_instructpix2pix") if hasattr(model_base, n))
    return sdxl, sd1


def model_family(inner_model) -> str:
    """'sd1' (SD1.x/SD2.x UNets) or 'sdxl'; raises UnsupportedModel naming any other architecture."""
    sdxl, sd1 = _unet_families()
    name = type(inner_model).__name__
    cfg = type(getattr(inner_model, "model_config", None)).__name__
    if not isinstance(getattr(inner_model, "diffusion_model", None), UNetModel):
        hint = " FLUX models (PuLID-FLUX, InfiniteYou) are supported by a separate FreeCure FLUX path." if "Flux" in name else ""
        raise UnsupportedModel(f"FreeCure: this MODEL is a {name} ({cfg}) model; FASA here supports SD1.x, SD2.x "
                               f"and SDXL UNet models.{hint}")
    if isinstance(inner_model, sdxl):
        return "sdxl"
    if type(inner_model) is model_base.BaseModel or isinstance(inner_model, sd1):
        return "sd1"
    raise UnsupportedModel(f"FreeCure: the {name} ({cfg}) UNet is not supported; FASA supports SD1.x, SD2.x and SDXL.")


def _model_dtype(inner_model):
    return inner_model.manual_cast_dtype or inner_model.get_dtype()


# Memo of probe results per loaded UNet module: a pure function of the module's structure, dropped with it.
_PROBED: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[Site, ...]]" = weakref.WeakKeyDictionary()


def probe_sites(inner_model, device) -> list[Site]:
    """Every attn1 site of the UNet in call order, found by one forward on a small latent (memoised per UNet)."""
    unet = inner_model.diffusion_model
    if unet not in _PROBED:
        _PROBED[unet] = tuple(_probe(inner_model, device))
    return list(_PROBED[unet])


@torch.no_grad()
def _probe(inner_model, device) -> list[Site]:
    unet = inner_model.diffusion_model
    dtype = _model_dtype(inner_model)
    h, w = PROBE_LATENT_HW
    seen: list[tuple[tuple, int, tuple]] = []

    def record(n, context, value, extra_options):
        seen.append((tuple(extra_options["block"]), int(extra_options.get("block_index", 0)),
                     tuple(extra_options["activations_shape"][-2:])))
        return n, context, value

    cfg = inner_model.model_config.unet_config
    x = torch.zeros((1, unet.in_channels, h, w), device=device, dtype=dtype)
    t = torch.full((1,), 500.0, device=device, dtype=torch.float32)
    context = torch.zeros((1, 1, int(cfg.get("context_dim") or 1)), device=device, dtype=dtype)
    kwargs = {}
    if unet.num_classes is not None:
        kwargs["y"] = torch.zeros((1, int(cfg["adm_in_channels"])), device=device, dtype=dtype)
    opts = {"patches": {"attn1_patch": [record]}}
    unet(x, t, context=context, transformer_options=opts, **kwargs)
    sites = []
    for order, (block, index, hw) in enumerate(seen):
        level = next((lv for lv in range(8) if downsampled_grid((h, w), lv) == hw), None)
        if level is None:
            raise UnsupportedModel(f"FreeCure: attention layer {block} runs at {hw}, not a downsampled grid of the "
                                   f"probe latent {h}x{w}")
        sites.append(Site(block=block[0], block_id=int(block[1]), index=index, level=level, order=order))
    if not sites:
        raise UnsupportedModel("FreeCure: the probe found no self-attention layers in this model")
    return sites


def transformer_block(unet, site: Site):
    """The BasicTransformerBlock of a site (it holds the site's attn1 and attn2)."""
    if site.block == "input":
        container = unet.input_blocks[site.block_id]
    elif site.block == "output":
        container = unet.output_blocks[site.block_id]
    else:
        container = unet.middle_block
    for module in container.modules():
        blocks = getattr(module, "transformer_blocks", None)
        if blocks is not None:
            return blocks[site.index]
    raise LookupError(f"FreeCure: no transformer block found for {site.label()}")


def attn1_module(unet, site: Site):
    """The attn1 CrossAttention module of a site (to recompute keys/values from recorded inputs)."""
    return transformer_block(unet, site).attn1


def attn2_module(unet, site: Site):
    """The attn2 (cross-attention) module of a site, or None when the block has none."""
    return getattr(transformer_block(unet, site), "attn2", None)
