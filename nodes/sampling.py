"""FreeCure sampling nodes: FASA settings, the foundation (stage 1) sampler, the FreeCure (stage 3)
sampler and guider, and the pair splitter. Declarations only; the work is in freecure_core."""
from __future__ import annotations

from ..freecure_core.fasa.config import OMEGA_MODES, OMEGA_RANGE, FASAConfig, read_omega
from ..freecure_core.fasa.layers import FLUX_PRESET, PRESETS
from ..freecure_core.comfy_bridge import sampling as engine
from .spec import In, NodeSpec, Out, WithUI

CATEGORY = "FreeCure/sampling"
LAYER_CHOICES = list(PRESETS) + [FLUX_PRESET, "custom"]

LAYERS_TIP = ("Self-attention layers where FASA acts. SD models: reference = the FreeCure code's layers (SD1.x decoder "
              "at the two finest resolutions; SDXL the last 20 self-attention blocks); decoder = every decoder layer; "
              "all = every layer; custom = the list in custom_layers. FLUX models: single = every single-stream block "
              "(FreeCure's own choice: neither the paper nor the FreeCure code names FLUX blocks); all = every block; "
              "custom e.g. 'single:10-37, double:18'; reference and decoder mean single there (saved workflows keep "
              "their result; the report says so).")
CUSTOM_TIP = ("Used when layers is 'custom': call positions like '50-69' (0-based, the reference code's numbering) "
              "or blocks like 'output:6-11', 'output:1.6-9' (block 1, transformer indices 6-9), 'middle'.")


def _layers(layers: str, custom_layers: str) -> str:
    if layers == "custom":
        if not custom_layers.strip():
            raise ValueError("FreeCure: layers is 'custom' but custom_layers is empty; e.g. 'output:6-11'")
        return custom_layers
    return layers


def _ksampler_inputs(model_name: str, model_tip: str) -> list[In]:
    return [
        In("MODEL", model_name, model_tip),
        In("INT", "seed", "Noise seed. Use the same seed for the foundation and the FreeCure sampler.", default=0,
           min=0, max=0xffffffffffffffff, seed=True),
        In("INT", "steps", "Denoising steps.", default=20, min=1, max=10000),
        In("FLOAT", "cfg", "Classifier-free guidance scale (lockstep runs both branches at it; a replay must use "
           "the foundation run's).", default=8.0, min=0.0, max=100.0, step=0.1),
        In("COMBO", "sampler_name", "Sampler; use the same on both samplers (a replay with another is refused). "
           "Deterministic samplers keep lockstep's FD half identical to the foundation run; those that draw noise "
           "every step (ancestral, SDE, ddpm, lcm...) and dpm_adaptive do not (the node says so); dpm_adaptive "
           "needs lockstep.", options=engine.sampler_names(), default="euler"),
        In("COMBO", "scheduler", "Noise schedule.", options=engine.scheduler_names(), default="normal"),
    ]


# ------------------------------------------------------------------------------------------ FASA config
def _fasa_config(mask, omega, layers, custom_layers, start_percent, end_percent, uncond_blend, mask_resample,
                 omega_mode=OMEGA_MODES[0]):
    return (FASAConfig(mask=mask, omega=read_omega(omega, omega_mode), layers=_layers(layers, custom_layers),
                       start_percent=start_percent, end_percent=end_percent, uncond_blend=uncond_blend,
                       mask_resample=mask_resample),)


OMEGA_TIP = ("Boost of in-mask foundation features (log-space: weight x e^omega; 0 = their natural weight, negative = "
             "less than natural). How the number is read is set by omega_mode; by default -1 = auto, the per-model "
             "default: SDXL 1.5 and SD1.x 0.5 (the FreeCure code's, for its additive bias, as here); FLUX 2.0, the "
             "paper's value, which the paper gives for its multiplicative formula (logits x omega), not for this "
             "additive bias, so tune it on FLUX. The FreeCure code's omega = 0 switches FASA off (mask x omega); here "
             "0 keeps the foundation keys at their natural weight.")
OMEGA_MODE_TIP = ("How omega is read. '-1 = auto' (the default, and how workflows saved before this option read): "
                  "-1 = the per-model default, any other number as written; auto = the per-model default whatever the "
                  "number; value = exactly as written, -1 included.")


