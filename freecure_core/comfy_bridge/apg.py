"""APG (asymmetric prompt guidance, FreeCure stage 4) on ComfyUI's samplers.

The FreeCure result is DDIM-inverted with the template prompt (identity off: the foundation MODEL) up to the turn
sigma, then regenerated down to 0 with the template plus the expression words, using the user's sampler and cfg.
The turn is the paper's: the model's sigma at timestep gamma*T (model_sampling.percent_to_sigma(1 - gamma)), on the
KSampler schedule of the given steps and scheduler split there (freecure_core.apg.schedule.split_at_sigma); with
gamma_mode "steps", the last ceil(gamma * steps) steps of that schedule instead. Both halves are ordinary CFGGuider
runs with zero noise, so conditionings with timestep ranges or ControlNets (InstantID's IdentityNet) work as in
KSampler, and nothing is patched on the incoming model.
"""
from __future__ import annotations

import logging
import time

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview

from ..apg.schedule import (FLOW, GAMMA_MODES, GAMMA_STEPS, GAMMA_TIMESTEP, Split, check_gamma, invert,
                            inverted_steps, paper_turn_sigma, split_at_sigma, split_steps, state_form)
from .sampling import latent_like, prepare_sampling

log = logging.getLogger("FreeCure")


def _same_value(a, b) -> bool:
    if a is b:
        return True
    if torch.is_tensor(a) or torch.is_tensor(b):
        return (torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype
                and torch.equal(a.detach().cpu(), b.detach().cpu()))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # objects without a usable == (ControlNets compare by identity, above)
        return False


def same_conditioning(a, b) -> bool:
    """True when two CONDITIONINGs hold equal tensors and options (then APG has nothing to change)."""
    return _same_value(list(a), list(b))


def _pass_through(latent: dict, report: dict, message: str):
    report.update(ran=False, message=message)
    return latent, report


def _progress(model, inversion_steps: int, regeneration_steps: int):
    """Callbacks for the two halves that drive one ComfyUI progress bar (and its previews) over both."""
    total = inversion_steps + regeneration_steps
    callback = latent_preview.prepare_callback(model, total)

    def first(step, x0, x, _total):
        callback(step, x0, x, total)

    def second(step, x0, x, _total):
        callback(inversion_steps + step, x0, x, total)

    return first, second


def _check_model(model, up: torch.Tensor, noise_mask) -> str:
    form = state_form(model.get_model_object("model_sampling").noise_scaling, up)
    if form == FLOW and float(up[-1]) >= 1.0 - 1e-6:
        raise ValueError("FreeCure: with a flow model, gamma 1 inverts to pure noise (sigma 1), which ComfyUI cannot "
                         "hand from one sampler to the next; use a gamma below 1 (0.5 is the paper's)")
    if form == FLOW and noise_mask is not None:
        raise ValueError("FreeCure: APG cannot keep a latent noise_mask with a flow model; remove the mask before "
                         "APG and paste the result with LatentCompositeMasked instead")
    return form


def turn_sigma(model, gamma: float) -> float:
    """The paper's turn for `model`: its sigma at timestep gamma*T (percent_to_sigma(1 - gamma); 0 and sigma_max at
    the ends), e.g. 1.6156 for SD1.x/SDXL at gamma 0.5, and the shifted flow sigma for SD3/FLUX."""
    sampling = model.get_model_object("model_sampling")
    return paper_turn_sigma(gamma, sampling.percent_to_sigma, float(sampling.sigma_max))


def split(model, sigmas: torch.Tensor, gamma: float, gamma_mode: str = GAMMA_TIMESTEP) -> Split:
    """The run's schedule `sigmas` split where APG turns, for gamma read as `gamma_mode`."""
    if gamma_mode == GAMMA_STEPS:
        return split_steps(sigmas, gamma)
    return split_at_sigma(sigmas, turn_sigma(model, gamma))


def _message(report: dict, parts: Split) -> str:
    n, k, gamma, turn = report["steps"], parts.whole_steps, report["gamma"], parts.sigma_turn
    if report["gamma_mode"] == GAMMA_STEPS:
        return f"APG: inverted {k} of {n} steps up to sigma {turn:.4g} (gamma {gamma} of the steps)"
    what = f"{parts.steps} steps ({k} of the {n} scheduled + 1 to the turn)" if parts.turn_step else f"{k} of {n} steps"
    return (f"APG: inverted {what} up to sigma {turn:.4g}, the model's sigma at timestep {gamma}T (gamma {gamma}, as "
            f"the paper)")


