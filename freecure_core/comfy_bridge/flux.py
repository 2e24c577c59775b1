"""FASA for FLUX models (double/single-stream joint attention) through ComfyUI 0.3.75's documented hook
``transformer_options["optimized_attention_override"]``: ComfyUI's FLUX attention (comfy.ldm.flux.math.attention)
applies RoPE and then calls optimized_attention, which hands (func, q, k, v, heads, skip_reshape=True, mask=...,
transformer_options=...) to the override; q/k/v are (B, H, L, D) with L = [text; image] tokens, and
transformer_options carries block_type ("double"/"single"), block_index, sigmas and cond_or_uncond. Any override
already on the model is chained (called for every attention this one does not change). Newer ComfyUI versions with
pre-attention patches for FLUX (``attn1_patch`` with ``img_slice``) are detected by ``newer_hooks`` and reported;
this path does not need them.

Nodes that replace the model's ``forward_orig`` with their own block loop (the lldacing PuLID-FLUX port does, for
the length of each sampling run) call the blocks without ``transformer_options``, so the override would never be
reached. For one sampling run, and only on that model's own blocks, ``FluxRun.hooks`` adds forward pre-hooks: the
model's forward hands over the call's transformer_options, each double block notes the text-token count, and a
chosen block called without this run's override gets the call's transformer_options with its block type and index.
Under stock ComfyUI the blocks already carry them and the hooks change nothing. A replaced ``forward_orig`` that
cannot even take the arguments ComfyUI passes (the balazik PuLID-FLUX port) is refused by name
(``check_forward_orig``).

Modes, as for SD models: stage 1 records FD's image keys/values (post-RoPE) at the chosen blocks for every model
evaluation (``FluxFoundationGuider``); stage 3 replays them (``FluxReplayGuider``) or runs FD alongside
(``FluxLockstepGuider``, same weights only). Guidance-distilled FLUX (cfg 1) has only cond rows; with CFG the uncond
rows keep plain attention (uncond_blend is not offered for FLUX). All state lives for one sampling run.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math

import torch

import comfy.model_patcher
import comfy.samplers

from ..fasa.accounting import FasaAccount
from ..fasa.config import FASAConfig
from ..fasa.flux import (FluxRecord, FluxRecordInfo, flux_fasa, logits_mask, preset_note, resolve_flux_layers,
                         token_grid)
from ..fasa.masks import TokenMasks, check_mask_aspect, check_mask_batch
from ..fasa.record import ReplayMismatch
from ..fasa.selection import KeySelection, select_keys
from .checks import FreeCureConflict, check_no_caching, weights_identity
from .guiders import (FasaReporting, FoundationSampling, PairedLockstepSampling, PairedReplaySampling, sigma_of,
                      input_fingerprints, record_traffic)

log = logging.getLogger("FreeCure")
OVERRIDE = "optimized_attention_override"


def is_flux(model_patcher) -> bool:
    """True for a MODEL whose diffusion model is ComfyUI's FLUX transformer (FLUX.1, Kontext, FLUX.2, fine-tunes)."""
    try:
        from comfy.ldm.flux.model import Flux
    except ImportError:
        return False
    inner = getattr(model_patcher, "model", None)
    return isinstance(getattr(inner, "diffusion_model", None), Flux)


@functools.lru_cache(maxsize=1)
def newer_hooks() -> tuple[str, ...]:
    """Pre-attention FLUX patch hooks of newer ComfyUI versions found in this install (reported by the guiders as
    newer_flux_hooks; this path works with or without them)."""
    import inspect
    try:
        from comfy.ldm.flux import layers
        src = inspect.getsource(layers)
    except (ImportError, OSError, TypeError):
        return ()
    return tuple(h for h in ("attn1_patch", "attn1_output_patch") if h in src)


def block_counts(model_patcher) -> tuple[int, int]:
    dm = model_patcher.model.diffusion_model
    return len(dm.double_blocks), len(dm.single_blocks)


def image_grid(model_patcher, latent_shape) -> tuple[int, int]:
    """The image-token grid of a latent on this FLUX model, from its own patch size (FLUX.1 2, FLUX.2 1)."""
    return token_grid(latent_shape, int(getattr(model_patcher.model.diffusion_model, "patch_size", 2)))


