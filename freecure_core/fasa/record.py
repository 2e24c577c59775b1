"""Record/replay of foundation-branch (FD) attention features (ComfyUI type FREECURE_KV): one base, FasaRecord, for
both model families, and the SD UNet record, KVStore (FLUX's is flux.FluxRecord).

Stage 1 samples FD alone and records, at each FASA layer and each model evaluation, FD tensors; stage 3 samples the
personalized branch alone and replays them, so FD is never computed twice. Entries are keyed by (evaluation index,
site, ...), where the evaluation index counts model evaluations of the sampler and is checked against the recorded
sigma of that evaluation — never by counting attention calls. A replay that does not match the record raises
ReplayMismatch, naming the setting that differs.

KVStore records, per (evaluation index, site key, row label), either the FD keys/values ("kv") or the attn1 input
hidden states ("x", half the size; keys/values are recomputed from them with the layer's own projections). The row
label is "cond"/"uncond", or "cond.1", "cond.2"... for the further active entries of several conditionings.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace

import torch

from .transfer import StreamCopies

KINDS = ("kv", "x")
ROWS = ("cond", "uncond")
SIGMA_RTOL = 1e-5


def tensor_fingerprint(t: torch.Tensor | None) -> str:
    """A short content hash of a tensor (shape, dtype and values), '' for None."""
    if t is None:
        return ""
    c = t.detach().to("cpu").contiguous()
    h = hashlib.sha1(str((tuple(c.shape), str(c.dtype))).encode())
    h.update(c.view(torch.uint8).numpy().tobytes() if c.numel() else b"")
    return h.hexdigest()[:16]


def nbytes_of(tensors) -> int:
    """Bytes held by the tensors of an iterable."""
    return sum(t.numel() * t.element_size() for t in tensors)


def pinned_like(new: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """new, in pinned memory when source is (so a compacted copy still reaches the GPU without a host wait)."""
    return new.pin_memory() if source.device.type == "cpu" and source.is_pinned() else new


class NoRecord:
    """What FreeCureFoundationSampler outputs as FREECURE_KV when recording is off."""

    def __repr__(self) -> str:
        return "NoRecord()"


class ReplayMismatch(ValueError):
    """The replay run differs from the recorded foundation run (seed, steps, sampler, size, layers...)."""


def describe_guidance(guidance: tuple) -> str:
    """'positive 3.5, negative 3.5' for RunSettings.guidance ((positive values), (negative values))."""
    def values(vs):
        return "/".join("none" if v is None else f"{v:g}" for v in vs) or "none"
    return ", ".join(f"{name} {values(vs)}" for name, vs in zip(("positive", "negative"), guidance))


@dataclass(frozen=True)
class RunSettings:
    """What steers FD's trajectory besides the noise, the input latent and the sigma schedule (checked by replay).

    cfg; guidance: the FLUX guidance of each entry of the foundation positive and negative conditioning (None where an
    entry has none, e.g. SD models), or None when unknown; sampler: the sampler with its options (two runs with the
    same sigmas but another sampler or eta follow other trajectories); seed: ancestral and SDE samplers draw their
    per-step noise from it; denoise_mask_id: the fingerprint of the latent's noise_mask ('' without one)."""
    cfg: float
    guidance: tuple | None = None
    sampler: str = ""
    seed: int | None = None
    denoise_mask_id: str = ""

    def mismatch(self, run: "RunSettings") -> str | None:
        """Why a replay run with settings `run` cannot use a record made with these, both values named, else None."""
        if self.seed is not None and run.seed is not None and int(self.seed) != int(run.seed):
            return (f"this run's seed is {run.seed} but the foundation record was made with seed {self.seed}, so the "
                    f"initial noise differs (and so does any per-step noise). {_FIX}")
        if self.sampler and run.sampler and self.sampler != run.sampler:
            return f"this run samples with {run.sampler} but the foundation record was made with {self.sampler}. {_FIX}"
        if not math.isclose(float(self.cfg), float(run.cfg), rel_tol=1e-9, abs_tol=1e-12):
            return (f"this run's cfg is {run.cfg:g} but the foundation record was made at cfg {self.cfg:g}, and FD's "
                    f"trajectory depends on it. {_FIX}")
        if self.guidance is not None and run.guidance is not None and self.guidance != run.guidance:
            return (f"the foundation conditioning (fd_positive, fd_negative) carries FLUX guidance "
                    f"{describe_guidance(run.guidance)} here but the record was made at "
                    f"{describe_guidance(self.guidance)}. Give stage 1's positive/negative and this sampler's "
                    f"fd_positive/fd_negative the same Flux Guidance value")
        if self.denoise_mask_id != run.denoise_mask_id:
            return (f"the latent's denoise mask (noise_mask) differs from the recorded foundation run's "
                    f"({'none' if not run.denoise_mask_id else 'another mask'} here, "
                    f"{'none' if not self.denoise_mask_id else 'a mask'} there). {_FIX}")
        return None


