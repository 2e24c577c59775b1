"""Tiny, randomly initialised SD1.5- and SDXL-shaped ComfyUI models for CPU tests.

Everything ComfyUI-related is imported lazily (via ``comfy_env.import_comfy``)
so importing this module is cheap.  All builders are deterministic in ``seed``
and leave the global torch RNG state untouched.

Public API
----------
init_weights_(module, seed=0, gain=None)   deterministic init, returns module
build_tiny_sd15(seed=0) -> ModelPatcher     SD1.5 layout, 7 attn1 sites
build_tiny_sdxl(seed=0) -> ModelPatcher     SDXL depth layout (70 transformer blocks)
sharpen_cross_attention_(patcher, key_gain, out_gain)  make the text matter more (attn2 weights, in place)
sd15_conditioning(seed, batch=1)            CONDITIONING list for the tiny SD1.5
sdxl_conditioning(seed, width, height, batch=1)  CONDITIONING list for the tiny SDXL
tiny_sd15_checkpoint_state_dict(seed=0)     {key: tensor} for CheckpointLoaderSimple
write_tiny_sd15_checkpoint(path, seed=0)    save that as safetensors
register_tiny_sd15()                        put TinySD15 first in supported_models.models
register_tiny_sdxl_2048()                   put TinySDXL2048 first (SDXL's real 2048-wide text encoders, 3 layers)
build_tiny_sdxl_2048(seed=0) -> ModelPatcher  the tiny SDXL UNet layout with context 2048 and ADM 2816
write_tiny_sdxl_2048_checkpoint(path, seed=0) its single-file SDXL checkpoint (fp16) for CheckpointLoaderSimple
"""
from __future__ import annotations

import functools
import json
import os
import sys

import torch

CONTEXT_DIM = 64          # text-token width of both tiny models
POOLED_DIM = 64           # pooled text embedding width (SDXL "pooled_output")
SDXL_ADM_EXTRA = 6 * 256  # SDXL encode_adm appends 6 Timestep(256) size/crop embeddings
SDXL_ADM_IN = POOLED_DIM + SDXL_ADM_EXTRA  # 1600 (real SDXL: 1280 + 1536 = 2816)
TOKENS = 77

# Full UNetModel kwargs (same key set ComfyUI's model detection produces).
TINY_SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "model_channels": 32, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
    "transformer_depth": [1, 1], "transformer_depth_output": [1, 1, 1, 1],
    "transformer_depth_middle": 1, "use_spatial_transformer": True, "legacy": False,
    "context_dim": CONTEXT_DIM, "use_linear_in_transformer": False, "adm_in_channels": None,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

TINY_SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
    "model_channels": 32, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "transformer_depth_middle": 10, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": SDXL_ADM_IN,
    "context_dim": CONTEXT_DIM, "use_linear_in_transformer": True,
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

# Keys a supported-model class compares in ``matches()``.
_MATCH_KEYS = ("context_dim", "model_channels", "use_linear_in_transformer",
               "adm_in_channels", "use_temporal_attention")


def _comfy():
    """Import ComfyUI lazily.  Inside a running ComfyUI server it is already imported."""
    if "comfy.model_management" not in sys.modules:
        try:
            from .comfy_env import import_comfy
        except ImportError:  # loaded outside its package
            from comfy_env import import_comfy  # type: ignore
        import_comfy()
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.supported_models_base
    import comfy.sd1_clip
    return sys.modules["comfy"]


# ----------------------------------------------------------------------------- init

def init_weights_(module: torch.nn.Module, seed: int = 0, gain: float | None = None) -> torch.nn.Module:
    """Deterministically (re)initialise every parameter of ``module`` in place.

    ComfyUI's ``comfy.ops.disable_weight_init`` layers override ``reset_parameters``
    with a no-op, so freshly built ComfyUI models hold uninitialised memory.  Here
    each submodule gets the ``reset_parameters`` of its first ``torch.nn`` base
    class (kaiming-uniform Linear/Conv, ones/zeros norms, N(0,1) Embedding);
    parameters no such module owns get N(0, 0.02).  Then weight matrices of
    Linear/Conv layers are multiplied by ``gain`` (if given) to keep deep stacks
    tame.  Runs under its own RNG seed; the global RNG state is restored.
    """
    done = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.no_grad():
            for m in module.modules():
                for cls in type(m).__mro__:
                    if cls.__module__.startswith("torch.nn.modules") and "reset_parameters" in cls.__dict__:
                        cls.reset_parameters(m)
                        done.update(id(p) for p in m.parameters(recurse=False))
                        break
            for p in module.parameters():
                if id(p) not in done:
                    p.normal_(0.0, 0.02)
            if gain is not None:
                for m in module.modules():
                    if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
                        m.weight.mul_(gain)
    return module


