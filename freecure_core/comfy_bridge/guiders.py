"""FreeCure guiders (ComfyUI GUIDER objects), shaped like core's CFGGuider subclasses.

- FoundationGuider: the FD branch alone (stage 1), optionally recording FD attention inputs.
- LockstepGuider: samples a paired [PD; FD] batch from identical noise; each model evaluation runs
  FD first (keeping its keys/values) and then PD with FASA. Needs FD and PD to share weights.
- ReplayGuider: samples PD alone and replays the FD keys/values recorded by stage 1 (4N row passes
  instead of 6N), for any FD model, including ones with other LoRAs or object patches.
Each runs the branches through ComfyUI's own `sampling_function`, so pre/post-CFG hooks of other
nodes keep working, and keeps all FASA state in a FasaRun that lives for one `sample()` call.

What the SD and FLUX guiders (flux.py) share lives in the mixins FoundationSampling, PairedLockstepSampling
and PairedReplaySampling; each family's guider base supplies the small strategy they call
(begin_lockstep_eval, record_options, consume_options, end_lockstep_eval). In lockstep each branch is evaluated with
exactly its own MODEL's options (branches.py); a record keeps the settings that steer FD (RunSettings: cfg, FLUX
guidance, sampler, seed, denoise mask), and a replay that differs in one is refused by name.
"""
from __future__ import annotations

import logging
import time

import torch

import comfy.samplers

from ..fasa.accounting import FasaAccount, FasaNotActing, describe
from ..fasa.config import FASAConfig
from ..fasa.record import KVStore, RecordInfo, ReplayMismatch, RunSettings, tensor_fingerprint
from ..fasa.layers import resolve_layers
from ..fasa.masks import TokenMasks, check_mask_aspect, check_mask_batch, downsampled_grid
from .branches import LockstepOptions, check_lockstep_pair, predict_branch
from .checks import FreeCureConflict, check_attn1_conflicts, check_no_caching, weights_identity
from .patches import FasaRun
from .probe import attn1_module, model_family, probe_sites
from .sampler_kinds import lockstep_note, replay_refusal, sampler_kind, sampler_label, sampler_name

log = logging.getLogger("FreeCure")


def sigma_of(timestep) -> float:
    """The sigma of a model call, as a float: the first entry of its timestep tensor (all rows share it)."""
    return float(timestep.flatten()[0])


def input_fingerprints(noise, latent_image) -> dict:
    """Fingerprints of what a run samples (checked by record/replay): noise and latent content, latent shape."""
    return {"noise_id": tensor_fingerprint(noise), "latent_id": tensor_fingerprint(latent_image),
            "latent_shape": tuple(latent_image.shape)}


def guidance_of(conditioning) -> tuple:
    """The FLUX guidance of each entry of a CONDITIONING (raw or converted), None for an entry without one."""
    out = []
    for c in conditioning or ():
        d = c if isinstance(c, dict) else c[1]
        g = d.get("guidance")
        out.append(None if g is None else float(g))
    return tuple(out)


def run_settings(cfg: float, sampler, seed, denoise_mask, positive=None, negative=None) -> RunSettings:
    """The RunSettings of a sampling run; the guidance is read from the foundation conditioning (None without it)."""
    guidance = None if positive is None else (guidance_of(positive), guidance_of(negative))
    return RunSettings(cfg=float(cfg), guidance=guidance, sampler=sampler_label(sampler),
                       seed=None if seed is None else int(seed), denoise_mask_id=tensor_fingerprint(denoise_mask))


def not_acting_error(problem: str, family: str) -> FasaNotActing:
    """The error for a run whose non-empty mask got (almost) no FASA: what happened and the likely causes."""
    return FasaNotActing(
        f"FreeCure: the FASA mask is not empty, but {problem}, so this would be a plain sample. Likely causes: "
        f"another node replaced this {family} model's forward or its attention (e.g. a PuLID-FLUX port, a node that "
        f"swaps the attention function); a cache node (TeaCache, First Block Cache, DeepCache) skipping the blocks; "
        f"or a model FreeCure does not handle. Sample model_pd without that node, or give an empty mask to sample "
        f"without FASA on purpose.")


