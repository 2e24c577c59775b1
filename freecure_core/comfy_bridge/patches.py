"""FASA as ComfyUI attn1 patches, scoped to one sampling run.

`FasaRun` holds everything one run needs (chosen sites, masks, omega, sigma window, the FD source);
the guiders create it, put patches that close over it into a *copy* of the model options for each
model call, and drop it when sampling ends or is interrupted. Nothing is stored on the MODEL.

Several positive conditionings (ConditioningCombine, area and mask conds) each become their own chunk
of a model call. A calc_cond_batch wrapper reads, at every evaluation, which entries of each list are
active (their timestep range holds the sigma); the k-th active entry of a row has the label "cond"
(k = 0) or "cond.k", and PD chunk "cond.k" attends to FD chunk "cond.k" when both branches have the
same active entries (the same areas and masks, in order). One FD entry without an area is shared by
PD entries without areas; any other difference is refused, naming it. An area cond's chunk is the
latent cropped to its area, so its FASA mask is the mask cropped to that area and resampled to the
crop's token grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_patcher
import comfy.patcher_extension

from ..fasa.accounting import FasaAccount
from ..fasa.attention import fasa_attention
from ..fasa.record import KVStore, ReplayMismatch, tensor_fingerprint
from ..fasa.layers import Site
from ..fasa.masks import TokenMasks, crop_mask, resample_mask
from ..fasa.selection import KeySelection, select_keys
from .checks import FreeCureConflict

# calc_cond_batch gives each chunk the index of its cond list: the guiders pass [positive, negative].
ROW_BY_INDEX = {0: "cond", 1: "uncond"}
# What the rows are called on FreeCure Sampler / FreeCure Guider, per branch (for messages).
_LIST_NAMES = {"pd": {"cond": "positive", "uncond": "negative"},
               "fd": {"cond": "fd_positive", "uncond": "fd_negative"},
               "record": {"cond": "the kv record's positive", "uncond": "the kv record's negative"}}
_WRAPPER_KEY = "freecure_cond_layout"


def plain_attention(q, k, v, extra_options):
    """Exactly what ComfyUI's CrossAttention computes for attn1 (same backend, same precision)."""
    return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"],
                                               attn_precision=extra_options.get("attn_precision"),
                                               transformer_options=extra_options)


@dataclass(frozen=True)
class Chunk:
    """One conditioning entry's rows in a model call: its row ("cond"/"uncond"), pairing label (None when
    unknown), area (h, w, y, x) in latent cells (None = whole latent) and batch slice."""
    row: str | None
    label: str | None
    area: tuple | None
    rows: slice