def check_forward_orig(model_patcher, name: str) -> None:
    """FreeCureConflict when another node left this FLUX model a replaced ``forward_orig`` that cannot take arguments
    this ComfyUI's own ``forward_orig`` takes (``transformer_options``; ``timestep_zero_index`` on newer versions):
    it was written for another ComfyUI, and sampling would fail with a TypeError from inside that node's code. The
    balazik PuLID-FLUX port leaves such a loop on the model; the lldacing port's April 2025 release swaps one in while
    it samples on ComfyUI 0.33."""
    dm = model_patcher.model.diffusion_model
    replaced = dm.__dict__.get("forward_orig")
    if replaced is None:
        return
    try:
        params = inspect.signature(replaced).parameters
        stock = list(inspect.signature(type(dm).forward_orig).parameters)[1:]
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    missing = [n for n in stock if n not in params]
    if not missing:
        return
    fn = getattr(replaced, "__func__", replaced)
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
    lowered = where.lower()
    if "pulid_flux_ll" in lowered:
        advice = (" This is the lldacing/ComfyUI_PuLID_Flux_ll port's loop: update the port to a release made for this "
                  "ComfyUI.")
    elif "pulid" in lowered:
        advice = (" This is what balazik/ComfyUI-PuLID-Flux's 'Apply PuLID Flux' leaves on the model; that port cannot "
                  "sample on this ComfyUI at all, with or without FreeCure. Use a current lldacing/ComfyUI_PuLID_Flux_ll "
                  "instead, and reload the checkpoint (the replacement stays on the loaded model).")
    else:
        advice = " Update or remove that node, and reload the checkpoint if the replacement stays on the loaded model."
    raise FreeCureConflict(
        f"FreeCure FLUX: {name}'s forward_orig was replaced by {where}, which does not accept "
        f"{', '.join(missing)} (arguments this ComfyUI's FLUX forward takes), so sampling would fail inside it.{advice}")


def _cond_rows(transformer_options: dict, batch: int) -> list[int]:
    """Batch rows holding conditional (0) chunks, from ComfyUI's cond_or_uncond list."""
    chunks = transformer_options.get("cond_or_uncond") or [0]
    per = batch // len(chunks)
    return [r for i, c in enumerate(chunks) if c == 0 for r in range(i * per, (i + 1) * per)]


