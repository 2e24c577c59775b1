"""KSampler-style entry points used by the FreeCure sampler nodes (noise, sigmas, previews, progress)."""
from __future__ import annotations

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview

from ..fasa.config import FASAConfig
from ..fasa.record import KVStore, NoRecord, ReplayMismatch
from . import flux
from .guiders import FoundationGuider, LockstepGuider, ReplayGuider

RECORD_CHOICES = {"off": (), "cond": ("cond",), "cond+uncond": ("cond", "uncond")}
STORE_KINDS = ("auto", "kv", "x")


def prepare_sampling(model, latent: dict, seed: int, steps: int, sampler_name: str, scheduler: str, denoise: float):
    """latent image, noise, noise mask, sigmas and sampler exactly as ComfyUI's KSampler makes them."""
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    ks = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                 scheduler=scheduler, denoise=denoise, model_options=model.model_options)
    return latent_image, noise, latent.get("noise_mask"), ks.sigmas, comfy.samplers.sampler_object(sampler_name)


def _run(guider, model, latent, seed, steps, sampler_name, scheduler, denoise):
    latent_image, noise, noise_mask, sigmas, sampler = prepare_sampling(model, latent, seed, steps, sampler_name,
                                                                        scheduler, denoise)
    callback = latent_preview.prepare_callback(model, steps)
    samples = guider.sample(noise, latent_image, sampler, sigmas, denoise_mask=noise_mask, callback=callback,
                            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return samples.to(comfy.model_management.intermediate_device())


def latent_like(latent: dict, samples: torch.Tensor) -> dict:
    """A LATENT like `latent` (its batch_index, noise_mask, ...) with `samples` as its samples; a shallow copy."""
    out = latent.copy()
    out["samples"] = samples
    return out


def sample_foundation(model_fd, positive, negative, latent: dict, seed: int, steps: int, cfg: float,
                      sampler_name: str, scheduler: str, denoise: float = 1.0, record: str = "cond",
                      layers: str = "reference", store: str = "auto", offload: bool = True):
    """Stage 1: sample the foundation branch; returns (LATENT, KVStore, or NoRecord when record is off)."""
    if record not in RECORD_CHOICES:
        raise ValueError(f"FreeCure: record must be one of {list(RECORD_CHOICES)}")
    if flux.is_flux(model_fd):  # FLUX records the image tokens' keys/values of the cond rows (store is not used)
        guider = flux.FluxFoundationGuider(model_fd, positive, negative, cfg, bool(RECORD_CHOICES[record]), layers,
                                           offload)
    else:
        guider = FoundationGuider(model_fd, positive, negative, cfg, RECORD_CHOICES[record], layers, store, offload)
    samples = _run(guider, model_fd, latent, seed, steps, sampler_name, scheduler, denoise)
    kv = guider.store if RECORD_CHOICES[record] else NoRecord()
    return latent_like(latent, samples), kv


def make_guider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg: float, fasa: FASAConfig,
                kv: KVStore | None = None, report_to: str | None = None):
    """A lockstep guider, or a replay guider when a stage-1 record is given. With `report_to` (a node id), each
    run's FASA account is also shown as that node's text."""
    guider = _make_guider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg, fasa, kv)
    guider.report_node = report_to
    return guider


def describe(report: dict) -> str:
    """The stage-3 report as the node's text (the FASA account, and what a FLUX preset name meant), or a plain note
    when there is none."""
    text = report.get("text") or report.get("note") or "FreeCure: no FASA account for this run"
    return f"{text}; {report['layers_note']}" if report.get("layers_note") else text


def _make_guider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg: float, fasa: FASAConfig,
                 kv: KVStore | None = None):
    if not isinstance(fasa, FASAConfig):
        raise ValueError("FreeCure: the fasa input must come from a FreeCureFASAConfig node")
    if isinstance(kv, NoRecord):
        raise ReplayMismatch("FreeCure: the connected kv holds no record because record is 'off' on "
                             "FreeCureFoundationSampler. Set record to 'cond' there, or disconnect kv to run lockstep.")
    if flux.is_flux(model_pd):
        flux.check_flux_fasa(fasa)
        if kv is not None:
            return flux.FluxReplayGuider(model_pd, positive, negative, cfg, fasa, kv, fd_positive, fd_negative)
        return flux.FluxLockstepGuider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg, fasa)
    if kv is not None:
        return ReplayGuider(model_pd, positive, negative, cfg, fasa, kv, fd_positive, fd_negative)
    return LockstepGuider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg, fasa)


def sample_freecure(model_pd, model_fd, positive, negative, fd_positive, fd_negative, latent: dict, seed: int,
                    steps: int, cfg: float, sampler_name: str, scheduler: str, denoise: float, fasa: FASAConfig,
                    kv: KVStore | None = None):
    """Stage 3: PD with FASA; returns (PD LATENT, FD LATENT, report dict).

    Lockstep samples FD alongside; replay takes the FD latent recorded in stage 1.
    """
    guider = make_guider(model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg, fasa, kv)
    samples = _run(guider, model_pd, latent, seed, steps, sampler_name, scheduler, denoise)
    guider.report["mode"] = "replay" if kv is not None else "lockstep"
    pd, fd = split_pair(latent_like(latent, samples))
    return pd, fd, guider.report


def split_pair(latent: dict):
    """(PD LATENT, FD LATENT) halves of a paired [PD; FD] latent from the FreeCure guider."""
    s = latent["samples"]
    if s.shape[0] % 2:
        raise ValueError(f"FreeCure: this latent has {s.shape[0]} images; a FreeCure pair has an even count "
                         f"(PD rows then FD rows). Connect the output of SamplerCustomAdvanced with a FreeCureGuider.")
    b = s.shape[0] // 2
    out = []
    for part in (slice(0, b), slice(b, 2 * b)):
        d = latent.copy()
        d["samples"] = s[part]
        for key in ("noise_mask", "batch_index"):
            if key in d and hasattr(d[key], "shape") and d[key].shape[0] == s.shape[0]:
                d[key] = d[key][part]
        out.append(d)
    return tuple(out)


def sampler_names() -> list[str]:
    """ComfyUI's sampler names, for the node combos."""
    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    """ComfyUI's scheduler names, for the node combos."""
    return list(comfy.samplers.KSampler.SCHEDULERS)
