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

- ``split``: for one bias shared by every FD key (a binary mask: omega), two mask-free attention calls, one over the
  PD keys and one over the FD keys, each returning its log-sum-exp, merged exactly:
  out = out_PD + s (out_FD - out_PD), s = sigmoid(lse_FD + omega - lse_PD) (the FD keys' share of the softmax mass).
  Same work as plain attention over all the keys and no padding; it needs PyTorch's attention ops that return the
  log-sum-exp (``aten._scaled_dot_product_flash_attention_for_cpu`` on the CPU, the flash or memory-efficient ops on
  CUDA), and falls back to ``masked`` (CPU) or ``folded`` (CUDA) where they are missing or refuse the inputs.

``attend`` picks one (``kernel="auto"``): ``split`` for a single bias value, else ``folded`` on CUDA without an extra
logit mask and ``masked`` elsewhere, for fp16/bf16/fp32 inputs; ``reference`` for anything else (fp64).
``bench/bench_engine.py`` times each against plain SDPA over the same number of keys.

Query rows go through SDPA in chunks of QUERY_CHUNK (bounds the logit block where a backend materialises it).
No function here reads a tensor's values on the host: no device-to-host synchronisation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KERNELS = ("auto", "split", "folded", "masked", "reference")
_aten = torch.ops.aten
# (device type, dtype, head size) -> False where the log-sum-exp attention op refused the inputs (then never retried)
_LSE_WORKS: dict[tuple, bool] = {}
QUERY_CHUNK = 4096
_FAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def choose_kernel(kernel: str, q: torch.Tensor, has_logit_bias: bool, one_bias: bool = False) -> str:
    """The concrete kernel `attend` uses for `kernel` ("auto" resolved by device, dtype, extra mask and whether the FD
    bias is one number)."""
    if kernel not in KERNELS:
        raise ValueError(f"FreeCure: unknown FASA kernel {kernel!r}; use one of {KERNELS}")
    if kernel == "auto":
        if q.dtype not in _FAST_DTYPES:
            return "reference"
        kernel = "split" if one_bias else "folded" if q.device.type == "cuda" else "masked"
    if kernel == "split" and (has_logit_bias or not one_bias or q.dtype not in _FAST_DTYPES
                              or not _LSE_WORKS.get((q.device.type, q.dtype, q.shape[-1]), True)):
        kernel = "folded" if q.device.type == "cuda" else "masked"
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


def attention_lse(q, k, v) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(softmax attention (B, H, N, D) in q's dtype, its fp32 log-sum-exp (B, H, N) of the scaled logits), from
    PyTorch's attention ops; None where no such op takes these inputs."""
    key = (q.device.type, q.dtype, q.shape[-1])
    if not _LSE_WORKS.get(key, True):
        return None
    try:
        if q.device.type == "cpu":
            out, lse = _aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[:2]
        elif q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16):
            out, lse = _aten._scaled_dot_product_flash_attention(q, k, v)[:2]
        elif q.device.type == "cuda":
            out, lse = _aten._scaled_dot_product_efficient_attention(q, k, v, None, True)[:2]
            lse = lse[..., :q.shape[2]]  # the memory-efficient op pads it to a multiple of 32 rows
        else:
            _LSE_WORKS[key] = False
            return None
    except (RuntimeError, AttributeError, NotImplementedError):
        _LSE_WORKS[key] = False
        return None
    return out, lse


def attend_split(qh, kh, vh, k_fd, v_fd, omega: float) -> torch.Tensor | None:
    """FASA with one bias `omega` on every FD key, from two mask-free attention calls merged by their log-sum-exps
    (module docstring); None where attention_lse cannot run these inputs. Returns (B, H, N, D) in qh's dtype."""
    if k_fd.shape[2] == 0:
        return F.scaled_dot_product_attention(qh, kh, vh)
    pd = attention_lse(qh, kh, vh)
    fd = attention_lse(qh, k_fd.to(qh.dtype), v_fd.to(qh.dtype)) if pd is not None else None
    if fd is None:
        return None
    (out_pd, lse_pd), (out_fd, lse_fd) = pd, fd
    share = torch.sigmoid(lse_fd.float() + float(omega) - lse_pd.float()).unsqueeze(-1)
    # one pass in the model's dtype (lerp computes in fp32 internally; the share is rounded to that dtype), written in
    # the (B, N, H, D) memory order the attention ops use, so merging the heads afterwards needs no copy
    b, h, n, d = out_pd.shape
    out = torch.empty(b, n, h, d, dtype=out_pd.dtype, device=out_pd.device)
    torch.lerp(out_pd.transpose(1, 2), out_fd.to(out_pd.dtype).transpose(1, 2),
               share.to(out_pd.dtype).transpose(1, 2), out=out)
    return out.transpose(1, 2)


def attend(qh, kh, vh, k_fd, v_fd, fd_bias, *, kernel: str = "auto", logit_bias=None) -> torch.Tensor:
    """The FASA softmax (see the module docstring) with the kernel `kernel` ("auto", "split", "folded", "masked",
    "reference"); arguments as attend_reference (fd_bias a Python float: one bias for every FD key, which "split"
    needs). Returns (B, H, N, D) in qh's dtype."""
    one_bias = isinstance(fd_bias, (int, float))
    chosen = choose_kernel(kernel, qh, logit_bias is not None, one_bias)
    if chosen == "split":
        out = attend_split(qh, kh, vh, k_fd, v_fd, float(fd_bias))
        if out is not None:
            return out
        chosen = choose_kernel(kernel, qh, logit_bias is not None, one_bias)  # the op refused: not tried again
    if chosen == "folded":
        return attend_folded(qh, kh, vh, k_fd, v_fd, fd_bias)
    if chosen == "masked":
        return attend_masked(qh, kh, vh, k_fd, v_fd, fd_bias, logit_bias)
    return attend_reference(qh, kh, vh, k_fd, v_fd, fd_bias, logit_bias)
