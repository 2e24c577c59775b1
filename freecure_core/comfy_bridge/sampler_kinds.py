"""What a ComfyUI sampler does to a lockstep pair, read from the sampler object (KSampler names and custom samplers).

Lockstep samples [PD; FD] as one batch. A sampler that works row by row with no randomness keeps FD's half bit for bit
equal to an FD-only run ("deterministic"). One that draws fresh noise every step ("noise": ancestral, SDE, ddpm, lcm,
er_sde, seeds, sa_solver) draws it for the pair's shape, so FD's half is another sample than the foundation run's.
dpm_adaptive ("adaptive") picks its step sizes from the error of the whole batch, which couples the two branches: FD's
half differs from the foundation run within the solver's tolerance, and a PD-only replay cannot follow the recorded
steps. ``tests/bridge/test_lockstep_samplers.py`` runs every sampler of the installed ComfyUI both ways and checks this
table, so a ComfyUI with new samplers fails there until they are classified.
"""
from __future__ import annotations

import inspect

DETERMINISTIC = frozenset({
    "euler", "euler_cfg_pp", "heun", "heunpp2", "exp_heun_2_x0", "dpm_2", "lms", "dpm_fast", "dpmpp_2m",
    "dpmpp_2m_cfg_pp", "ipndm", "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "gradient_estimation",
    "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2"})
NOISE = frozenset({
    "euler_ancestral", "euler_ancestral_cfg_pp", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "exp_heun_2_x0_sde"})
ADAPTIVE = frozenset({"dpm_adaptive"})

_WRAPPED = {"dpm_fast_function": "dpm_fast", "dpm_adaptive_function": "dpm_adaptive", "sample_unipc": "uni_pc",
            "sample_unipc_bh2": "uni_pc_bh2"}
_NOT_OPTIONS = {"model", "x", "sigmas", "extra_args", "callback", "disable", "noise", "sigma_min", "sigma_max"}


def sampler_name(sampler) -> str:
    """The KSampler name of a sampler object (ddim for euler with random inpaint noise), else its dotted name."""
    fn = getattr(sampler, "sampler_function", None)
    if fn is None:
        cls = type(sampler)
        return f"{cls.__module__}.{cls.__qualname__}"
    name, module = getattr(fn, "__name__", "?"), getattr(fn, "__module__", "") or ""
    if name in _WRAPPED and module.startswith("comfy."):
        return _WRAPPED[name]
    if name.startswith("sample_") and module == "comfy.k_diffusion.sampling":
        short = name[len("sample_"):]
        if short == "euler" and (getattr(sampler, "inpaint_options", None) or {}).get("random"):
            return "ddim"
        return short
    return f"{module}.{getattr(fn, '__qualname__', name)}"


def _plain(value):
    return value if isinstance(value, (int, float, bool, str, type(None))) else type(value).__qualname__


def sampler_label(sampler) -> str:
    """The sampler's name and options, defaults filled in: equal for two samplers exactly when they sample alike."""
    options = {}
    fn = getattr(sampler, "sampler_function", None)
    if fn is not None:
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            params = ()
        options = {p.name: _plain(p.default) for p in params
                   if p.default is not p.empty and p.name not in _NOT_OPTIONS}
        options.update({k: _plain(v) for k, v in (getattr(sampler, "extra_options", None) or {}).items()})
        inpaint = getattr(sampler, "inpaint_options", None) or {}
        options.update({f"inpaint_{k}": _plain(v) for k, v in inpaint.items()})
    else:
        options = {k: _plain(v) for k, v in vars(sampler).items() if not k.startswith("_")}
    inner = ", ".join(f"{k}={options[k]!r}" for k in sorted(options))
    return f"{sampler_name(sampler)}({inner})"


def sampler_kind(sampler, denoise_mask=None) -> str:
    """deterministic, noise (new noise every step; ddim under a denoise mask), adaptive (dpm_adaptive) or unknown."""
    name = sampler_name(sampler)
    if name == "ddim" and denoise_mask is not None:
        return "noise"
    for kind, names in (("deterministic", DETERMINISTIC), ("noise", NOISE), ("adaptive", ADAPTIVE)):
        if name in names:
            return kind
    return "unknown"


def lockstep_note(sampler, denoise_mask=None) -> str | None:
    """What the sampler does to lockstep's FD half, for the node's text (None when FD stays the foundation run)."""
    name, kind = sampler_name(sampler), sampler_kind(sampler, denoise_mask)
    if kind == "noise":
        return (f"{name} draws new noise every step, here for the pair: FD's half is another sample than the "
                f"foundation run (its mask may not line up); connect the foundation run's kv (replay) to keep FD exact")
    if kind == "adaptive":
        return (f"{name} picks its step sizes from the error of the whole pair: FD's half differs from the foundation "
                f"run within the solver's tolerance, and each branch's steps depend on the other")
    if kind == "unknown":
        return (f"FreeCure does not know whether the sampler {name} draws noise every step or adapts its steps; if it "
                f"does, FD's half differs from the foundation run")
    return None


def replay_refusal(sampler) -> str | None:
    """Why a replay cannot use this sampler (an error text naming the fix), else None."""
    if sampler_kind(sampler) == "adaptive":
        return (f"FreeCure: {sampler_name(sampler)} picks its step sizes from the sample's own error, so the "
                f"personalized branch alone cannot follow the steps the foundation record was made with. Disconnect kv "
                f"to run lockstep (both branches then share every step), or use a fixed-step sampler.")
    return None