# ----------------------------------------------------------------------------- model configs

@functools.lru_cache(maxsize=None)
def _classes():
    """Create the supported-model and tiny-CLIP classes once (needs comfy)."""
    comfy = _comfy()
    sm = comfy.supported_models
    smb = comfy.supported_models_base
    sd1_clip = comfy.sd1_clip

    base_clip_cfg_path = os.path.join(os.path.dirname(sd1_clip.__file__), "sd1_clip_config.json")
    with open(base_clip_cfg_path) as f:
        clip_cfg = json.load(f)
    clip_cfg.update(hidden_size=CONTEXT_DIM, intermediate_size=2 * CONTEXT_DIM,
                    num_attention_heads=2, num_hidden_layers=2, projection_dim=CONTEXT_DIM)

    class TinyClipL(sd1_clip.SDClipModel):
        """CLIP-L layout at width 64, 2 layers; real 49408-token vocabulary."""
        def __init__(self, device="cpu", dtype=None, model_options={}):
            super().__init__(device=device, dtype=dtype, model_options=model_options,
                             return_projected_pooled=False, textmodel_json_config=dict(clip_cfg))

    class TinyClipModel(sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options,
                             clip_model=TinyClipL, **kwargs)

    class TinySD15(sm.SD15):
        unet_config = {k: TINY_SD15_UNET[k] for k in _MATCH_KEYS}
        unet_extra_config = {"num_heads": 2, "num_head_channels": -1}
        supported_inference_dtypes = [torch.float32]

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(sd1_clip.SD1Tokenizer, TinyClipModel)

    class TinySDXL(sm.SDXL):
        unet_config = {k: TINY_SDXL_UNET[k] for k in _MATCH_KEYS}
        # channels 32/64/128 -> 1/2/4 heads of 32 (level 0 has no transformers)
        unet_extra_config = {"num_heads": -1, "num_head_channels": 32}
        supported_inference_dtypes = [torch.float32]

        def clip_target(self, state_dict={}):
            # one tiny CLIP-L stands in for SDXL's two text encoders: context 64, pooled 64
            return smb.ClipTarget(sd1_clip.SD1Tokenizer, TinyClipModel)

        def process_clip_state_dict(self, state_dict):
            return comfy.utils.state_dict_prefix_replace(
                state_dict, {"conditioner.embedders.0.transformer.": "clip_l.transformer."}, filter_keys=True)

    TinyClipL.__qualname__ = TinyClipL.__name__
    TinySD15.__qualname__ = TinySD15.__name__
    TinySDXL.__qualname__ = TinySDXL.__name__
    return {"TinySD15": TinySD15, "TinySDXL": TinySDXL,
            "TinyClipL": TinyClipL, "TinyClipModel": TinyClipModel}


def tiny_sd15_config_class():
    return _classes()["TinySD15"]


def tiny_sdxl_config_class():
    return _classes()["TinySDXL"]


def tiny_clip_model_class():
    return _classes()["TinyClipModel"]


def _register(cls) -> None:
    models = _comfy().supported_models.models
    if not any(getattr(m, "__name__", "") == cls.__name__ for m in models):
        models.insert(0, cls)


def register_tiny_sdxl() -> None:
    """Insert TinySDXL at the front of ``comfy.supported_models.models`` (idempotent; only tiny layouts match)."""
    _register(tiny_sdxl_config_class())


def register_tiny_sd15() -> None:
    """Insert TinySD15 at the front of ``comfy.supported_models.models`` (idempotent).

    Only the tiny UNet layout (model_channels 32, context_dim 64) matches it, so
    real checkpoints are unaffected.  For the test-only e2e pack / in-process tests.
    """
    _register(tiny_sd15_config_class())