@dataclass
class RecordInfo:
    """What a record was made with; a replay must match it."""
    kind: str
    rows: tuple[str, ...]
    family: str
    site_keys: tuple[tuple[str, int, int], ...]
    site_tokens: dict = field(default_factory=dict)  # site key -> (h, w) grid
    latent_shape: tuple[int, ...] = ()
    sigmas: tuple[float, ...] = ()
    noise_id: str = ""
    latent_id: str = ""
    weights_id: str = ""
    eval_sigmas: list[float] = field(default_factory=list)
    settings: RunSettings | None = None
    # evaluation index -> {row label ("cond", "cond.1", ...): structure of that conditioning entry (its "area" or
    # None, "mask", "default")}, the FD entries each row label stands for (kept by the recording run)
    cond_layout: dict = field(default_factory=dict)


_FIX = "Use the same seed, steps, cfg, sampler, scheduler, denoise, size and batch as FreeCureFoundationSampler."


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= SIGMA_RTOL * max(1.0, abs(a), abs(b))


class FasaRecord:
    """The base of both records (SD UNet: KVStore, FLUX: flux.FluxRecord): FD tensors of one foundation sampling run,
    entries[(evaluation index, site, ...)] = tensors, the sigma of each model evaluation (a replay is checked against
    it), whether the record was compacted to the in-mask tokens, and the FD latent of the run. A replay that does not
    match raises ReplayMismatch."""

    ahead_copies = None  # a fasa.transfer copier class that copies one evaluation ahead on every device (tests)

    def __init__(self, eval_sigmas: list[float], offload: bool):
        self.offload = offload
        self.entries: dict[tuple, tuple[torch.Tensor, ...]] = {}
        self.eval_sigmas = eval_sigmas
        self.compacted = False
        self.fd_samples: torch.Tensor | None = None  # the FD latent of the recorded run
        self.read_bytes = 0  # bytes of record tensors served to FASA (what crosses to the GPU from CPU RAM)
        self.copied_bytes = 0  # bytes of those actually copied to another device
        self._unsettled = False  # device-to-host copies into pinned memory not yet waited for
        self._pending: dict[int, tuple[dict, object]] = {}  # eval index -> ({key: tensors on the GPU}, copy event)
        self._keys_by_eval: dict[int, list] | None = None
        self._copier = None  # fasa.transfer copier of the current replay, made on its first fetch

    # ---------------------------------------------------------------- traffic
    def keep(self, t: torch.Tensor, dtype=None) -> torch.Tensor:
        """A copy of t (in `dtype`, default its own) for the record: in CPU RAM when offloading, else on t's device.
        From a GPU into CPU RAM the copy goes to pinned memory without waiting for it (settle() waits once)."""
        t = t.detach()
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        if not self.offload:
            return t.clone()
        if t.device.type == "cuda":
            buf = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            buf.copy_(t, non_blocking=True)
            self._unsettled = True
            return buf
        return t.to("cpu", copy=True)

    def settle(self) -> None:
        """Wait (once, at the end of the recording run) for the copies keep() left in flight."""
        if self._unsettled:
            torch.cuda.synchronize()
            self._unsettled = False

    def fetch(self, key: tuple, device, dtype) -> tuple[torch.Tensor, ...] | None:
        """The tensors of entry `key` (its first item is the evaluation index) on `device` in `dtype`, or None.

        A record in CPU RAM served to a CUDA device is copied one evaluation ahead (fasa.transfer.StreamCopies): the
        first fetch of evaluation e starts the copies of e + 1, and the compute stream waits on an event, never the
        host. An entry may be fetched more than once in an evaluation (PD entries sharing one FD entry). Counts
        read_bytes (per fetch) and copied_bytes (per copy made)."""
        tensors = self.entries.get(key)
        if tensors is None:
            return None
        self.read_bytes += nbytes_of(tensors)
        device = torch.device(device)
        copier = self._copier_for(device, tensors[0].device)
        if copier is None:
            if tensors[0].device != device:
                self.copied_bytes += nbytes_of(tensors)
            return tuple(t.to(device=device, dtype=dtype, non_blocking=True) for t in tensors)
        ev = key[0]
        for e in [e for e in self._pending if e < ev]:
            del self._pending[e]  # evaluations are read in order: earlier copies are done with
        self._prefetch(ev, copier, dtype)
        self._prefetch(ev + 1, copier, dtype)
        moved, event = self._pending[ev]
        out = copier.ready(moved[key], event)
        return out if dtype is None or out[0].dtype == dtype else tuple(t.to(dtype) for t in out)

    def _copier_for(self, device: torch.device, stored: torch.device):
        """The copier for one-evaluation-ahead copies to `device` (fasa.transfer), or None to copy directly: CUDA
        from CPU RAM gets StreamCopies; `ahead_copies`, when set, names the copier class for any device."""
        factory = self.ahead_copies
        if factory is None:
            if device.type != "cuda" or stored.type != "cpu":
                return None
            factory = StreamCopies
        if self._copier is None or self._copier.device != device or not isinstance(self._copier, factory):
            self._pending.clear()
            self._copier = factory(device)
        return self._copier

    def _prefetch(self, ev: int, copier, dtype) -> None:
        if ev in self._pending:
            return
        if self._keys_by_eval is None:
            self._keys_by_eval = {}
            for key in self.entries:
                self._keys_by_eval.setdefault(key[0], []).append(key)
        items = {key: self.entries[key] for key in self._keys_by_eval.get(ev, [])}
        self.copied_bytes += sum(nbytes_of(ts) for ts in items.values())
        self._pending[ev] = copier.start(items, dtype)

    def release(self) -> None:
        """Drop the copies made ahead (at the end of a replay run)."""
        self._pending.clear()
        self._copier = None

    def begin_eval(self, sigma: float) -> int:
        """Register the next model evaluation of the recorded run; returns its index."""
        self.eval_sigmas.append(float(sigma))
        return len(self.eval_sigmas) - 1

    def check_settings(self, run: RunSettings) -> None:
        """Raise ReplayMismatch naming the first RunSettings field where the replay differs from the record."""
        recorded = getattr(getattr(self, "info", None), "settings", None)
        problem = recorded.mismatch(run) if recorded is not None else None
        if problem:
            raise ReplayMismatch(f"FreeCure: {problem}")

    def nbytes(self) -> int:
        """Bytes held by the stored tensors."""
        return sum(nbytes_of(ts) for ts in self.entries.values())