class FasaReporting:
    """Per-run FASA accounting of a stage-3 guider (mixed in before the family's guider base, which sets
    `self.run` with an `account` and `self.report`): after each model evaluation it refuses a run whose first
    in-window evaluation reached no layer; after sampling it refuses one that acted at too few places, and otherwise
    puts the account, the seconds and a one-line text (`report["text"]`) into the report and the log."""

    family_name = "diffusion"
    report_node: str | None = None  # a node id to show the account on (FreeCure Guider's own node)

    def check_fasa_after_eval(self) -> None:
        account = getattr(self.run, "account", None)
        problem = account.first_eval_problem() if account is not None else None
        if problem:
            raise not_acting_error(problem, self.family_name)

    def sample(self, *args, **kwargs):
        t0 = time.perf_counter()
        self.report.pop("text", None)
        self._account = None
        out = super().sample(*args, **kwargs)
        account = self._account
        if account is not None:
            problem = account.final_problem()
            if problem:
                raise not_acting_error(problem, self.family_name)
            seconds = time.perf_counter() - t0
            summary = account.summary()
            self.report.update(summary, seconds=seconds)
            self.report["text"] = describe(summary, seconds) + "".join(f". {n}" for n in self.report.get("notes", ()))
            log.info("FreeCure: %s", self.report["text"])
            if self.report_node is not None:
                show_node_text(self.report_node, self.report["text"])
        return out


def show_node_text(node_id: str, text: str) -> None:
    """Show `text` on node `node_id` in the ComfyUI frontend (its progress text), when a server is running."""
    try:
        from server import PromptServer
        instance = PromptServer.instance
    except (ImportError, AttributeError):
        return
    send = getattr(instance, "send_progress_text", None)
    if send is not None:
        send(text, node_id, getattr(instance, "client_id", None))  # to the client that queued the prompt


def record_traffic(record) -> dict:
    """What a replay run read from its record: bytes served to FASA and bytes copied to another device."""
    return {"read_bytes": int(record.read_bytes), "copied_bytes": int(record.copied_bytes)}


class FoundationSampling:
    """sample() of a stage-1 guider (mixed in before the family's guider base): `self.settings` (the run's
    RunSettings) is set for the record made in `self.store` (None when recording is off), which keeps the FD latent."""

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        self.settings = run_settings(self.cfg, sampler, seed, denoise_mask, self.original_conds.get("positive"),
                                     self.original_conds.get("negative"))
        out = super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        if self.store is not None:
            self.store.settle()
            self.store.fd_samples = out.detach().to("cpu", copy=True)
        return out


class PairedLockstepSampling:
    """A lockstep guider (mixed in before the family's guider base): one sampler run over the paired batch
    [PD rows; FD rows] from identical noise, returning that pair; each model evaluation runs FD first (recording its
    keys/values into the run) and then PD with FASA. The family's part is its strategy: begin_lockstep_eval,
    record_options, consume_options, end_lockstep_eval.

    Each branch is evaluated with its own MODEL's options and inside its own PREDICT_NOISE wrappers (branches.py); both
    run at this guider's cfg. A per-image denoise mask needs no doubling: ComfyUI repeats masks cyclically over the
    batch."""

    def __init__(self, model_pd, model_fd, positive, negative, fd_positive, fd_negative, cfg: float, fasa: FASAConfig):
        check_lockstep_pair(model_pd, model_fd)
        check_no_caching(model_pd, "model_pd")
        check_no_caching(model_fd, "model_fd")
        super().__init__(model_pd, cfg)
        self.model_fd, self.fasa = model_fd, fasa
        self.inner_set_conds({"positive": positive, "negative": negative,
                              "fd_positive": fd_positive, "fd_negative": fd_negative})

    def outer_predict_noise(self, x, timestep, model_options={}, seed=None):
        return self.predict_noise(x, timestep, model_options, seed)  # PREDICT_NOISE wrappers act per branch

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        b = x.shape[0] // 2
        self.begin_lockstep_eval(sigma_of(timestep))
        opts = LockstepOptions(model_options, self.model_patcher, self.model_fd)
        fd = predict_branch(self, x[b:], timestep[b:], self.conds.get("fd_negative"), self.conds.get("fd_positive"),
                            self.record_options(opts.fd), seed)
        pd = predict_branch(self, x[:b], timestep[:b], self.conds.get("negative"), self.conds.get("positive"),
                            self.consume_options(opts.pd), seed)
        self.end_lockstep_eval()
        self.check_fasa_after_eval()
        return opts.finish(x, timestep, pd, fd, model_options)

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        notes = [f"lockstep: FD ran alongside PD at this sampler's cfg {self.cfg:g}",
                 lockstep_note(sampler, denoise_mask)]
        self.report.update(sampler=sampler_name(sampler), sampler_kind=sampler_kind(sampler, denoise_mask),
                           notes=[n for n in notes if n])
        latent2 = torch.cat([latent_image, latent_image])
        if sigmas.shape[-1] == 0:
            return latent2
        return super().sample(torch.cat([noise, noise]), latent2, sampler, sigmas, denoise_mask, callback,
                              disable_pbar, seed)