# ----------------------------------------------------------------------------- builders

def _build(config_cls, unet_cfg: dict, seed: int, gain: float | None):
    comfy = _comfy()
    cfg = config_cls(dict(unet_cfg, dtype=torch.float32))
    cfg.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = cfg.get_model({}, device=cpu)
    init_weights_(model.diffusion_model, seed=seed, gain=gain)
    model.diffusion_model.float().eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def build_tiny_sd15(seed: int = 0):
    """SD1.5-shaped tiny UNet (~1.1 M params) wrapped in a ModelPatcher (fp32, CPU).

    attn1 sites: ('input',1) ('input',3) ('middle',0) ('output',0..3).
    Conditioning: (B, 77, 64) context; see ``sd15_conditioning``.
    """
    return _build(tiny_sd15_config_class(), TINY_SD15_UNET, seed, gain=None)


def build_tiny_sdxl(seed: int = 0):
    """SDXL-shaped tiny UNet: real SDXL transformer depth layout, tiny channels.

    70 transformer blocks: input 4,5 (2 each) 7,8 (10 each); middle 10;
    output 0,1,2 (10 each) 3,4,5 (2 each).  Context (B, 77, 64); ``y`` is
    pooled(64) + 6*256 = 1600 wide.  Conditioning: ``sdxl_conditioning``.
    """
    return _build(tiny_sdxl_config_class(), TINY_SDXL_UNET, seed, gain=0.5)


def sharpen_cross_attention_(patcher, key_gain: float = 4.0, out_gain: float = 2.0):
    """Scale every cross-attention (attn2) key projection by ``key_gain`` (peakier attention over the text tokens)
    and its output projection by ``out_gain`` (a larger text contribution), in place; returns ``patcher``.

    The random tiny UNets attend almost evenly over 77 random tokens, so changing a few tokens barely moves a sample
    (tests/bridge/test_apg.py measures it); tests of what text does use a model sharpened this way.
    """
    with torch.no_grad():
        for name, module in patcher.model.diffusion_model.named_modules():
            if name.endswith("attn2"):
                module.to_k.weight.mul_(key_gain)
                module.to_out[0].weight.mul_(out_gain)
    return patcher


# ----------------------------------------------------------------------------- conditioning

def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def sd15_conditioning(seed: int, batch: int = 1):
    """``[[context (B,77,64), {"pooled_output": (B,64)}]]`` from a seeded generator."""
    g = _gen(seed)
    ctx = torch.randn(batch, TOKENS, CONTEXT_DIM, generator=g)
    pooled = torch.randn(batch, POOLED_DIM, generator=g)
    return [[ctx, {"pooled_output": pooled}]]


def sdxl_conditioning(seed: int, width: int, height: int, batch: int = 1):
    """SDXL-style CONDITIONING: context, pooled_output and the size/crop fields.

    ``width``/``height`` are in pixels (latent size * 8), as CLIPTextEncodeSDXL would set them.
    """
    g = _gen(seed)
    ctx = torch.randn(batch, TOKENS, CONTEXT_DIM, generator=g)
    pooled = torch.randn(batch, POOLED_DIM, generator=g)
    extra = {"pooled_output": pooled, "width": int(width), "height": int(height),
             "crop_w": 0, "crop_h": 0, "target_width": int(width), "target_height": int(height)}
    return [[ctx, extra]]


# ----------------------------------------------------------------------------- checkpoint

def tiny_sd15_checkpoint_state_dict(seed: int = 0) -> dict:
    """State dict in single-file SD1.5 layout for the stock CheckpointLoaderSimple.

    ``model.diffusion_model.*`` (tiny UNet, fp32), ``cond_stage_model.transformer.*``
    (tiny CLIP, fp16), ``first_stage_model.taesd_*`` (random TAESD, fp16).
    """
    comfy = _comfy()
    import comfy.taesd.taesd

    patcher = build_tiny_sd15(seed)
    sd = {}
    for k, v in patcher.model.diffusion_model.state_dict().items():
        sd["model.diffusion_model." + k] = v.float()

    clip = tiny_clip_model_class()(device="cpu", dtype=torch.float32)
    init_weights_(clip, seed=seed + 1)
    for k, v in clip.state_dict().items():
        if k.endswith("logit_scale") or k.endswith("position_ids"):
            continue
        assert k.startswith("clip_l."), k
        sd["cond_stage_model." + k[len("clip_l."):]] = v.half()

    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights_(vae, seed=seed + 2)
    for k, v in vae.state_dict().items():
        sd["first_stage_model." + k] = v.half()

    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def _save(path, sd: dict, what: str) -> str:
    import safetensors.torch

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    safetensors.torch.save_file(sd, tmp, metadata={"format": "pt", "freecure_test": what})
    os.replace(tmp, path)
    return path


