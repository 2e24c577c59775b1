"""The FASA attention kernels: one softmax of queries over [PD keys | in-mask FD keys] with a per-key logit bias on the
FD keys (omega + ln m, see attention.py), in three exact forms that differ only in speed and rounding.

- ``reference``: q/k/v upcast to fp32 and the bias passed as SDPA's additive ``attn_mask``. The slowest and the one
  the others are proved against (and the one used for dtypes/devices where the others do not apply).
- ``masked``: the same call in the model's dtype (the fused kernels accumulate in fp32 themselves), the bias as a
  broadcast (B|1, 1, 1, L + M) mask in that dtype. On the CPU, PyTorch's flash kernel takes such a mask directly.
- ``folded``: no mask at all. The bias is folded into the operands: every query gains the coordinates (1, 1), every
  PD key (0, 0) and FD key j (hi_j, lo_j), where hi_j + lo_j = bias_j / scale split into the model dtype's nearest
  value and its remainder (so half-precision dtypes keep ~16 bits of the bias); values are zero-padded, and SDPA's
  ``scale`` stays the original 1/sqrt(D). q.k' * scale = q.k * scale + bias_j exactly in exact arithmetic, so one
  mask-free ``scaled_dot_product_attention`` call (CUDA's flash kernel) computes the same softmax. The head size is
  padded to a multiple of 8 on CUDA (what the fast kernels need).

``attend`` picks one (``kernel="auto"``): ``folded`` on CUDA without an extra logit mask, ``masked`` elsewhere for
fp16/bf16/fp32 inputs, ``reference`` for anything else (fp64). ``bench/bench_engine.py`` times each against plain
SDPA over the same number of keys.

Query rows go through SDPA in chunks of QUERY_CHUNK (bounds the logit block where a backend materialises it).
No function here reads a tensor's values on the host: no device-to-host synchronisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KERNELS = ("auto", "folded", "masked", "reference")
QUERY_CHUNK = 4096
_FAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def choose_kernel(kernel: str, q: torch.Tensor, has_logit_bias: bool) -> str:
    """The concrete kernel `attend` uses for `kernel` ("auto" resolved by device, dtype and extra mask)."""
    if kernel not in KERNELS:
        raise ValueError(f"FreeCure: unknown FASA kernel {kernel!r}; use one of {KERNELS}")
    if kernel == "auto":
        if q.dtype not in _FAST_DTYPES:
            return "reference"
        return "folded" if q.device.type == "cuda" and not has_logit_bias else "masked"
    if kernel == "folded" and has_logit_bias:
        return "masked"  # an attention mask is a (query, key) matrix: it cannot be folded into the keys
    return kernel


def _bias_rows(fd_bias, batch: int, m: int, device) -> torch.Tensor:
    """fd_bias (float, (M,) or (B|1, M)) as an fp32 (B|1, M) tensor on `device`."""
    bias = torch.as_tensor(fd_bias, dtype=torch.float32, device=device)
    if bias.dim() == 0:
        bias = bias.expand(1, m)
    elif bias.dim() == 1:
        bias = bias[None]
    if bias.dim() != 2 or bias.shape[1] != m or bias.shape[0] not in (1, batch):
        raise ValueError(f"FreeCure FASA: the FD key bias {tuple(bias.shape)} does not fit {batch} rows x {m} FD keys")
    return bias


def _sdpa_chunks(qh, kh, vh, mask, scale=None) -> torch.Tensor:
    per_row = mask is not None and mask.dim() == 4 and mask.shape[2] > 1
    outs = []
    for start in range(0, qh.shape[2], QUERY_CHUNK):
        chunk_mask = mask[:, :, start:start + QUERY_CHUNK] if per_row else mask
        outs.append(F.scaled_dot_product_attention(qh[:, :, start:start + QUERY_CHUNK], kh, vh, attn_mask=chunk_mask,
                                                   scale=scale))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _key_mask(bias: torch.Tensor, n_base: int, dtype) -> torch.Tensor:
    """(B|1, 1, 1, n_base + M) additive mask: 0 on the PD keys, the bias on the FD keys."""
    zeros = torch.zeros(bias.shape[0], n_base, dtype=torch.float32, device=bias.device)
    return torch.cat([zeros, bias], dim=1)[:, None, None, :].to(dtype)


def attend_reference(qh, kh, vh, k_fd, v_fd, fd_bias, logit_bias=None) -> torch.Tensor:
    """fp32 FASA: softmax over [kh | k_fd] with +fd_bias on the FD logits (+logit_bias on all). Shapes: qh (B, H, N, D),
    kh/vh (B, H, L, D), k_fd/v_fd (B, H, M, D), fd_bias float/(M,)/(B|1, M), logit_bias broadcastable to
    (B, H, N|1, L + M). Returns (B, H, N, D) in qh's dtype."""
    bias = _bias_rows(fd_bias, qh.shape[0], k_fd.shape[2], qh.device)
    mask = _key_mask(bias, kh.shape[2], torch.float32)
    if logit_bias is not None:
        mask = mask + logit_bias.float()
    k = torch.cat([kh.float(), k_fd.float()], dim=2)
    v = torch.cat([vh.float(), v_fd.float()], dim=2)
    return _sdpa_chunks(qh.float(), k, v, mask).to(qh.dtype)