class KVStore(FasaRecord):
    """The SD UNet record: FD attention inputs ("x") or keys/values ("kv") per (evaluation index, site key, row)."""

    def __init__(self, info: RecordInfo, offload: bool = True):
        if info.kind not in KINDS:
            raise ValueError(f"FreeCure: unknown store kind {info.kind!r}; use one of {KINDS}")
        super().__init__(info.eval_sigmas, offload)  # the same list: info.eval_sigmas stays the record's
        self.info = info
        # site key -> (B, M) key mask over the stored tokens (set by compaction), None = all tokens
        self.key_masks: dict[tuple, torch.Tensor] = {}

    # ---------------------------------------------------------------- recording
    def put(self, eval_index: int, site_key: tuple, row: str, tensors: tuple[torch.Tensor, ...]) -> None:
        """Store the tensors of one site/row at one evaluation (the first chunk seen wins)."""
        key = (eval_index, tuple(site_key), row)
        if key in self.entries:
            return
        self.entries[key] = tuple(self.keep(t) for t in tensors)

    # ---------------------------------------------------------------- replay
    def get(self, eval_index: int, site_key: tuple, row: str, device, dtype) -> tuple[torch.Tensor, ...] | None:
        """The stored tensors on `device`/`dtype`, or None when that entry was not recorded."""
        return self.fetch((eval_index, tuple(site_key), row), device, dtype)

    def key_mask(self, site_key: tuple, device) -> torch.Tensor | None:
        km = self.key_masks.get(tuple(site_key))
        return None if km is None else km.to(device)

    def check_eval(self, eval_index: int, sigma: float) -> None:
        """Raise ReplayMismatch unless evaluation `eval_index` of the replay is at the recorded sigma."""
        seq = self.info.eval_sigmas
        if eval_index >= len(seq):
            raise ReplayMismatch(f"FreeCure: the replay makes more model evaluations than the recorded foundation "
                                 f"run ({len(seq)}); the sampler or steps differ. {_FIX}")
        if not _close(seq[eval_index], float(sigma)):
            raise ReplayMismatch(f"FreeCure: model evaluation {eval_index} of the replay is at sigma {float(sigma):.6g} "
                                 f"but the recorded foundation run was at {seq[eval_index]:.6g}; the sampler, "
                                 f"scheduler, steps or denoise differ. {_FIX}")

    def check_compatible(self, *, latent_shape, sigmas, noise_id, latent_id, site_keys, rows_needed,
                         weights_id: str, family: str) -> None:
        """Raise ReplayMismatch (with the fix) unless this store can serve the described replay run."""
        info = self.info
        if family != info.family:
            raise ReplayMismatch(f"FreeCure: the K/V record is from a {info.family} model but the personalized "
                                 f"model is {family}. Record with the same base model.")
        if tuple(latent_shape) != tuple(info.latent_shape):
            raise ReplayMismatch(f"FreeCure: the K/V record is for a latent of shape {tuple(info.latent_shape)} "
                                 f"but this run samples {tuple(latent_shape)}. {_FIX}")
        if len(sigmas) != len(info.sigmas) or not all(_close(a, b) for a, b in zip(sigmas, info.sigmas)):
            raise ReplayMismatch(f"FreeCure: the sigma schedule differs from the recorded foundation run "
                                 f"({len(info.sigmas) - 1} vs {len(sigmas) - 1} steps or another scheduler/denoise). {_FIX}")
        if noise_id != info.noise_id:
            raise ReplayMismatch(f"FreeCure: the initial noise differs from the recorded foundation run "
                                 f"(another seed or batch). {_FIX}")
        if latent_id != info.latent_id:
            raise ReplayMismatch(f"FreeCure: the input latent differs from the recorded foundation run. {_FIX}")
        missing = [k for k in site_keys if tuple(k) not in set(map(tuple, info.site_keys))]
        if missing:
            raise ReplayMismatch(f"FreeCure: the K/V record lacks FASA layers {missing}; record with the same "
                                 f"layers setting on FreeCureFoundationSampler as on FreeCureFASAConfig.")
        lacking = [r for r in rows_needed if r not in info.rows]
        if lacking:
            raise ReplayMismatch("FreeCure: uncond_blend > 0 needs the unconditional K/V, which was not recorded; "
                                 "set record to 'cond+uncond' on FreeCureFoundationSampler or use uncond_blend 0.")
        if info.kind == "x" and weights_id != info.weights_id:
            raise ReplayMismatch("FreeCure: the record holds attention inputs, which can only be replayed on a "
                                 "model with the same weights as the foundation model (a LoRA or weight patch "
                                 "differs). Set store to 'kv' on FreeCureFoundationSampler.")

    # ---------------------------------------------------------------- compaction
    def compacted_copy(self, row_masks_by_site: dict[tuple, torch.Tensor]) -> "KVStore":
        """A new store holding only the tokens inside the mask (the original is left untouched).

        row_masks_by_site: site key -> (B or 1, N) mask weights in [0, 1] over that site's tokens. Tokens above 0
        in any row's mask are kept; the per-row weights over the kept tokens are stored for FASA.
        """
        out = KVStore(replace(self.info, eval_sigmas=list(self.info.eval_sigmas)), offload=self.offload)
        out.compacted = True
        index_by_site = {}
        for site_key, rows in row_masks_by_site.items():
            weights = rows.float().clamp(0.0, 1.0)
            union = (weights > 0).any(dim=0)
            idx = union.nonzero().squeeze(1)
            index_by_site[tuple(site_key)] = idx
            out.key_masks[tuple(site_key)] = weights[:, idx]
        for (ev, site_key, row), tensors in self.entries.items():
            idx = index_by_site.get(site_key)
            if idx is None:
                continue
            if (self.info.cond_layout.get(ev, {}).get(row) or {}).get("area") is not None:
                out.entries[(ev, site_key, row)] = tensors  # an area cond's tokens are on its crop's grid: kept whole
                continue
            out.entries[(ev, site_key, row)] = tuple(pinned_like(t.index_select(1, idx.to(t.device)), t)
                                                     for t in tensors)
        return out

    def __repr__(self) -> str:
        i = self.info
        return (f"KVStore(kind={i.kind}, rows={i.rows}, layers={len(i.site_keys)}, evals={len(i.eval_sigmas)}, "
                f"latent={tuple(i.latent_shape)}, {self.nbytes() / 2**20:.1f} MiB{', compacted' if self.compacted else ''})")