def write_tiny_sd15_checkpoint(path, seed: int = 0) -> str:
    return _save(path, tiny_sd15_checkpoint_state_dict(seed), "tiny_sd15")


def tiny_sdxl_checkpoint_state_dict(seed: int = 0) -> dict:
    """Single-file SDXL layout: tiny UNet, tiny CLIP as ``conditioner.embedders.0``, random TAESD.

    Loading it needs TinySDXL registered (its CLIP target is the tiny CLIP-L).
    """
    comfy = _comfy()
    import comfy.taesd.taesd

    patcher = build_tiny_sdxl(seed)
    sd = {"model.diffusion_model." + k: v.float() for k, v in patcher.model.diffusion_model.state_dict().items()}
    clip = tiny_clip_model_class()(device="cpu", dtype=torch.float32)
    init_weights_(clip, seed=seed + 1)
    for k, v in clip.state_dict().items():
        if k.endswith("logit_scale") or k.endswith("position_ids"):
            continue
        sd["conditioner.embedders.0." + k[len("clip_l."):]] = v.half()
    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights_(vae, seed=seed + 2)
    for k, v in vae.state_dict().items():
        sd["first_stage_model." + k] = v.half()
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def write_tiny_sdxl_checkpoint(path, seed: int = 0) -> str:
    return _save(path, tiny_sdxl_checkpoint_state_dict(seed), "tiny_sdxl")


def tiny_sdxl_controlnet_state_dict(seed: int = 0) -> dict:
    """A ControlNet for the tiny SDXL in ComfyUI's original layout (zero_convs, input_hint_block), 3-channel hint.

    Random (not zero) output convolutions, so the control visibly changes the UNet's output.
    """
    comfy = _comfy()
    import comfy.cldm.cldm
    import comfy.ops

    cfg = dict(TINY_SDXL_UNET)
    cfg.pop("out_channels")
    cfg.update(hint_channels=3, num_heads=-1, num_head_channels=32, operations=comfy.ops.disable_weight_init,
               dtype=torch.float32, device="cpu")
    net = comfy.cldm.cldm.ControlNet(**cfg)
    init_weights_(net, seed=seed, gain=0.5)
    return {k: v.detach().float().contiguous().clone() for k, v in net.state_dict().items()}


def write_tiny_sdxl_controlnet(path, seed: int = 0) -> str:
    return _save(path, tiny_sdxl_controlnet_state_dict(seed), "tiny_sdxl_controlnet")


# ----------------------------------------------------------------------------- SDXL with SDXL's real text encoders
# A second tiny SDXL for what needs SDXL's real 2048-wide text embeddings (PhotoMaker v1 fuses CLIP-L 768 + CLIP-G
# 1280): the tiny SDXL UNet layout with SDXL's context and ADM widths, and SDXL's real tokenizers and SDXLClipModel
# with each text tower shrunk to 3 layers and a narrow MLP (ComfyUI's `<clip_name>_model_config` model option).
# Widths, heads and the 49408-token vocabularies stay real; the vocabularies are most of the CLIP's ~130 M params.
SDXL_TEXT_DIM = 768 + 1280          # SDXL context: CLIP-L penultimate + CLIP-G penultimate
SDXL_POOLED_DIM = 1280              # CLIP-G projected pooled output
# 3 layers: SDXL reads the penultimate hidden state, and ComfyUI asserts |layer_idx| < layers.
TINY_SDXL_TEXT_TOWER = {"num_hidden_layers": 3, "intermediate_size": 128}
TINY_SDXL_2048_UNET = dict(TINY_SDXL_UNET, context_dim=SDXL_TEXT_DIM, adm_in_channels=SDXL_POOLED_DIM + SDXL_ADM_EXTRA)