def attend_masked(qh, kh, vh, k_fd, v_fd, fd_bias, logit_bias=None) -> torch.Tensor:
    """FASA in the model's dtype with the bias as SDPA's additive mask (same arguments as attend_reference)."""
    dtype = qh.dtype
    bias = _bias_rows(fd_bias, qh.shape[0], k_fd.shape[2], qh.device)
    mask = _key_mask(bias, kh.shape[2], torch.float32)
    if logit_bias is not None:
        mask = mask + logit_bias.float()
    k = torch.cat([kh, k_fd.to(dtype)], dim=2)
    v = torch.cat([vh, v_fd.to(dtype)], dim=2)
    return _sdpa_chunks(qh, k, v, mask.to(dtype))


def fold_width(head_dim: int, dtype, device) -> int:
    """The padded head size of the folded kernel: D + 2 bias coordinates (hi, lo), rounded up to a multiple of 8 on
    CUDA."""
    width = head_dim + 2
    return -(-width // 8) * 8 if torch.device(device).type == "cuda" else width


def attend_folded(qh, kh, vh, k_fd, v_fd, fd_bias) -> torch.Tensor:
    """FASA with no mask: the per-key bias folded into two extra query/key coordinates (module docstring); same
    arguments as attend_reference without logit_bias. Returns (B, H, N, D) in qh's dtype."""
    b, h, n, d = qh.shape
    dtype, device = qh.dtype, qh.device
    length, m = kh.shape[2], k_fd.shape[2]
    width = fold_width(d, dtype, device)
    scale = d ** -0.5
    bias = _bias_rows(fd_bias, b, m, device) / scale  # (B|1, M) in logit units before SDPA's scale
    hi = bias.to(dtype)
    lo = (bias - hi.float()).to(dtype)
    q = qh.new_zeros(b, h, n, width)
    q[..., :d] = qh
    q[..., d:d + 2] = 1
    k = qh.new_zeros(b, h, length + m, width)
    k[:, :, :length, :d] = kh
    k[:, :, length:, :d] = k_fd
    k[:, :, length:, d] = hi[:, None, :]
    k[:, :, length:, d + 1] = lo[:, None, :]
    v = qh.new_zeros(b, h, length + m, width)
    v[:, :, :length, :d] = vh
    v[:, :, length:, :d] = v_fd
    return _sdpa_chunks(q, k, v, None, scale=scale)[..., :d]


def attend(qh, kh, vh, k_fd, v_fd, fd_bias, *, kernel: str = "auto", logit_bias=None) -> torch.Tensor:
    """The FASA softmax (see the module docstring) with the kernel `kernel` ("auto", "folded", "masked",
    "reference"); arguments as attend_reference. Returns (B, H, N, D) in qh's dtype."""
    chosen = choose_kernel(kernel, qh, logit_bias is not None)
    if chosen == "folded":
        return attend_folded(qh, kh, vh, k_fd, v_fd, fd_bias)
    if chosen == "masked":
        return attend_masked(qh, kh, vh, k_fd, v_fd, fd_bias, logit_bias)
    return attend_reference(qh, kh, vh, k_fd, v_fd, fd_bias, logit_bias)