class FluxRun:
    """One sampling run's FASA state: blocks, mode ("record"/"replay"/"lockstep"), record, masks, window."""

    def __init__(self, blocks, mode: str, record: FluxRecord, *, omega: float = 0.0, masks=None,
                 sigma_start: float = float("inf"), sigma_end: float = 0.0):
        self.blocks, self.mode, self.record = set(blocks), mode, record
        self.omega, self.masks = float(omega), masks
        self.mask_any = masks is not None and bool((masks > 0).any())  # once per run: no FASA at all when False
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.eval_index = -1
        self.sigma = None
        self.n_txt = None
        self.n_img = None  # image tokens of the latent being sampled (set by the guider); reference tokens follow
        self.fasa_calls = 0
        self.account: FasaAccount | None = None  # set for stage 3: where FASA acted vs should have
        self._call_options: dict | None = None  # the transformer_options of the model call in progress
        self.kernel = "auto"  # fasa.kernel's choice
        self._selections: dict[tuple, KeySelection] = {}  # the FD keys per batch size and device, once per run
        self._rows: dict[tuple, torch.Tensor] = {}  # conditional batch rows as an index on the device

    def _selection(self, rows: int, device) -> KeySelection:
        """The FD image keys each conditional row attends to, worked out on the first call of the run: the masks
        (one per image, or the first for every row when the batch holds several positive entries), over the record's
        kept tokens."""
        key = (rows, str(device))
        if key not in self._selections:
            masks = self.masks if self.masks.shape[0] in (1, rows) else self.masks[:1]
            self._selections[key] = select_keys(masks, self.omega, device, positions=getattr(self.record, "kept", None))
        return self._selections[key]

    def _rows_index(self, rows: list[int], device) -> torch.Tensor:
        key = (tuple(rows), str(device))
        if key not in self._rows:
            self._rows[key] = torch.tensor(rows).to(device)
        return self._rows[key]

    def begin_eval(self, sigma: float) -> None:
        self.eval_index += 1
        self.sigma = float(sigma)
        if self.account is not None:
            self.account.begin_eval(self.in_window())

    def hooks(self, diffusion_model) -> list:
        """Forward pre-hooks on this model's forward and blocks that keep FASA reachable when another node's
        replaced forward_orig calls the blocks without transformer_options (see the module docstring); returns the
        handles, to be removed when the run ends."""
        handles = [diffusion_model.register_forward_pre_hook(self._model_call, with_kwargs=True)]
        for kind, blocks in (("double", diffusion_model.double_blocks), ("single", diffusion_model.single_blocks)):
            for i, block in enumerate(blocks):
                if kind == "double" or (kind, i) in self.blocks:
                    handles.append(block.register_forward_pre_hook(self._block_hook(kind, i), with_kwargs=True))
        return handles

    def _model_call(self, module, args, kwargs):
        to = kwargs.get("transformer_options")
        self._call_options = to if isinstance(to, dict) else None
        return None

    def _block_hook(self, kind: str, index: int):
        chosen = (kind, index) in self.blocks

        def pre_hook(module, args, kwargs):
            if kind == "double":
                txt = kwargs.get("txt", args[1] if len(args) > 1 else None)
                if txt is not None:
                    self.n_txt = int(txt.shape[1])
            if not chosen or self._call_options is None:
                return None
            to = kwargs.get("transformer_options")
            if isinstance(to, dict) and getattr(to.get(OVERRIDE), "freecure_run", None) is self:
                return None  # ComfyUI's own loop: the block already has the run's override
            to = dict(self._call_options, block_type=kind, block_index=index)
            return args, dict(kwargs, transformer_options=to)
        return pre_hook

    def in_window(self) -> bool:
        return self.sigma_end - 1e-9 <= self.sigma <= self.sigma_start + 1e-9

    def _post_input(self, args: dict) -> dict:
        self.n_txt = int(args["txt"].shape[1])
        return args

    def options(self, model_options: dict, role: str) -> dict:
        """A copy of model_options with the post_input patch and this run's attention override (role "record" or
        "consume"), chaining an override that is already there."""
        opts = comfy.model_patcher.create_model_options_clone(model_options)
        to = opts.setdefault("transformer_options", {})
        patches = dict(to.get("patches", {}))
        patches["post_input"] = list(patches.get("post_input", [])) + [self._post_input]
        to["patches"] = patches
        previous = to.get(OVERRIDE)
        to[OVERRIDE] = self._override(role, previous)
        return opts

    def _override(self, role: str, previous):
        def freecure_flux_attention(func, *args, **kwargs):
            plain = (lambda: previous(func, *args, **kwargs)) if previous is not None else (lambda: func(*args, **kwargs))
            to = kwargs.get("transformer_options") or {}
            block = (to.get("block_type"), to.get("block_index"))
            if block not in self.blocks or not kwargs.get("skip_reshape") or len(args) < 3 or self.n_txt is None:
                return plain()
            q, k, v = args[0], args[1], args[2]
            out = plain()
            rows = _cond_rows(to, q.shape[0])
            if not rows:
                return out
            n_txt = self.n_txt
            n_img = q.shape[2] - n_txt if self.n_img is None else self.n_img
            if q.shape[2] < n_txt + n_img:
                raise FreeCureConflict(
                    f"FreeCure FLUX: at {block[0]} block {block[1]} the attention sequence has {q.shape[2]} tokens, "
                    f"fewer than {n_txt} text + {n_img} image tokens of the latent; this model lays out its tokens "
                    "unlike FLUX.1, FLUX.2 and Kontext, which FreeCure does not support")
            if role == "record":
                img = slice(n_txt, n_txt + n_img)
                self.record.put(self.eval_index, block, k[rows, :, img], v[rows, :, img])
                return out
            if not self.in_window() or not self.mask_any:
                return out
            k_fd, v_fd = self.record.get(self.eval_index, block, q.device, q.dtype)
            if k_fd.shape[0] != len(rows) or k_fd.shape[2] != self.masks.shape[1]:
                raise ReplayMismatch(f"FreeCure FLUX: the foundation record has {k_fd.shape[0]} rows x "
                                     f"{k_fd.shape[2]} image tokens at {block[0]} block {block[1]}, this pass "
                                     f"{len(rows)} x {self.masks.shape[1]}; use the same batch and size")
            idx = self._rows_index(rows, out.device)
            attn_mask = kwargs.get("mask")
            if attn_mask is not None:  # honoured on the image rows too (fasa.flux: FD keys take their place's column)
                attn_mask = logits_mask(attn_mask, q.shape[0], q.shape[1], q.shape[2])
                attn_mask = attn_mask[idx] if attn_mask.shape[0] > 1 else attn_mask
            fasa = flux_fasa(q[idx], k[idx], v[idx], out[idx], n_txt, n_img, k_fd, v_fd, None, self.omega,
                             attn_mask=attn_mask, selection=self._selection(len(rows), q.device), kernel=self.kernel)
            out = out.clone()
            out[idx] = fasa
            self.fasa_calls += 1
            if self.account is not None:
                self.account.hit(f"{block[0]}:{block[1]}")
            return out
        freecure_flux_attention.freecure_run = self
        return freecure_flux_attention