FASA_CONFIG = NodeSpec(
    node_id="FreeCureFASAConfig", display_name="FreeCure FASA Config", category="FreeCure/attention",
    description="Foundation-aware self-attention settings: inside the mask, the identity branch also attends to "
                "the foundation branch's features, so prompt attributes (hair, eyes, glasses...) follow the prompt.",
    inputs=[
        In("MASK", "mask", "Attribute mask on the foundation image (white = take the attribute from the foundation "
           "branch), e.g. from FreeCure face parsing. One mask, or one per image of the batch."),
        In("FLOAT", "omega", OMEGA_TIP, default=-1.0, min=OMEGA_RANGE[0], max=OMEGA_RANGE[1], step=0.05),
        In("COMBO", "layers", LAYERS_TIP, options=LAYER_CHOICES, default="reference"),
        In("STRING", "custom_layers", CUSTOM_TIP, default=""),
        In("FLOAT", "start_percent", "Where in the schedule FASA starts (0 = first step).", default=0.0, min=0.0,
           max=1.0, step=0.01),
        In("FLOAT", "end_percent", "Where in the schedule FASA stops (1 = last step).", default=1.0, min=0.0,
           max=1.0, step=0.01),
        In("FLOAT", "uncond_blend", "0 = the negative/unconditional row keeps plain attention (FreeCure code); "
           "1 = it gets FASA too.", default=0.0, min=0.0, max=1.0, step=0.05),
        In("COMBO", "mask_resample", "How the mask is brought to each layer's token grid: nearest (FreeCure code) "
           "takes the mask's value at each token, so a feathered edge gives soft weights (a foundation key at mask "
           "value m weighs m x e^omega); area keeps a token when it is at least half covered (binary, a feathered "
           "edge only moves the contour).", options=["nearest", "area"], default="nearest"),
        In("COMBO", "omega_mode", OMEGA_MODE_TIP, options=list(OMEGA_MODES), default=OMEGA_MODES[0], optional=True),
    ],
    outputs=[Out("FREECURE_FASA", "fasa", "FASA settings for FreeCure Sampler / FreeCure Guider.")],
    run=_fasa_config)


# ------------------------------------------------------------------------------------------ stage 1
def _foundation(model_fd, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                record, layers, custom_layers, store, offload_kv):
    latent, kv = engine.sample_foundation(model_fd, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                                          scheduler, denoise, record, _layers(layers, custom_layers), store, offload_kv)
    return latent, kv


FOUNDATION_SAMPLER = NodeSpec(
    node_id="FreeCureFoundationSampler", display_name="FreeCure Foundation Sampler", category=CATEGORY,
    description="Stage 1: samples the foundation branch (the model without the identity adapter) and records its "
                "self-attention features so FreeCure Sampler can replay them instead of sampling it again.",
    inputs=_ksampler_inputs("model_fd", "The foundation model: the same checkpoint without the identity adapter.") + [
        In("CONDITIONING", "positive", "Foundation prompt (no identity embedding)."),
        In("CONDITIONING", "negative", "Negative prompt."),
        In("LATENT", "latent_image", "Latent to sample, e.g. Empty Latent Image."),
        In("FLOAT", "denoise", "Denoise strength.", default=1.0, min=0.0, max=1.0, step=0.01),
        In("COMBO", "record", "Record foundation features for replay: off, cond (positive row), or cond+uncond "
           "(needed for uncond_blend > 0).", options=list(engine.RECORD_CHOICES), default="cond"),
        In("COMBO", "layers", LAYERS_TIP + " Must cover the FASA Config's layers.", options=LAYER_CHOICES,
           default="reference"),
        In("STRING", "custom_layers", CUSTOM_TIP, default=""),
        In("COMBO", "store", "What to record: auto = attention inputs (half the size of keys+values; replay needs the "
           "same weights); kv = keys and values (works when model_pd has other LoRAs/patches).",
           options=list(engine.STORE_KINDS), default="auto"),
        In("BOOLEAN", "offload_kv", "Keep the record in CPU RAM instead of GPU memory.", default=True),
    ],
    outputs=[Out("LATENT", "fd_latent", "The foundation image's latent (decode it and parse the face for the mask)."),
             Out("FREECURE_KV", "kv", "The recorded foundation features (connect to FreeCure Sampler to replay).")],
    run=_foundation)


