"""Which foundation-branch (FD) keys FASA adds, worked out once per run and token grid, never per attention call.

A mask's token weights m (B_mask, M) in [0, 1] decide, for each image row, which of the M FD keys take part (m > 0)
and their logit bias omega + ln m (attention.py). `select_keys` turns them into index tensors and bias rows on the
attention's device in one go (the only place that reads mask values on the host, from the CPU mask); the attention
patches then use them with no data-dependent branch and no device-to-host synchronisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class KeyGroup:
    """Image rows that share one set of FD keys: rows (a slice of the batch; slice(None) = every row), index (K,) of
    the chosen FD keys (int64, on the device), bias (1, K) fp32 (omega + ln m) and positions (K,) the chosen keys'
    places in the full token grid (int64, on the device; = index unless the FD keys were compacted)."""
    rows: slice
    index: torch.Tensor
    bias: torch.Tensor
    positions: torch.Tensor
    count: int
    value: float | None = None  # the one bias every chosen key has (a binary mask: omega), else None

    @property
    def fd_bias(self):
        """What the kernels take: the one bias as a float when there is one (kernel "split" needs it), else the
        (1, K) tensor."""
        return self.bias if self.value is None else self.value


@dataclass(frozen=True)
class KeySelection:
    """The FD keys FASA adds for every image row of one token grid: groups of rows (one group for all rows when every
    row's mask is the same), each with its own keys; rows whose mask is empty are in no group. any: whether some row
    has a key; n_keys: the FD keys the selection indexes into (M); mask_rows: rows in the mask (1 = shared)."""
    groups: tuple[KeyGroup, ...]
    n_keys: int
    mask_rows: int

    @property
    def any(self) -> bool:
        return bool(self.groups)

    def check_batch(self, rows: int) -> None:
        """ValueError unless the mask's rows fit a batch of `rows` images (1 mask for all, or one per image)."""
        if self.mask_rows not in (1, rows):
            raise ValueError(f"FreeCure: {self.mask_rows} masks for a batch of {rows} images")

    def key_count(self) -> int:
        """FD keys added per row of the first group (0 when none): for the benchmark and messages."""
        return self.groups[0].count if self.groups else 0


def key_bias(weights: torch.Tensor, omega: float) -> torch.Tensor:
    """The additive logit bias omega + ln(w) of FD keys with mask weights w in (0, 1] (same shape, fp32)."""
    return float(omega) + torch.log(weights.float().clamp(0.0, 1.0))


def select_keys(weights: torch.Tensor, omega: float, device, positions: torch.Tensor | None = None) -> KeySelection:
    """The KeySelection of token weights (M,) or (B_mask, M) with logit boost omega, on `device`.

    positions (M,): each FD key's place in the full token grid (default: 0 .. M-1). Reads the weights on the host once
    (they live on the CPU in ComfyUI), then moves indices and biases to `device`."""
    if not math.isfinite(float(omega)):
        raise ValueError(f"FreeCure FASA: omega must be a finite number, got {omega}")
    w = weights.detach().to("cpu", torch.float32)
    if w.dim() == 1:
        w = w[None]
    if w.dim() != 2:
        raise ValueError(f"FreeCure FASA: mask weights must be (M,) or (B, M); got {tuple(weights.shape)}")
    w = w.clamp(0.0, 1.0)
    m = w.shape[1]
    pos = torch.arange(m) if positions is None else positions.detach().to("cpu").reshape(-1).long()
    if pos.numel() != m:
        raise ValueError(f"FreeCure FASA: {m} FD keys but {pos.numel()} positions for them")
    uniform = bool((w == w[:1]).all())
    row_sets = [(slice(None), w[0])] if uniform else [(slice(b, b + 1), w[b]) for b in range(w.shape[0])]
    groups = []
    for rows, row in row_sets:
        idx = (row > 0).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        bias = key_bias(row[idx], omega)[None]
        weight = row[idx]
        value = float(omega) + math.log(float(weight[0])) if bool((weight == weight[0]).all()) else None
        groups.append(KeyGroup(rows, idx.to(device), bias.to(device), pos[idx].to(device), int(idx.numel()), value))
    return KeySelection(tuple(groups), m, w.shape[0])
