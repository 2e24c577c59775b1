"""FASA as ComfyUI attn1 patches, scoped to one sampling run.

`FasaRun` holds everything one run needs (chosen sites, masks, omega, sigma window, the FD source);
the guiders create it, put patches that close over it into a *copy* of the model options for each
model call, and drop it when sampling ends or is interrupted. Nothing is stored on the MODEL.
"""
from __future__ import annotations

import torch

import comfy.ldm.modules.attention as comfy_attention
import comfy.model_patcher

from ..fasa.accounting import FasaAccount
from ..fasa.attention import fasa_attention
from ..fasa.record import KVStore
from ..fasa.layers import Site
from ..fasa.masks import TokenMasks

# calc_cond_batch gives each chunk the index of its cond list: the guiders pass [positive, negative].
ROW_BY_INDEX = {0: "cond", 1: "uncond"}


def plain_attention(q, k, v, extra_options):
    """Exactly what ComfyUI's CrossAttention computes for attn1 (same backend, same precision)."""
    return comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"],
                                               attn_precision=extra_options.get("attn_precision"),
                                               transformer_options=extra_options)


def _chunks(extra_options, q):
    cou = extra_options["cond_or_uncond"]
    rows = q.shape[0] // len(cou)
    return [(ROW_BY_INDEX.get(c), slice(i * rows, (i + 1) * rows)) for i, c in enumerate(cou)], rows