class PairedReplaySampling:
    """A replay guider (mixed in before the family's guider base): PD alone, with FD's keys/values from the stage-1
    record (a `record_type`; anything else is refused with `wrong_record`), returned with the FD rows recorded by
    stage 1 as the pair [PD rows; FD rows], like the lockstep guider. The run's settings (cfg, sampler, seed, denoise
    mask, and the FLUX guidance of fd_positive/fd_negative when given) must be the record's, and each model evaluation
    is checked against the record's sigma; the family's part is its strategy's consume_options."""

    record_type: type
    wrong_record: str

    def __init__(self, model_pd, positive, negative, cfg: float, fasa: FASAConfig, record, fd_positive=None,
                 fd_negative=None):
        if not isinstance(record, self.record_type):
            raise ReplayMismatch(self.wrong_record)
        check_no_caching(model_pd, "model_pd")
        super().__init__(model_pd, cfg)
        self.fasa, self.record = fasa, record
        self.fd_conds = (fd_positive, fd_negative)
        self.set_conds(positive, negative)

    def recorded_fd_samples(self) -> torch.Tensor:
        return self.record.fd_samples

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        sigma = sigma_of(timestep)
        self.run.begin_eval(sigma)
        self.record.check_eval(self.run.eval_index, sigma)
        out = super().predict_noise(x, timestep, self.consume_options(model_options), seed)
        self.check_fasa_after_eval()
        return out

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        refusal = replay_refusal(sampler)
        if refusal:
            raise ReplayMismatch(refusal)
        self.record.check_settings(run_settings(self.cfg, sampler, seed, denoise_mask, *self.fd_conds))
        pd = super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        return torch.cat([pd, self.recorded_fd_samples().to(device=pd.device, dtype=pd.dtype)])


class _FreeCureGuider(comfy.samplers.CFGGuider):
    """Shared set-up: probe the loaded model, choose layers, check for conflicts, own the FasaRun."""

    def __init__(self, model_patcher, cfg: float):
        super().__init__(model_patcher)
        self.set_cfg(cfg)
        self.run: FasaRun | None = None
        self.report: dict = {}

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if getattr(latent_image, "is_nested", False):
            raise FreeCureConflict("FreeCure: nested (multi-part) latents are not supported")
        self.remember_inputs(noise, latent_image)
        try:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            if self.run is not None:
                self.report["fasa_calls"] = self.run.fasa_calls
                self._account = self.run.account
                if self.run.mode == "replay" and self.run.store is not None:
                    self.report["record_traffic"] = record_traffic(self.run.store)
                self.run.end()
                self.run = None

    def remember_inputs(self, noise, latent_image):
        """Fingerprints of what this run samples (checked by record/replay)."""
        self._inputs = input_fingerprints(noise, latent_image)

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None):
        if not self.uses_fasa():
            return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                        disable_pbar, seed, latent_shapes=latent_shapes)
        family = model_family(self.inner_model)
        sites = probe_sites(self.inner_model, device)
        self.report.update(family=family, probed_sites=len(sites))
        self.run = self.make_run(family, sites, sigmas, device)
        self.report["sites"] = [s.label() for s in self.run.sites.values()]
        return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                    disable_pbar, seed, latent_shapes=latent_shapes)

    def uses_fasa(self) -> bool:
        return True

    # the SD strategy of the paired (lockstep/replay) guiders
    def begin_lockstep_eval(self, sigma: float) -> None:
        self.run.begin_eval(sigma)

    def record_options(self, model_options: dict) -> dict:
        return self.run.with_record(model_options, "kv")

    def consume_options(self, model_options: dict) -> dict:
        return self.run.with_consume(model_options)

    def end_lockstep_eval(self) -> None:
        self.run.fd.clear()

    def make_run(self, family, sites, sigmas, device) -> FasaRun:
        raise NotImplementedError

    def _fasa_run(self, fasa: FASAConfig, family, sites, mode, **kw) -> FasaRun:
        chosen = resolve_layers(fasa.layers, sites, family)
        latent_shape = self._inputs["latent_shape"]
        check_mask_batch(fasa.mask, latent_shape[0])
        check_mask_aspect(fasa.mask, latent_shape[-2:])
        ms = self.inner_model.model_sampling
        omega = fasa.omega_for(family)
        self.report.update(omega=omega)
        if fasa.mask_is_empty():
            self.report["note"] = "the FASA mask is empty: sampling without FASA"
            log.warning("FreeCure: the FASA mask is empty, so this run samples without FASA (plain attention). "
                        "Check the attribute mask (prompt words, parser, detector).")
        token_masks = TokenMasks(fasa.mask, fasa.mask_resample)
        run = FasaRun(chosen, mode, omega=omega, uncond_blend=fasa.uncond_blend, token_masks=token_masks,
                      sigma_start=ms.percent_to_sigma(fasa.start_percent),
                      sigma_end=ms.percent_to_sigma(fasa.end_percent), **kw)
        hw = latent_shape[-2:]
        run.account = FasaAccount(mode, {s.label(): float(token_masks.at(downsampled_grid(hw, s.level)).mean())
                                         for s in chosen})
        return run