def apg(model_fd, latent: dict, template_pos, attribute_pos, negative, seed: int, steps: int, cfg: float,
        sampler_name: str, scheduler: str, gamma: float = 0.5, inversion_cfg: float = 1.0,
        inversion_refine: int = 0, force: bool = False, gamma_mode: str = GAMMA_TIMESTEP):
    """Stage 4: (LATENT, report). Inverts `latent` with the template up to the turn, regenerates it with the
    attribute prompt.

    The turn (see `split`) is the model's sigma at timestep gamma*T on the steps/scheduler schedule, or with
    gamma_mode "steps" the last ceil(gamma * steps) steps. Passes the latent through unchanged (report["ran"]
    False, with the reason) when gamma is 0 or inverts no step, or the two conditionings are identical (no
    expression words); `force` runs anyway (a reconstruction check). The report holds the turn sigma, the steps
    inverted and, when APG ran, the inverted latent under "inverted" (a LATENT).
    """
    if getattr(latent["samples"], "is_nested", False):
        raise ValueError("FreeCure: APG does not support nested (multi-part) latents")
    if inversion_refine < 0:
        raise ValueError(f"FreeCure: inversion_refine must be 0 or more, got {inversion_refine}")
    if gamma_mode not in GAMMA_MODES:
        raise ValueError(f"FreeCure: gamma_mode must be one of {list(GAMMA_MODES)}, got {gamma_mode!r}")
    check_gamma(gamma)
    report = {"gamma": gamma, "gamma_mode": gamma_mode, "steps": steps, "inverted_steps": 0, "cfg": cfg,
              "inversion_cfg": inversion_cfg, "sampler": sampler_name, "scheduler": scheduler,
              "inversion_refine": inversion_refine}
    if gamma == 0.0 or (gamma_mode == GAMMA_STEPS and inverted_steps(steps, gamma) == 0):
        return _pass_through(latent, report, f"APG skipped: gamma {gamma} inverts nothing (the turn is the clean "
                                             f"image); the image passes through")
    if not force and same_conditioning(template_pos, attribute_pos):
        return _pass_through(latent, report, "APG skipped: the template and attribute prompts are identical (no "
                                             "expression words); the image passes through")
    t0 = time.perf_counter()
    latent_image, _, noise_mask, sigmas, sampler = prepare_sampling(model_fd, latent, seed, steps, sampler_name,
                                                                    scheduler, 1.0)
    parts = split(model_fd, sigmas.cpu(), gamma, gamma_mode)
    up, down = parts.up, parts.down
    report["form"] = _check_model(model_fd, up, noise_mask)
    report.update(sigma_turn=parts.sigma_turn, inverted_steps=parts.steps, whole_steps=parts.whole_steps,
                  turn_step=parts.turn_step, noise_mask=noise_mask is not None)
    zeros = torch.zeros_like(latent_image)
    first, second = _progress(model_fd, len(up) - 1, len(down) - 1)
    disable = not comfy.utils.PROGRESS_BAR_ENABLED

    inverter = comfy.samplers.CFGGuider(model_fd)
    inverter.set_conds(template_pos, negative)
    inverter.set_cfg(inversion_cfg)
    inversion = comfy.samplers.KSAMPLER(invert, extra_options={"refine": int(inversion_refine)})
    inverted = inverter.sample(zeros, latent_image, inversion, up, denoise_mask=noise_mask, callback=first,
                               disable_pbar=disable, seed=seed)

    regenerator = comfy.samplers.CFGGuider(model_fd)
    regenerator.set_conds(attribute_pos, negative)
    regenerator.set_cfg(cfg)
    samples = regenerator.sample(torch.zeros_like(inverted), inverted, sampler, down, denoise_mask=noise_mask,
                                 callback=second, disable_pbar=disable, seed=seed)

    device = comfy.model_management.intermediate_device()
    seconds = time.perf_counter() - t0
    report.update(ran=True, inverted=latent_like(latent, inverted.to(device)), seconds=seconds,
                  message=f"{_message(report, parts)}, with the template; regenerated them with the attribute "
                          f"prompt; {seconds:.1f} s")
    log.info("FreeCure: %s", report["message"])
    return latent_like(latent, samples.to(device)), report


def describe(report: dict) -> str:
    """The report as one line for the node's UI text."""
    return report["message"]
