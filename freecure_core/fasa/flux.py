"""What FASA needs to know about FLUX (method.md section 3.5), pure torch: the joint-attention row layout, the block
presets and the image-token grid. The kernel is the SD one (``attention.attend``), the record the shared base
(``record.FasaRecord``).

Row layout. FLUX attends over one sequence [text tokens; image tokens; reference image tokens] in both double- and
single-stream blocks; the reference image tokens are Kontext's / FLUX.2's input images (absent in plain FLUX.1).
The image tokens are the latent's ceil(h / p) x ceil(w / p) grid, p the model's patch size (2 for FLUX.1, 1 for
FLUX.2). FreeCure's rule for FLUX: the personalized branch's (PD) IMAGE queries attend to the PD keys (text, image and
reference image) plus the foundation branch's (FD) image keys, restricted to the attribute mask and boosted by omega
in log space; PD TEXT and REFERENCE IMAGE queries keep their plain attention (they never see FD keys). FD keys are
taken after RoPE from FD's own pass: FD and PD image tokens share the positional grid, so each FD key carries the
position of the PD key at the same place. An attention mask of the call (ComfyUI's ``attention_mask`` conditioning)
applies to the image rows over the PD keys as it does in plain attention, and each FD image key takes the mask's
column of the PD image key at its place. Layout: ComfyUI's FLUX attention layout (batch, heads, tokens, dim_head).

Blocks. Named ("double", i) for FLUX's double-stream blocks (separate text and image weights) and ("single", j) for
its single-stream blocks (one sequence), in call order. Presets:
- ``single``: every single-stream block — FLUX's later, appearance-forming part. FreeCure's own choice: the paper
  names no FLUX blocks and the FreeCure code has no FLUX (measured on a tiny FLUX-shaped model,
  ``bench/bench_flux_presets.py``; see the README);
- ``reference`` and ``decoder`` (the SD preset names) mean ``single`` on a FLUX model, so saved workflows keep their
  result; the guiders report the mapping (``preset_note``);
- ``all``: every block;
- custom: ``double:0-18, single:10-37`` (ranges inclusive; ``double`` or ``single`` alone = all of that kind).

Record. Stage 1 records FD image-token keys/values (after RoPE) per model evaluation and block, keyed explicitly by
(evaluation index, block) — never by a call counter — plus what the run was (sigmas, latent shape, noise, weights)
so a replay with other settings is refused by name.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from .kernel import attend
from .record import FasaRecord, ReplayMismatch, RunSettings, pinned_like
from .selection import KeySelection, select_keys

_ITEM = re.compile(r"^(double|single)(?::(\d+)(?:-(\d+))?)?$")


def token_grid(latent_shape, patch: int = 2) -> tuple[int, int]:
    """FLUX's image-token grid for a latent (B, C, h, w): ceil(h / patch) x ceil(w / patch), row-major."""
    h, w = latent_shape[-2:]
    return (-(-int(h) // patch), -(-int(w) // patch))


def logits_mask(mask: torch.Tensor, batch: int, heads: int, length: int) -> torch.Tensor:
    """An attention call's mask (bool: True = attend, or additive; (L, L), (B, L, L) or (B, 1|H, L|1, L), as
    ComfyUI's attention takes it) as an additive fp32 (B|1, H|1, L|1, L) bias; ValueError when it does not fit."""
    m = mask
    if m.dim() == 2:
        m = m[None]
    if m.dim() == 3:
        m = m[:, None]
    if m.dim() == 4 and m.shape[-1] == 1:  # one bias per query row: the same for every key
        m = m.expand(*m.shape[:3], length)
    if (m.dim() != 4 or m.shape[-1] != length or m.shape[-2] not in (1, length) or m.shape[0] not in (1, batch)
            or m.shape[1] not in (1, heads)):
        raise ValueError(f"FreeCure FLUX: the attention mask {tuple(mask.shape)} does not fit {batch} rows x {heads} "
                         f"heads x {length} tokens, so FASA cannot apply it to its image rows; remove the node that "
                         "sets attention_mask on the conditioning, or use a mask made for this image size")
    if m.dtype == torch.bool:
        return torch.zeros(m.shape, dtype=torch.float32, device=m.device).masked_fill(~m, float("-inf"))
    return m.float()


def image_rows_attention(q_img: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_fd: torch.Tensor,
                         v_fd: torch.Tensor, fd_bias, logit_bias: torch.Tensor | None = None, *,
                         kernel: str = "auto") -> torch.Tensor:
    """Image queries over [PD keys | FD keys] with fd_bias on the FD logits, one softmax (kernel.attend).

    q_img (B, H, N, D); k, v (B, H, L, D) (every PD key); k_fd, v_fd (B, H, M, D) (the FD image keys to add, M >= 0);
    fd_bias a float or a (B|1, M) per-key bias (omega + ln m, finite); logit_bias an optional (B|1, H|1, N|1, L + M)
    additive mask. Returns (B, H, N, D) in q_img's dtype."""
    if q_img.dim() != 4 or k.dim() != 4 or k_fd.dim() != 4:
        raise ValueError(f"FreeCure FLUX FASA: tensors must be (batch, heads, tokens, dim); got q {tuple(q_img.shape)}, "
                         f"k {tuple(k.shape)}, fd k {tuple(k_fd.shape)}")
    if k_fd.shape[:2] != q_img.shape[:2] or k_fd.shape[-1] != q_img.shape[-1] or k_fd.shape != v_fd.shape:
        raise ValueError(f"FreeCure FLUX FASA: foundation keys {tuple(k_fd.shape)} do not match the personalized "
                         f"queries {tuple(q_img.shape)} (same batch, heads and head size required)")
    return attend(q_img, k, v, k_fd, v_fd, fd_bias, kernel=kernel, logit_bias=logit_bias)


def flux_fasa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plain_out: torch.Tensor, n_txt: int, n_img: int,
              k_fd_img: torch.Tensor, v_fd_img: torch.Tensor, key_mask: torch.Tensor | None, omega: float, *,
              fd_index: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
              selection: KeySelection | None = None, kernel: str = "auto") -> torch.Tensor:
    """The attention output (B, L, H*D) with FASA on the image query rows n_txt .. n_txt + n_img.

    q, k, v (B, H, L, D), L = n_txt + n_img + reference image tokens (post-RoPE); plain_out (B, L, H*D) the plain
    attention output of these q, k, v (ComfyUI's own kernel: text rows, reference image rows and rows whose mask is
    empty are returned from it unchanged); k_fd_img, v_fd_img (B, H, M, D) FD image keys/values at the image-grid
    positions fd_index (M,) (default: all n_img positions in order); key_mask (B, M) or (M,) weights in [0, 1] (FD key
    bias omega + ln m, excluded at 0); attn_mask the call's attention mask (see logits_mask) or None. selection: the
    keys already chosen by selection.select_keys(key_mask, omega, device, positions=fd_index) (then key_mask, omega
    and fd_index are not read, and nothing here synchronises with the host); kernel: kernel.attend's choice."""
    b, h, length, d = q.shape
    m = k_fd_img.shape[2]
    if length < n_txt + n_img:
        raise ValueError(f"FreeCure FLUX: the attention sequence has {length} tokens, fewer than its {n_txt} text + "
                         f"{n_img} image tokens; this model lays out its tokens unlike FLUX.1, FLUX.2 or Kontext, "
                         "which FreeCure does not support")
    if selection is None:
        if not math.isfinite(float(omega)):
            raise ValueError(f"FreeCure FLUX FASA: omega must be finite, got {omega}")
        fd_index = torch.arange(n_img) if fd_index is None else fd_index.reshape(-1)
        if fd_index.numel() != m:
            raise ValueError(f"FreeCure FLUX FASA: {m} FD image keys but {fd_index.numel()} positions for them")
        rows = key_mask if key_mask.dim() == 2 else key_mask[None]
        if rows.dim() != 2 or rows.shape[1] != m or rows.shape[0] not in (1, b):
            raise ValueError(f"FreeCure FLUX FASA: mask {tuple(key_mask.shape)} does not fit {b} rows x {m} FD image "
                             "tokens")
        selection = select_keys(rows, omega, q.device, positions=fd_index)
    elif selection.n_keys != m:
        raise ValueError(f"FreeCure FLUX FASA: the key selection is over {selection.n_keys} FD image keys, the record "
                         f"has {m}")
    selection.check_batch(b)
    bias = None if attn_mask is None else logits_mask(attn_mask.to(q.device), b, h, length)
    img = slice(n_txt, n_txt + n_img)
    out = plain_out.clone()
    for g in selection.groups:
        sl = g.rows
        rows_b = b if sl == slice(None) else 1
        logit_bias = None
        if bias is not None:
            bi = bias if (bias.shape[0] == 1 or sl == slice(None)) else bias[sl]
            bi = bi[:, :, img] if bi.shape[2] > 1 else bi
            logit_bias = torch.cat([bi, bi.index_select(3, g.positions + n_txt)], dim=3)
        fasa = image_rows_attention(q[sl, :, img], k[sl], v[sl], k_fd_img[sl].index_select(2, g.index),
                                    v_fd_img[sl].index_select(2, g.index), g.fd_bias, logit_bias, kernel=kernel)
        out[sl, img] = fasa.transpose(1, 2).reshape(rows_b, n_img, h * d).to(out.dtype)
    return out


def all_blocks(n_double: int, n_single: int) -> list[tuple[str, int]]:
    """Every block in call order."""
    return [("double", i) for i in range(n_double)] + [("single", j) for j in range(n_single)]


def resolve_flux_layers(spec: str, n_double: int, n_single: int) -> list[tuple[str, int]]:
    """The blocks a layers setting names, in call order; ValueError naming a bad item or out-of-range index."""
    spec = (spec or "").strip().lower()
    if spec in ("single", "reference", "decoder"):
        return [("single", j) for j in range(n_single)]
    if spec == "all":
        return all_blocks(n_double, n_single)
    chosen = set()
    for raw in (s.strip() for s in spec.replace(";", ",").split(",")):
        if not raw:
            continue
        m = _ITEM.match(raw.replace(" ", ""))
        if not m:
            raise ValueError(f"FreeCure FLUX: layer item {raw!r} is not 'double', 'single', 'double:3' or "
                             f"'single:10-37' (this model has {n_double} double and {n_single} single blocks)")
        kind, a, b = m.group(1), m.group(2), m.group(3)
        count = n_double if kind == "double" else n_single
        lo, hi = (0, count - 1) if a is None else (int(a), int(b) if b is not None else int(a))
        if not 0 <= lo <= hi < count:
            raise ValueError(f"FreeCure FLUX: {raw!r} is out of range: this model has {count} {kind} blocks "
                             f"(0-{count - 1})")
        chosen.update((kind, i) for i in range(lo, hi + 1))
    if not chosen:
        raise ValueError("FreeCure FLUX: no block chosen; use single, all or e.g. 'single:10-37'")
    return [b for b in all_blocks(n_double, n_single) if b in chosen]


def preset_note(spec: str) -> str | None:
    """What an SD preset name means on a FLUX model ('reference', 'decoder' -> single), None for other settings."""
    name = (spec or "").strip().lower()
    if name in ("reference", "decoder"):
        return (f"layers '{name}' on a FLUX model = 'single' (every single-stream block): FreeCure's choice for FLUX, "
                "not the paper's or the FreeCure code's (neither names FLUX blocks)")
    return None


@dataclass(frozen=True)
class FluxRecordInfo:
    blocks: tuple          # (("double", i) | ("single", j), ...) recorded
    sigmas: tuple
    latent_shape: tuple
    noise_id: str
    latent_id: str
    weights_id: str
    settings: RunSettings | None = None  # cfg, guidance, sampler, seed, denoise mask (checked by replay)


class FluxRecord(FasaRecord):
    """The FLUX record: FD keys/values of the image tokens, entries[(eval_index, block)] = (k, v), each (B, H, M, D),
    stored in `dtype` (None, the default: the model's own, as the attention computed them)."""

    def __init__(self, info: FluxRecordInfo, offload: bool = True, dtype=None):
        super().__init__([], offload)
        self.info = info
        self.dtype = dtype

    def put(self, eval_index: int, block: tuple, k: torch.Tensor, v: torch.Tensor) -> None:
        self.entries[(eval_index, block)] = (self.keep(k, self.dtype), self.keep(v, self.dtype))

    def get(self, eval_index: int, block: tuple, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The FD keys/values of one evaluation and block, on `device` in `dtype` (default: as stored)."""
        if device is not None:
            got = self.fetch((eval_index, block), device, dtype)
            if got is not None:
                return got
        try:
            return self.entries[(eval_index, block)]
        except KeyError:
            raise ReplayMismatch(f"FreeCure FLUX: the stage-1 record has no keys for evaluation {eval_index} at "
                                 f"{block[0]} block {block[1]}; record stage 1 with the same layers, steps and "
                                 "sampler") from None

    def check_compatible(self, *, blocks, sigmas, latent_shape, noise_id, latent_id, weights_id=None) -> None:
        """ReplayMismatch naming the first difference between this record and a stage-3 run."""
        i = self.info
        missing = [b for b in blocks if b not in i.blocks]
        if missing:
            raise ReplayMismatch(f"FreeCure FLUX: stage 1 recorded {len(i.blocks)} blocks but FASA needs "
                                 f"{missing[0][0]} block {missing[0][1]}; use the same layers in both samplers")
        if tuple(latent_shape) != tuple(i.latent_shape):
            raise ReplayMismatch(f"FreeCure FLUX: replay latent {tuple(latent_shape)} differs from the record's "
                                 f"{tuple(i.latent_shape)}; use the same size and batch in stage 1 and stage 3")
        if len(sigmas) != len(i.sigmas) or any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(sigmas, i.sigmas)):
            raise ReplayMismatch("FreeCure FLUX: the replay's sigmas differ from the record's; use the same steps, "
                                 "scheduler and denoise in stage 1 and stage 3")
        if noise_id != i.noise_id:
            raise ReplayMismatch("FreeCure FLUX: the replay's noise differs from the record's; use the same seed")
        if latent_id != i.latent_id:
            raise ReplayMismatch("FreeCure FLUX: the replay's input latent differs from the record's")

    def check_eval(self, eval_index: int, sigma: float) -> None:
        """The replay's evaluation at `eval_index` must be at the sigma recorded there (same sampler)."""
        if eval_index >= len(self.eval_sigmas) or abs(self.eval_sigmas[eval_index] - sigma) > 1e-5 * max(1.0, sigma):
            raise ReplayMismatch(f"FreeCure FLUX: model evaluation {eval_index} is at sigma {sigma:.4g}, the record "
                                 "has another; use the same sampler in stage 1 and stage 3")

    def compacted_copy(self, masks: torch.Tensor) -> "FluxRecord":
        """A copy keeping only the image tokens where any row of `masks` (B, M) is above 0 (one index set for every
        row; the kept token indices in `kept`)."""
        keep = (masks > 0).any(0).nonzero().squeeze(1)
        out = FluxRecord(self.info, self.offload, self.dtype)
        out.compacted = True
        out.eval_sigmas, out.fd_samples = list(self.eval_sigmas), self.fd_samples
        out.entries = {key: (pinned_like(k.index_select(2, keep.to(k.device)), k),
                             pinned_like(v.index_select(2, keep.to(v.device)), v))
                       for key, (k, v) in self.entries.items()}
        out.kept = keep
        return out