class FoundationGuider(FoundationSampling, _FreeCureGuider):
    """Stage 1: the FD branch alone; records FD attention inputs at the chosen layers when asked."""

    def __init__(self, model_fd, positive, negative, cfg: float, record_rows: tuple[str, ...] = (),
                 layers: str = "reference", kind: str = "auto", offload: bool = True):
        super().__init__(model_fd, cfg)
        self.set_conds(positive, negative)
        self.record_rows, self.layers, self.kind, self.offload = tuple(record_rows), layers, kind, offload
        self.store: KVStore | None = None
        if record_rows:
            check_no_caching(model_fd, "model_fd")
        if record_rows and kind not in ("auto", "kv", "x"):
            raise ValueError(f"FreeCure: store must be 'auto', 'kv' or 'x', got {kind!r}")

    def uses_fasa(self) -> bool:
        return bool(self.record_rows)

    def make_run(self, family, sites, sigmas, device):
        chosen = resolve_layers(self.layers, sites, family)
        kind = self.kind
        if kind == "auto":
            # attention inputs are half the size of keys+values, but another node's attn1_patch may change
            # the keys after our hook sees the input: then record the keys/values themselves
            other_patches = self.model_patcher.model_options.get("transformer_options", {}).get("patches", {})
            kind = "kv" if other_patches.get("attn1_patch") else "x"
        if kind == "kv":
            check_attn1_conflicts(self.model_patcher, chosen, "model_fd")
        shape = self._inputs["latent_shape"]
        info = RecordInfo(kind=kind, rows=self.record_rows, family=family, site_keys=tuple(s.key for s in chosen),
                          site_tokens={s.key: downsampled_grid(shape[-2:], s.level) for s in chosen},
                          latent_shape=shape, sigmas=tuple(float(s) for s in sigmas.flatten().tolist()),
                          noise_id=self._inputs["noise_id"], latent_id=self._inputs["latent_id"],
                          weights_id=weights_identity(self.model_patcher), settings=self.settings)
        self.store = KVStore(info, offload=self.offload)
        return FasaRun(chosen, "record", store=self.store, record_rows=self.record_rows)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        if self.record_rows:
            self.run.eval_index = self.store.begin_eval(sigma_of(timestep))
            model_options = self.run.with_record(model_options, self.store.info.kind)
        return super().predict_noise(x, timestep, model_options, seed)


class LockstepGuider(FasaReporting, PairedLockstepSampling, _FreeCureGuider):
    """Stage 3, lockstep: one sampler run over [PD rows; FD rows] with identical starting noise."""

    def remember_inputs(self, noise, latent_image):
        half = latent_image.shape[0] // 2
        super().remember_inputs(noise[:half], latent_image[:half])

    def make_run(self, family, sites, sigmas, device):
        run = self._fasa_run(self.fasa, family, sites, "lockstep", record_rows=("cond", "uncond")[:1 + (self.fasa.uncond_blend > 0)])
        chosen = list(run.sites.values())
        check_attn1_conflicts(self.model_patcher, chosen, "model_pd")
        check_attn1_conflicts(self.model_fd, chosen, "model_fd")
        return run


class ReplayGuider(FasaReporting, PairedReplaySampling, _FreeCureGuider):
    """Stage 3, record/replay: PD alone, FD keys/values replayed from the stage-1 record (a KVStore)."""

    record_type = KVStore
    wrong_record = ("FreeCure: the kv input must be the FREECURE_KV output of FreeCureFoundationSampler with record "
                    "turned on")

    def make_run(self, family, sites, sigmas, device):
        run = self._fasa_run(self.fasa, family, sites, "replay")
        chosen = list(run.sites.values())
        check_attn1_conflicts(self.model_patcher, chosen, "model_pd")
        i = self._inputs
        self.record.check_compatible(latent_shape=i["latent_shape"], sigmas=[float(s) for s in sigmas.flatten().tolist()],
                                     noise_id=i["noise_id"], latent_id=i["latent_id"], site_keys=list(run.sites),
                                     rows_needed=run.consume_rows(), weights_id=weights_identity(self.model_patcher),
                                     family=family)
        latent_hw = i["latent_shape"][-2:]
        masks = {s.key: run.token_masks.at(downsampled_grid(latent_hw, s.level)) for s in chosen}
        run.store = self.record.compacted_copy(masks)
        self.report["store_bytes"] = self.record.nbytes()
        self.report["compacted_bytes"] = run.store.nbytes()
        if self.record.info.kind == "x":
            run.modules = {s.key: attn1_module(self.inner_model.diffusion_model, s) for s in chosen}
        return run