class _FluxGuider(comfy.samplers.CFGGuider):
    family_name = "FLUX"

    def __init__(self, model_patcher, cfg: float):
        super().__init__(model_patcher)
        self.set_cfg(cfg)
        self.run: FluxRun | None = None
        self.report: dict = {"family": "flux", "newer_flux_hooks": list(newer_hooks())}

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        self._inputs = input_fingerprints(noise, latent_image)
        try:
            return super().sample(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            if self.run is not None:
                self.report["fasa_calls"] = self.run.fasa_calls
                if self.run.mode == "replay":
                    self.report["record_traffic"] = record_traffic(self.run.record)
                self._account = self.run.account
                self.run = None

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None):
        # runs inside other nodes' OUTER_SAMPLE wrappers, i.e. after a port has swapped forward_orig for this run
        check_forward_orig(self.model_patcher, "the FLUX model")
        if self.run is not None:  # the generated image's tokens; Kontext / FLUX.2 reference tokens follow them
            self.run.n_img = math.prod(image_grid(self.model_patcher, latent_image.shape))
        handles = self.run.hooks(self.model_patcher.model.diffusion_model) if self.run is not None else []
        try:
            return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                        disable_pbar, seed, latent_shapes=latent_shapes)
        finally:
            for h in handles:
                h.remove()

    # the FLUX strategy of the paired (lockstep/replay) guiders
    def begin_lockstep_eval(self, sigma: float) -> None:
        self.run.begin_eval(sigma)
        self.run.record.entries.clear()

    def record_options(self, model_options: dict) -> dict:
        return self.run.options(model_options, "record")

    def consume_options(self, model_options: dict) -> dict:
        return self.run.options(model_options, "consume")

    def end_lockstep_eval(self) -> None:
        self.run.record.entries.clear()

    def _fasa_run(self, fasa: FASAConfig, mode: str, record: FluxRecord, blocks) -> FluxRun:
        shape = self._inputs["latent_shape"]
        check_mask_batch(fasa.mask, shape[0])
        check_mask_aspect(fasa.mask, shape[-2:])
        grid = image_grid(self.model_patcher, shape)
        masks = TokenMasks(fasa.mask, fasa.mask_resample).at(grid)
        ms = self.model_patcher.model.model_sampling
        omega = fasa.omega_for("flux")
        self.report.update(omega=omega, sites=[f"{b[0]}:{b[1]}" for b in blocks], token_grid=list(grid))
        if preset_note(fasa.layers):
            self.report["layers_note"] = preset_note(fasa.layers)
            log.info("FreeCure FLUX: %s", self.report["layers_note"])
        if fasa.mask_is_empty():
            self.report["note"] = "the FASA mask is empty: sampling without FASA"
            log.warning("FreeCure FLUX: the FASA mask is empty, so this run samples without FASA.")
        run = FluxRun(blocks, mode, record, omega=omega, masks=masks, sigma_start=ms.percent_to_sigma(fasa.start_percent),
                      sigma_end=ms.percent_to_sigma(fasa.end_percent))
        share = float(masks.mean())
        run.account = FasaAccount(mode, {f"{b[0]}:{b[1]}": share for b in blocks})
        return run