def chunk_area(entry: dict, latent_hw) -> tuple | None:
    """The (h, w, y, x) latent region an area cond is evaluated on, clamped as calc_cond_batch does; None without."""
    if "area" not in entry:
        return None
    area = list(entry["area"])
    dims = len(latent_hw)
    while len(area) // 2 < dims:  # ComfyUI's add_area_dims: a 2-D area on a deeper latent covers the extra dims
        area = [2147483648] + area[:len(area) // 2] + [0] + area[len(area) // 2:]
    if len(area) // 2 > dims:
        area = area[:dims] + area[len(area) // 2:len(area) // 2 + dims]
    for i in range(dims):
        area[i] = min(int(latent_hw[i]) - int(area[dims + i]), int(area[i]))
    return tuple(int(area[i]) for i in (dims - 2, dims - 1, 2 * dims - 2, 2 * dims - 1))


def entry_active(entry: dict, timestep) -> bool:
    """Whether calc_cond_batch evaluates this entry at `timestep` (its timestep range holds the sigma)."""
    if "timestep_start" in entry and timestep[0] > entry["timestep_start"]:
        return False
    if "timestep_end" in entry and timestep[0] < entry["timestep_end"]:
        return False
    return True


def describe_entry(sig: dict) -> str:
    """A conditioning entry's structure in words (areas in pixels of an SD latent: 8 per cell)."""
    parts = []
    if sig["area"] is not None:
        h, w, y, x = sig["area"]
        parts.append(f"area {w * 8}x{h * 8} px at x={x * 8}, y={y * 8}")
    if sig["mask"]:
        parts.append(f"mask {sig['mask'][:8]}")
    if sig["default"]:
        parts.append("default")
    return " + ".join(parts) or "whole image"


def _describe_row(sigs: list[dict]) -> str:
    n = len(sigs)
    return f"{n} active entr{'y' if n == 1 else 'ies'} [{'; '.join(describe_entry(s) for s in sigs)}]"


def _labels(row: str, n: int) -> list[str]:
    return [row if k == 0 else f"{row}.{k}" for k in range(n)]


class _Layout:
    """The active conditioning entries of one branch at one calc_cond_batch call: their pairing labels and
    areas by (cond index, uuid), and their structure by row."""

    def __init__(self, conds, x_in, timestep, mask_fingerprint):
        latent_hw = tuple(int(d) for d in x_in.shape[2:])
        self.latent_hw = latent_hw
        self.fd_label: dict | None = None  # PD only: {PD label: FD label}, set when the FD entries are known
        self.chunks: dict[tuple, tuple[str, tuple | None]] = {}
        self.rows: dict[str, list[dict]] = {}
        self.uuids: dict[str, dict] = {}  # row -> {uuid: entry} of every entry, active or not
        for index, entries in enumerate(conds):
            row = ROW_BY_INDEX.get(index)
            if entries is None or row is None:
                continue
            self.uuids[row] = {e.get("uuid"): e for e in entries}
            active = [e for e in entries if entry_active(e, timestep)]
            sigs = [{"area": chunk_area(e, latent_hw), "default": "default" in e,
                     "mask": mask_fingerprint(e["mask"]) if "mask" in e else ""} for e in active]
            self.rows[row] = sigs
            for label, entry, sig in zip(_labels(row, len(active)), active, sigs):
                self.chunks[(index, entry.get("uuid"))] = (label, sig["area"])

    def by_label(self, rows) -> dict[str, dict]:
        """{label: structure} of the given rows (what a record keeps per evaluation)."""
        return {label: sig for row in rows for label, sig in zip(_labels(row, len(self.rows.get(row, []))),
                                                                 self.rows.get(row, []))}


def _row_structure(by_label: dict, row: str) -> list[dict]:
    out = []
    while (row if not out else f"{row}.{len(out)}") in by_label:
        out.append(by_label[row if not out else f"{row}.{len(out)}"])
    return out


class FasaRun:
    """Per-run FASA state shared by one guider and its patches.

    mode "lockstep": FD keys/values of the current evaluation are kept in `fd` by the FD call and
    consumed by the PD call. mode "replay": they come from a (compacted) KVStore. mode "record":
    the FD-only stage-1 run writes them into `store`. Either way they are keyed by (site, chunk label).
    """

    def __init__(self, sites: list[Site], mode: str, *, omega: float = 0.0, uncond_blend: float = 0.0,
                 token_masks: TokenMasks | None = None, sigma_start: float = float("inf"), sigma_end: float = 0.0,
                 store: KVStore | None = None, record_rows: tuple[str, ...] = ("cond",), modules: dict | None = None,
                 kernel: str = "auto"):
        self.sites = {s.key: s for s in sites}
        self.mode = mode
        self.omega = float(omega)
        self.uncond_blend = float(uncond_blend)
        self.token_masks = token_masks
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.store = store
        self.record_rows = record_rows
        self.modules = modules or {}
        self.kernel = kernel  # fasa.kernel's choice ("auto": the fast kernel for the device and dtype)
        # read once here (the mask lives on the CPU): whether any mask weight is above 0
        self._mask_empty = token_masks is None or token_masks.is_empty()
        self._selections: dict[tuple, KeySelection] = {}  # the FD keys per grid/area/site and device, once per run
        self._row_index: dict[tuple, torch.Tensor] = {}  # batch row indices on the device, per chunk set
        self.fd: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.eval_index = -1
        self.active = False
        self.fasa_calls = 0  # attention calls where FASA changed rows (for tests and the benchmark)
        self.account: FasaAccount | None = None  # set by the stage-3 guiders: where FASA acted vs should have
        self.layouts: dict[str, _Layout] = {}  # "pd"/"fd": the branch's active conditioning entries, this call
        self._mask_prints: dict[int, tuple[torch.Tensor, str]] = {}
        self._area_masks: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ per evaluation
    def begin_eval(self, sigma: float) -> None:
        """Start the next model evaluation at noise level `sigma`."""
        self.eval_index += 1
        self.active = self.sigma_end <= sigma <= self.sigma_start
        self.fd.clear()
        if self.account is not None:
            self.account.begin_eval(self.active)

    def end(self) -> None:
        """Drop every tensor this run holds."""
        self.fd.clear()
        if self.store is not None and self.mode == "replay":
            self.store.release()
        self.store = None
        self.modules = {}
        self.layouts.clear()
        self._mask_prints.clear()
        self._area_masks.clear()
        self._selections.clear()
        self._row_index.clear()

    def consume_rows(self) -> tuple[str, ...]:
        return ("cond", "uncond") if self.uncond_blend > 0 else ("cond",)

    # ------------------------------------------------------------------ conditioning entries
    def _mask_fingerprint(self, mask: torch.Tensor) -> str:
        got = self._mask_prints.get(id(mask))
        if got is None or got[0] is not mask:
            got = self._mask_prints[id(mask)] = (mask, tensor_fingerprint(mask))
        return got[1]

    def layout_wrapper(self, branch: str):
        """calc_cond_batch wrapper: notes the branch's active conditioning entries before its chunks run; on the PD
        branch it pairs them with FD's, the record keeps FD's per evaluation."""
        def freecure_cond_layout(executor, model, conds, x_in, timestep, model_options):
            layout = _Layout(conds, x_in, timestep, self._mask_fingerprint)
            if self.mode == "record" and self.store is not None:
                self.store.info.cond_layout.setdefault(self.eval_index, layout.by_label(self.record_rows))
            elif branch == "pd":
                layout.fd_label = self._pair(layout)
            self.layouts[branch] = layout
            return executor(model, conds, x_in, timestep, model_options)
        return freecure_cond_layout

    def _fasa_may_act(self) -> bool:
        return self.active and not self._mask_empty

    def _fd_structure(self):
        """(FD's active entries by row, its side's name, the error type), or None when FD's are not known."""
        if self.mode == "lockstep":
            fd = self.layouts.get("fd")
            return None if fd is None else (fd.rows, "fd", FreeCureConflict)
        recorded = getattr(self.store.info, "cond_layout", {}).get(self.eval_index) if self.store else None
        if recorded is None:
            return None
        return {row: _row_structure(recorded, row) for row in self.consume_rows()}, "record", ReplayMismatch

    def _pair(self, pd: _Layout) -> dict | None:
        """{PD label: FD label} for this call, None when FD's entries are unknown (each label then pairs with the same
        label). Identical structures pair entry k with entry k; one FD entry without an area is shared by PD entries
        without areas (PhotoMaker's two timestep ranges meet at one step). Otherwise, where FASA would act, the run is
        refused naming what differs."""
        known = self._fd_structure()
        if known is None:
            return None
        fd_rows, fd_side, error = known
        pairs = {}
        for row in self.consume_rows():
            mine, theirs = pd.rows.get(row, []), fd_rows.get(row, [])
            labels = _labels(row, len(mine))
            if mine == theirs:
                pairs.update(zip(labels, labels))
            elif len(theirs) == 1 and theirs[0]["area"] is None and all(s["area"] is None for s in mine):
                pairs.update((label, row) for label in labels)
            elif self._fasa_may_act():
                raise error(
                    f"FreeCure: FASA pairs the personalized and foundation conditionings entry by entry "
                    f"(ConditioningCombine, area and mask conds; one foundation entry without an area is shared by "
                    f"personalized entries without areas), but at this step {_LIST_NAMES['pd'][row]} has "
                    f"{_describe_row(mine)} and {_LIST_NAMES[fd_side][row]} has {_describe_row(theirs)}. Build "
                    f"both branches' conditionings the same way (the same Combine / Set Area / Set Mask nodes, "
                    f"areas, masks and timestep ranges), or give an empty mask to sample without FASA.")
        self._check_no_copied_area(pd)
        return pairs

    def _check_no_copied_area(self, pd: _Layout) -> None:
        """Lockstep: refuse an area cond that is on one branch's positive only. ComfyUI gives every conditioning list
        of a sampler a copy of each area cond another list lacks (same uuid), so FD would sample that area too."""
        fd = self.layouts.get("fd") if self.mode == "lockstep" else None
        if fd is None or not self._fasa_may_act():
            return
        mine, theirs = pd.uuids.get("cond", {}), fd.uuids.get("cond", {})
        for uid in mine.keys() & theirs.keys():
            area = chunk_area(mine[uid], pd.latent_hw)
            where = describe_entry({"area": area, "mask": "", "default": False})
            raise FreeCureConflict(
                f"FreeCure: the {where} conditioning is on one branch only, and ComfyUI then copies it into the other "
                f"branch's conditionings, so positive and fd_positive no longer match. Give both the same Set Area "
                f"nodes (the same areas), or give an empty mask to sample without FASA.")

    def chunks(self, extra_options, q, branch: str) -> tuple[list[Chunk], int]:
        """The chunks of one model call (as calc_cond_batch batched them) and the rows per chunk; on the PD branch a
        chunk's label is that of its FD partner (None: no partner)."""
        cou = extra_options["cond_or_uncond"]
        rows = q.shape[0] // len(cou)
        uuids = extra_options.get("uuids")
        layout = self.layouts.get(branch) if uuids is not None else None
        uuids = uuids if uuids is not None else [None] * len(cou)
        out = []
        for i, (c, uid) in enumerate(zip(cou, uuids)):
            row = ROW_BY_INDEX.get(c)
            # without a layout (a calc_cond_batch that skipped the wrappers) each row is one entry, as before
            label, area = layout.chunks.get((c, uid), (None, None)) if layout is not None else (row, None)
            if layout is not None and layout.fd_label is not None:
                label = layout.fd_label.get(label)
            out.append(Chunk(row, label, area, slice(i * rows, (i + 1) * rows)))
        return out, rows

    def _area_key_mask(self, area, grid, latent_hw) -> torch.Tensor:
        key = (area, tuple(grid), tuple(latent_hw))
        if key not in self._area_masks:
            cropped = crop_mask(self.token_masks.mask, area, latent_hw)
            self._area_masks[key] = resample_mask(cropped, grid, self.token_masks.mode)
        return self._area_masks[key]

    def _key_mask(self, chunk: Chunk, grid) -> torch.Tensor:
        if chunk.area is None:
            return self.token_masks.at(grid)
        return self._area_key_mask(chunk.area, grid, self.layouts["pd"].latent_hw)

    # ------------------------------------------------------------------ FD source
    def _selection(self, site: Site, chunk: Chunk, grid, device, compacted: bool) -> KeySelection:
        """The FD keys of this chunk's token grid (or of the site's compacted record), chosen once per run."""
        if compacted:
            key = ("site", site.key, str(device))
            if key not in self._selections:
                self._selections[key] = select_keys(self.store.key_masks[site.key], self.omega, device)
        else:
            key = ("grid", chunk.area, tuple(grid), str(device))
            if key not in self._selections:
                self._selections[key] = select_keys(self._key_mask(chunk, grid), self.omega, device)
        return self._selections[key]

    def _fd_source(self, site: Site, chunk: Chunk, grid, rows: int, q):
        """(k_fd, v_fd, key selection) for one chunk, or None when no FD key is inside the mask. No host sync: the
        selection is worked out on the first call per grid and kept on the device."""
        if self.mode == "lockstep":
            got = self.fd.get((site.key, chunk.label))
            if got is None:
                return None
            k_fd, v_fd = got
            selection = self._selection(site, chunk, grid, q.device, compacted=False)
            if selection.n_keys != k_fd.shape[1]:
                raise ValueError(f"FreeCure: mask grid {grid} does not match {k_fd.shape[1]} tokens at {site.label()}")
        else:
            if self._mask_empty:
                return None
            got = self.store.get(self.eval_index, site.key, chunk.label, q.device, q.dtype)
            if got is None:  # FD had no such row at this evaluation (e.g. a timestep-ranged cond): as lockstep
                return None
            if self.store.info.kind == "x":
                attn1 = self.modules[site.key]
                k_fd, v_fd = attn1.to_k(got[0]), attn1.to_v(got[0])
            else:
                k_fd, v_fd = got
            # an area chunk's record is kept whole (compaction uses the whole-image token grid)
            compacted = chunk.area is None and site.key in self.store.key_masks
            selection = self._selection(site, chunk, grid, q.device, compacted)
        if not selection.any:
            return None
        selection.check_batch(rows)
        return k_fd, v_fd, selection

    def _rows_index(self, ids: tuple, rows: int, device) -> torch.Tensor:
        """The batch rows of chunks `ids` (rows per chunk) as an index on `device`, built once per run."""
        key = (ids, rows, str(device))
        if key not in self._row_index:
            self._row_index[key] = torch.cat([torch.arange(rows * i, rows * (i + 1)) for i in ids]).to(device)
        return self._row_index[key]

    # ------------------------------------------------------------------ patches
    def consume_patch(self, site: Site):
        """attn1 replace for the PD branch: FASA on PD rows, plain attention elsewhere."""
        def fasa_attn1(q, k, v, extra_options):
            if not self.active:
                return plain_attention(q, k, v, extra_options)
            chunks, rows = self.chunks(extra_options, q, "pd")
            grid = tuple(extra_options["activations_shape"][-2:])
            wanted = self.consume_rows()
            fasa = {}
            for i, chunk in enumerate(chunks):
                if chunk.row in wanted and chunk.label is not None:
                    src = self._fd_source(site, chunk, grid, rows, q)
                    if src is not None:
                        sl = chunk.rows
                        fasa[i] = fasa_attention(q[sl], k[sl], v[sl], src[0], src[1], None, self.omega,
                                                 extra_options["n_heads"], selection=src[2], kernel=self.kernel)
            if not fasa:
                return plain_attention(q, k, v, extra_options)
            self.fasa_calls += 1
            if self.account is not None:
                self.account.hit(site.label())
            plain_ids = [i for i, chunk in enumerate(chunks) if i not in fasa or chunk.row == "uncond"]
            out = torch.empty_like(q)
            if plain_ids:
                sel = self._rows_index(tuple(plain_ids), rows, q.device)
                plain = plain_attention(q.index_select(0, sel), k.index_select(0, sel), v.index_select(0, sel),
                                        extra_options)
                out.index_copy_(0, sel, plain.to(q.dtype))
            for i, result in fasa.items():
                chunk = chunks[i]
                sl = chunk.rows
                if chunk.row == "uncond":
                    b = self.uncond_blend
                    out[sl] = ((1.0 - b) * out[sl].float() + b * result.float()).to(q.dtype)
                else:
                    out[sl] = result
            return out
        return fasa_attn1

    def record_kv_patch(self, site: Site):
        """attn1 replace for the FD branch: keeps the FD keys/values, returns plain attention."""
        def record_attn1(q, k, v, extra_options):
            if self.mode == "record" or self.active:
                chunks, _ = self.chunks(extra_options, q, "fd")
                for chunk in chunks:
                    if chunk.row in self.record_rows and chunk.label is not None:
                        self._keep(site, chunk.label, (k[chunk.rows], v[chunk.rows]))
            return plain_attention(q, k, v, extra_options)
        return record_attn1

    def record_input_patch(self):
        """attn1_patch for the FD branch: keeps the attn1 input hidden states of the FASA sites."""
        def record_attn1_input(n, context, value, extra_options):
            block = extra_options.get("block")
            key = None if block is None else (block[0], block[1], extra_options.get("block_index", 0))
            site = self.sites.get(key)
            if site is not None:
                chunks, _ = self.chunks(extra_options, n, "fd")
                for chunk in chunks:
                    if chunk.row in self.record_rows and chunk.label is not None:
                        self._keep(site, chunk.label, (n[chunk.rows],))
            return n, context, value
        return record_attn1_input

    def _keep(self, site: Site, label: str, tensors):
        if self.mode == "record":
            self.store.put(self.eval_index, site.key, label, tensors)
        else:
            self.fd.setdefault((site.key, label), tensors)

    # ------------------------------------------------------------------ model options
    def with_consume(self, model_options: dict) -> dict:
        """A copy of model_options with the FASA replaces on every chosen site."""
        opts = _with_attn1_replaces(model_options, {k: self.consume_patch(s) for k, s in self.sites.items()})
        return self._with_layout(opts, "pd")

    def with_record(self, model_options: dict, kind: str) -> dict:
        """A copy of model_options that records FD keys/values ("kv") or attn1 inputs ("x")."""
        if kind == "x":
            opts = comfy.model_patcher.create_model_options_clone(model_options)
            patches = opts.setdefault("transformer_options", {}).setdefault("patches", {})
            patches["attn1_patch"] = list(patches.get("attn1_patch", [])) + [self.record_input_patch()]
        else:
            opts = _with_attn1_replaces(model_options, {k: self.record_kv_patch(s) for k, s in self.sites.items()})
        return self._with_layout(opts, "fd")

    def _with_layout(self, opts: dict, branch: str) -> dict:
        """opts (already a copy) with the calc_cond_batch wrapper that notes the branch's conditioning entries."""
        wrappers = opts.setdefault("transformer_options", {}).setdefault("wrappers", {})
        by_key = wrappers.setdefault(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, {})
        by_key[_WRAPPER_KEY] = [self.layout_wrapper(branch)]
        return opts


def _with_attn1_replaces(model_options: dict, patches: dict) -> dict:
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    replaces = opts.setdefault("transformer_options", {}).setdefault("patches_replace", {}).setdefault("attn1", {})
    replaces.update(patches)
    return opts