# ------------------------------------------------------------------------------------------ stage 3
def _pair_inputs() -> list[In]:
    return [
        In("MODEL", "model_fd", "The foundation model (no identity adapter). Lockstep needs the same weights as "
           "model_pd; with a kv record it is not run."),
        In("CONDITIONING", "positive", "Identity-branch positive conditioning (with the identity embedding)."),
        In("CONDITIONING", "negative", "Identity-branch negative conditioning."),
        In("CONDITIONING", "fd_positive", "Foundation-branch positive conditioning (same prompt, no identity)."),
        In("CONDITIONING", "fd_negative", "Foundation-branch negative conditioning."),
    ]


def _freecure(model_pd, seed, steps, cfg, sampler_name, scheduler, model_fd, positive, negative, fd_positive,
              fd_negative, latent_image, denoise, fasa, kv=None):
    pd, fd, report = engine.sample_freecure(model_pd, model_fd, positive, negative, fd_positive, fd_negative,
                                            latent_image, seed, steps, cfg, sampler_name, scheduler, denoise, fasa, kv)
    return WithUI((pd, fd), {"text": [engine.describe(report)]})


KV_INPUT = In("FREECURE_KV", "kv", "Optional record from FreeCure Foundation Sampler: replay it (faster: the "
              "foundation branch is not sampled again). Without it, both branches run in lockstep.", optional=True)

FREECURE_SAMPLER = NodeSpec(
    node_id="FreeCureSampler", display_name="FreeCure Sampler", category=CATEGORY,
    description="Stage 3: samples the identity branch with foundation-aware self-attention, from the same noise as "
                "the foundation branch. Shows what FASA did (mode, layers hit, places acted vs expected, mask "
                "coverage, seconds) and stops with an error when a non-empty mask got no FASA.",
    inputs=_ksampler_inputs("model_pd", "The personalized model (with the identity adapter).") + _pair_inputs() + [
        In("LATENT", "latent_image", "The same latent as the foundation sampler's."),
        In("FLOAT", "denoise", "Denoise strength.", default=1.0, min=0.0, max=1.0, step=0.01),
        In("FREECURE_FASA", "fasa", "FASA settings from FreeCure FASA Config."),
        KV_INPUT,
    ],
    outputs=[Out("LATENT", "pd_latent", "The FreeCure result (identity branch with FASA)."),
             Out("LATENT", "fd_latent", "The foundation branch's latent.")],
    run=_freecure)


def _guider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg, fasa, kv=None, node_id=None):
    return (engine.make_guider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg, fasa, kv,
                               report_to=node_id),)


FREECURE_GUIDER = NodeSpec(
    node_id="FreeCureGuider", display_name="FreeCure Guider", category=CATEGORY,
    description="GUIDER for SamplerCustomAdvanced: FreeCure with any sampler, sigmas and noise. Its output is the "
                "pair [identity rows; foundation rows]; split it with FreeCure Split Pair. After each run this node "
                "shows what FASA did (layers, places acted vs expected, mask coverage, seconds).",
    inputs=[In("MODEL", "model_pd", "The personalized model (with the identity adapter).")] + _pair_inputs() + [
        In("FLOAT", "cfg", "Classifier-free guidance scale.", default=8.0, min=0.0, max=100.0, step=0.1),
        In("FREECURE_FASA", "fasa", "FASA settings from FreeCure FASA Config."),
        KV_INPUT,
    ],
    outputs=[Out("GUIDER", "guider", "Connect to SamplerCustomAdvanced.")],
    run=_guider, wants_node_id=True)


SPLIT_PAIR = NodeSpec(
    node_id="FreeCureSplitPair", display_name="FreeCure Split Pair", category=CATEGORY,
    description="Splits a FreeCure guider's output [identity rows; foundation rows] into its two halves.",
    inputs=[In("LATENT", "latent", "Output of SamplerCustomAdvanced driven by FreeCure Guider.")],
    outputs=[Out("LATENT", "pd_latent", "Identity-branch half (the FreeCure result)."),
             Out("LATENT", "fd_latent", "Foundation-branch half.")],
    run=lambda latent: engine.split_pair(latent))

SPECS = [FASA_CONFIG, FOUNDATION_SAMPLER, FREECURE_SAMPLER, FREECURE_GUIDER, SPLIT_PAIR]