def _blocks(model_patcher, layers: str):
    return resolve_flux_layers(layers, *block_counts(model_patcher))


class FluxFoundationGuider(FoundationSampling, _FluxGuider):
    """Stage 1 for FLUX: the FD branch alone, recording FD image keys/values at the chosen blocks."""

    def __init__(self, model_fd, positive, negative, cfg: float, record: bool, layers: str, offload: bool = True):
        super().__init__(model_fd, cfg)
        self.set_conds(positive, negative)
        self.record_on, self.layers, self.offload = record, layers, offload
        self.store: FluxRecord | None = None
        if record:
            check_no_caching(model_fd, "model_fd")

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None):
        if self.record_on:
            blocks = _blocks(self.model_patcher, self.layers)
            i = self._inputs
            info = FluxRecordInfo(blocks=tuple(blocks), sigmas=tuple(float(s) for s in sigmas.flatten().tolist()),
                                  latent_shape=i["latent_shape"], noise_id=i["noise_id"], latent_id=i["latent_id"],
                                  weights_id=weights_identity(self.model_patcher), settings=self.settings)
            self.store = FluxRecord(info, offload=self.offload)
            self.run = FluxRun(blocks, "record", self.store)
            self.report["sites"] = [f"{b[0]}:{b[1]}" for b in blocks]
        return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                    disable_pbar, seed, latent_shapes=latent_shapes)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        if self.run is not None:
            self.store.begin_eval(sigma_of(timestep))
            self.run.begin_eval(sigma_of(timestep))
            model_options = self.run.options(model_options, "record")
        return super().predict_noise(x, timestep, model_options, seed)


class FluxReplayGuider(FasaReporting, PairedReplaySampling, _FluxGuider):
    """Stage 3 for FLUX, record/replay: PD alone; FD keys/values from the stage-1 record (any FD model)."""

    record_type = FluxRecord
    wrong_record = ("FreeCure FLUX: the kv input must come from FreeCure Foundation Sampler run on a FLUX model with "
                    "record on (this record is from an SD model or empty)")

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None):
        blocks = _blocks(self.model_patcher, self.fasa.layers)
        i = self._inputs
        self.record.check_compatible(blocks=blocks, sigmas=[float(s) for s in sigmas.flatten().tolist()],
                                     latent_shape=i["latent_shape"], noise_id=i["noise_id"], latent_id=i["latent_id"])
        run = self._fasa_run(self.fasa, "replay", self.record, blocks)
        compact = self.record.compacted_copy(run.masks)
        run.record, run.masks = compact, run.masks[:, compact.kept]
        self.report["store_bytes"], self.report["compacted_bytes"] = self.record.nbytes(), compact.nbytes()
        self.run = run
        return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                    disable_pbar, seed, latent_shapes=latent_shapes)


class FluxLockstepGuider(FasaReporting, PairedLockstepSampling, _FluxGuider):
    """Stage 3 for FLUX, lockstep: [PD rows; FD rows] from identical noise, FD evaluated first each step."""

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     latent_shapes=None):
        half = dict(self._inputs, latent_shape=(latent_image.shape[0] // 2, *latent_image.shape[1:]))
        self._inputs = half
        blocks = _blocks(self.model_patcher, self.fasa.layers)
        info = FluxRecordInfo(tuple(blocks), (), half["latent_shape"], "", "", "")
        self.run = self._fasa_run(self.fasa, "lockstep", FluxRecord(info, offload=False), blocks)
        return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                    disable_pbar, seed, latent_shapes=latent_shapes)


def check_flux_fasa(fasa: FASAConfig) -> None:
    """Settings FLUX does not offer, refused by name."""
    if fasa.uncond_blend:
        raise FreeCureConflict("FreeCure FLUX: uncond_blend is not used with FLUX (distilled FLUX has no uncond row; "
                               "with CFG the uncond rows keep plain attention); set it to 0")