@functools.lru_cache(maxsize=None)
def _sdxl_2048_classes():
    comfy = _comfy()
    import comfy.sdxl_clip
    sm = comfy.supported_models
    smb = comfy.supported_models_base

    class TinySDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
        """ComfyUI's SDXLClipModel (CLIP-L + CLIP-G) with both towers shrunk to TINY_SDXL_TEXT_TOWER."""
        def __init__(self, device="cpu", dtype=None, model_options={}):
            model_options = {**model_options, "clip_l_model_config": dict(TINY_SDXL_TEXT_TOWER),
                             "clip_g_model_config": dict(TINY_SDXL_TEXT_TOWER)}
            super().__init__(device=device, dtype=dtype, model_options=model_options)

    class TinySDXL2048(sm.SDXL):
        """Matched only by the tiny UNet layout (model_channels 32) with SDXL's context 2048 and ADM 2816; the
        checkpoint's CLIP is in SDXL's single-file layout and SDXL.process_clip_state_dict converts it."""
        unet_config = {k: TINY_SDXL_2048_UNET[k] for k in _MATCH_KEYS}
        unet_extra_config = {"num_heads": -1, "num_head_channels": 32}
        supported_inference_dtypes = [torch.float32]

        def clip_target(self, state_dict={}):
            return smb.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, TinySDXLClipModel)

    TinySDXLClipModel.__qualname__ = TinySDXLClipModel.__name__
    TinySDXL2048.__qualname__ = TinySDXL2048.__name__
    return {"TinySDXL2048": TinySDXL2048, "TinySDXLClipModel": TinySDXLClipModel}


def tiny_sdxl_2048_config_class():
    return _sdxl_2048_classes()["TinySDXL2048"]


def tiny_sdxl_clip_model_class():
    """SDXLClipModel with 3-layer towers at the real widths: conds (B, 77, 2048), pooled (B, 1280)."""
    return _sdxl_2048_classes()["TinySDXLClipModel"]


def register_tiny_sdxl_2048() -> None:
    """Insert TinySDXL2048 at the front of ``comfy.supported_models.models`` (idempotent; only its tiny layout
    matches: real SDXL checkpoints have model_channels 320)."""
    _register(tiny_sdxl_2048_config_class())


def build_tiny_sdxl_2048(seed: int = 0):
    """The tiny SDXL UNet of ``build_tiny_sdxl`` (70 transformer blocks) with context 2048 and ``y`` 2816 wide."""
    return _build(tiny_sdxl_2048_config_class(), TINY_SDXL_2048_UNET, seed, gain=0.5)


def tiny_sdxl_2048_checkpoint_state_dict(seed: int = 0) -> dict:
    """Single-file SDXL layout for the stock CheckpointLoaderSimple (with TinySDXL2048 registered), all fp16 like
    released SDXL checkpoints: ``model.diffusion_model.*``, ``conditioner.embedders.0.transformer.*`` (CLIP-L),
    ``conditioner.embedders.1.model.*`` (CLIP-G in the open_clip layout, written by ComfyUI's own
    SDXL.process_clip_state_dict_for_saving) and ``first_stage_model.taesd_*`` (random TAESD)."""
    comfy = _comfy()
    import comfy.taesd.taesd

    patcher = build_tiny_sdxl_2048(seed)
    sd = {"model.diffusion_model." + k: v.half() for k, v in patcher.model.diffusion_model.state_dict().items()}
    clip = tiny_sdxl_clip_model_class()(device="cpu", dtype=torch.float32)
    init_weights_(clip, seed=seed + 1)
    config = tiny_sdxl_2048_config_class()(dict(TINY_SDXL_2048_UNET))
    for k, v in config.process_clip_state_dict_for_saving(clip.state_dict()).items():
        sd[k] = v.half() if v.is_floating_point() else v
    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    init_weights_(vae, seed=seed + 2)
    for k, v in vae.state_dict().items():
        sd["first_stage_model." + k] = v.half()
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def write_tiny_sdxl_2048_checkpoint(path, seed: int = 0) -> str:
    return _save(path, tiny_sdxl_2048_checkpoint_state_dict(seed), "tiny_sdxl_2048")
