"""APG (asymmetric prompt guidance, FreeCure stage 4) on ComfyUI's samplers.

The FreeCure result is DDIM-inverted up the last ceil(gamma * steps) steps of the KSampler schedule with the
template prompt (identity off: the foundation MODEL), then regenerated down the same steps with the template
plus the expression words, using the user's sampler and cfg. Both halves are ordinary CFGGuider runs with zero
noise, so conditionings with timestep ranges or ControlNets (InstantID's IdentityNet) work as in KSampler, and
nothing is patched on the incoming model.
"""
from __future__ import annotations

import logging
import time

import torch

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview

from ..apg.schedule import FLOW, invert, inverted_steps, split_schedule, state_form
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


def apg(model_fd, latent: dict, template_pos, attribute_pos, negative, seed: int, steps: int, cfg: float,
        sampler_name: str, scheduler: str, gamma: float = 0.5, inversion_cfg: float = 1.0,
        inversion_refine: int = 0, force: bool = False):
    """Stage 4: (LATENT, report). Inverts `latent` with the template, regenerates it with the attribute prompt.

    Passes the latent through unchanged (report["ran"] False, with the reason) when gamma inverts no step or
    the two conditionings are identical (no expression words); `force` runs anyway (a reconstruction check).
    The report holds the inverted latent under "inverted" (a LATENT) when APG ran.
    """
    if getattr(latent["samples"], "is_nested", False):
        raise ValueError("FreeCure: APG does not support nested (multi-part) latents")
    if inversion_refine < 0:
        raise ValueError(f"FreeCure: inversion_refine must be 0 or more, got {inversion_refine}")
    k = inverted_steps(steps, gamma)
    report = {"gamma": gamma, "steps": steps, "inverted_steps": k, "cfg": cfg, "inversion_cfg": inversion_cfg,
              "sampler": sampler_name, "scheduler": scheduler, "inversion_refine": inversion_refine}
    if k == 0:
        return _pass_through(latent, report, f"APG skipped: gamma {gamma} inverts no step; the image passes through")
    if not force and same_conditioning(template_pos, attribute_pos):
        return _pass_through(latent, report, "APG skipped: the template and attribute prompts are identical (no "
                                             "expression words); the image passes through")
    t0 = time.perf_counter()
    latent_image, _, noise_mask, sigmas, sampler = prepare_sampling(model_fd, latent, seed, steps, sampler_name,
                                                                    scheduler, 1.0)
    up, down = split_schedule(sigmas.cpu(), gamma)
    report["form"] = _check_model(model_fd, up, noise_mask)
    report.update(sigma_turn=float(up[-1]), noise_mask=noise_mask is not None)
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
                  message=f"APG: inverted {k} of {steps} steps (gamma {gamma}, up to sigma {float(up[-1]):.4g}) "
                          f"with the template, regenerated them with the attribute prompt; {seconds:.1f} s")
    log.info("FreeCure: %s", report["message"])
    return latent_like(latent, samples.to(device)), report


def describe(report: dict) -> str:
    """The report as one line for the node's UI text."""
    return report["message"]