class FasaRun:
    """Per-run FASA state shared by one guider and its patches.

    mode "lockstep": FD keys/values of the current evaluation are kept in `fd` by the FD call and
    consumed by the PD call. mode "replay": they come from a (compacted) KVStore. mode "record":
    the FD-only stage-1 run writes them into `store`.
    """

    def __init__(self, sites: list[Site], mode: str, *, omega: float = 0.0, uncond_blend: float = 0.0,
                 token_masks: TokenMasks | None = None, sigma_start: float = float("inf"), sigma_end: float = 0.0,
                 store: KVStore | None = None, record_rows: tuple[str, ...] = ("cond",), modules: dict | None = None):
        self.sites = {s.key: s for s in sites}
        self.mode = mode
        self.omega = float(omega)
        self.uncond_blend = float(uncond_blend)
        self.token_masks = token_masks
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.store = store
        self.record_rows = record_rows
        self.modules = modules or {}
        self.fd: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.eval_index = -1
        self.active = False
        self.fasa_calls = 0  # attention calls where FASA changed rows (for tests and the benchmark)
        self.account: FasaAccount | None = None  # set by the stage-3 guiders: where FASA acted vs should have

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
        self.store = None
        self.modules = {}

    def consume_rows(self) -> tuple[str, ...]:
        return ("cond", "uncond") if self.uncond_blend > 0 else ("cond",)

    # ------------------------------------------------------------------ FD source
    def _fd_source(self, site: Site, row: str, grid, rows: int, q):
        """(k_fd, v_fd, key_mask) for one chunk, or None when no FD key is inside the mask."""
        if self.mode == "lockstep":
            got = self.fd.get((site.key, row))
            if got is None:
                return None
            k_fd, v_fd = got
            key_mask = self.token_masks.at(grid).to(q.device)
            if key_mask.shape[1] != k_fd.shape[1]:
                raise ValueError(f"FreeCure: mask grid {grid} does not match {k_fd.shape[1]} tokens at {site.label()}")
        else:
            got = self.store.get(self.eval_index, site.key, row, q.device, q.dtype)
            if got is None:  # FD had no such row at this evaluation (e.g. a timestep-ranged cond): as lockstep
                return None
            if self.store.info.kind == "x":
                attn1 = self.modules[site.key]
                k_fd, v_fd = attn1.to_k(got[0]), attn1.to_v(got[0])
            else:
                k_fd, v_fd = got
            key_mask = self.store.key_mask(site.key, q.device)
            if key_mask is None:
                key_mask = self.token_masks.at(grid).to(q.device)
        if not bool((key_mask > 0).any()):
            return None
        if key_mask.shape[0] not in (1, rows):
            raise ValueError(f"FreeCure: {key_mask.shape[0]} masks for a batch of {rows} images")
        return k_fd, v_fd, key_mask

    # ------------------------------------------------------------------ patches
    def consume_patch(self, site: Site):
        """attn1 replace for the PD branch: FASA on PD rows, plain attention elsewhere."""
        def fasa_attn1(q, k, v, extra_options):
            if not self.active:
                return plain_attention(q, k, v, extra_options)
            chunks, rows = _chunks(extra_options, q)
            grid = tuple(extra_options["activations_shape"][-2:])
            wanted = self.consume_rows()
            fasa = {}
            for i, (row, sl) in enumerate(chunks):
                if row in wanted and i not in fasa:
                    src = self._fd_source(site, row, grid, rows, q)
                    if src is not None:
                        fasa[i] = fasa_attention(q[sl], k[sl], v[sl], src[0], src[1], src[2], self.omega,
                                                 extra_options["n_heads"])
            if not fasa:
                return plain_attention(q, k, v, extra_options)
            self.fasa_calls += 1
            if self.account is not None:
                self.account.hit(site.label())
            plain_ids = [i for i, (row, _) in enumerate(chunks) if i not in fasa or row == "uncond"]
            out = torch.empty_like(q)
            if plain_ids:
                sel = torch.cat([torch.arange(rows * i, rows * (i + 1)) for i in plain_ids]).to(q.device)
                plain = plain_attention(q.index_select(0, sel), k.index_select(0, sel), v.index_select(0, sel),
                                        extra_options)
                out.index_copy_(0, sel, plain.to(q.dtype))
            for i, result in fasa.items():
                row, sl = chunks[i]
                if row == "uncond":
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
                chunks, _ = _chunks(extra_options, q)
                for row, sl in chunks:
                    if row in self.record_rows:
                        self._keep(site, row, (k[sl], v[sl]))
            return plain_attention(q, k, v, extra_options)
        return record_attn1

    def record_input_patch(self):
        """attn1_patch for the FD branch: keeps the attn1 input hidden states of the FASA sites."""
        def record_attn1_input(n, context, value, extra_options):
            block = extra_options.get("block")
            key = None if block is None else (block[0], block[1], extra_options.get("block_index", 0))
            site = self.sites.get(key)
            if site is not None:
                chunks, _ = _chunks(extra_options, n)
                for row, sl in chunks:
                    if row in self.record_rows:
                        self._keep(site, row, (n[sl],))
            return n, context, value
        return record_attn1_input

    def _keep(self, site: Site, row: str, tensors):
        if self.mode == "record":
            self.store.put(self.eval_index, site.key, row, tensors)
        else:
            self.fd.setdefault((site.key, row), tensors)

    # ------------------------------------------------------------------ model options
    def with_consume(self, model_options: dict) -> dict:
        """A copy of model_options with the FASA replaces on every chosen site."""
        return _with_attn1_replaces(model_options, {k: self.consume_patch(s) for k, s in self.sites.items()})

    def with_record(self, model_options: dict, kind: str) -> dict:
        """A copy of model_options that records FD keys/values ("kv") or attn1 inputs ("x")."""
        if kind == "x":
            opts = comfy.model_patcher.create_model_options_clone(model_options)
            patches = opts.setdefault("transformer_options", {}).setdefault("patches", {})
            patches["attn1_patch"] = list(patches.get("attn1_patch", [])) + [self.record_input_patch()]
            return opts
        return _with_attn1_replaces(model_options, {k: self.record_kv_patch(s) for k, s in self.sites.items()})


def _with_attn1_replaces(model_options: dict, patches: dict) -> dict:
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    replaces = opts.setdefault("transformer_options", {}).setdefault("patches_replace", {}).setdefault("attn1", {})
    replaces.update(patches)
    return opts
