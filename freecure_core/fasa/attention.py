"""Foundation-aware self-attention (FASA), the core of FreeCure (arXiv 2411.15277, section 3.3 of
shared/reference/method.md).

For a personalized-branch (PD) query row, the keys are the PD keys followed by the foundation-branch
(FD) keys that lie inside the attribute mask; FD keys get an additive logit bias ``omega`` (a log-space
boost: each in-mask FD key weighs e^omega times its natural weight); FD keys outside the mask are
excluded exactly. One joint softmax normalises over both sets. Tensors use ComfyUI's attention layout:
(batch, tokens, heads * dim_head).

Soft masks: a mask value m in (0, 1] is a weight. The FD key's bias is omega + ln(m), i.e. it weighs
m * e^omega times its natural weight, fading continuously to exclusion at m = 0; a binary mask gives the
FreeCure code's +omega / -inf exactly. omega = 0 keeps in-mask FD keys at their natural weight (the FreeCure
code multiplies the mask by omega and drops zeros, so there omega = 0 would exclude every FD key).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Query rows processed per SDPA call; bounds the (heads, rows, keys) logit block on the math backend.
_QUERY_CHUNK = 4096


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _check_shapes(q, k, v, k_fd, v_fd, heads):
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(f"FASA: q, k, v must be (batch, tokens, heads*dim_head); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] % heads:
        raise ValueError(f"FASA: channel size {q.shape[-1]} is not divisible by heads={heads}")
    if k.shape != v.shape or k.shape[0] != q.shape[0] or k.shape[-1] != q.shape[-1]:
        raise ValueError(f"FASA: k/v {tuple(k.shape)}/{tuple(v.shape)} do not match q {tuple(q.shape)}")
    if k_fd.shape != v_fd.shape or k_fd.shape[-1] != q.shape[-1] or k_fd.shape[0] != q.shape[0]:
        raise ValueError(f"FASA: foundation k/v {tuple(k_fd.shape)}/{tuple(v_fd.shape)} do not match the "
                         f"personalized q {tuple(q.shape)} (same batch and channels required)")


def key_bias(weights: torch.Tensor, omega: float) -> torch.Tensor:
    """The additive logit bias omega + ln(w) of FD keys with mask weights w in (0, 1] (same shape, fp32)."""
    return float(omega) + torch.log(weights.float().clamp(0.0, 1.0))


def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_extra: torch.Tensor,
                    v_extra: torch.Tensor, extra_bias, heads: int) -> torch.Tensor:
    """Softmax attention of q over [k | k_extra] with +extra_bias on the extra keys, softmax in fp32.

    q, k, v: (B, N, heads*d); k_extra, v_extra: (B, M, heads*d) with M >= 0; extra_bias a float or a (B or 1, M)
    per-key bias. Returns (B, N, heads*d) in q's dtype.
    """
    out_dtype = q.dtype
    qh = _split_heads(q.float(), heads)
    kh = _split_heads(torch.cat([k, k_extra], dim=1).float(), heads)
    vh = _split_heads(torch.cat([v, v_extra], dim=1).float(), heads)
    return _merge_heads(attend(qh, kh, vh, k.shape[1], extra_bias, always_bias=False)).to(out_dtype)


def attend(qh: torch.Tensor, kh: torch.Tensor, vh: torch.Tensor, n_base: int, extra_bias, *, always_bias: bool,
           logit_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The one FASA kernel (SD and FLUX rows): fp32 softmax attention in the head-split layout.

    qh (B, H, N, D), kh, vh (B, H, L, D), all fp32; keys from position n_base on (the extra, foundation keys) get
    +extra_bias on their logits: a float, or a (B or 1, L - n_base) per-key bias. The bias is built when there are
    extra keys, or always with always_bias (FLUX's image rows). logit_bias: an optional additive fp32 bias
    broadcastable to (B, H, N, L) with a query dimension of N or 1 (an attention mask). Query rows go through SDPA in
    chunks of _QUERY_CHUNK. Returns (B, H, N, D) fp32."""
    bias = None
    if always_bias or kh.shape[2] > n_base:
        extra = torch.as_tensor(extra_bias, dtype=torch.float32, device=qh.device)
        if extra.dim() == 0:
            extra = extra.expand(1, kh.shape[2] - n_base)
        elif extra.dim() == 1:
            extra = extra[None]
        bias = torch.cat([torch.zeros(extra.shape[0], n_base, dtype=torch.float32, device=qh.device), extra], dim=1)
        bias = bias[:, None, None, :]
    if logit_bias is not None:
        bias = logit_bias if bias is None else bias + logit_bias
    per_row = bias is not None and bias.dim() == 4 and bias.shape[2] > 1
    outs = []
    for start in range(0, qh.shape[2], _QUERY_CHUNK):
        chunk_bias = bias[:, :, start:start + _QUERY_CHUNK] if per_row else bias
        outs.append(F.scaled_dot_product_attention(qh[:, :, start:start + _QUERY_CHUNK], kh, vh, attn_mask=chunk_bias))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)


def _as_row_weights(key_mask: torch.Tensor, batch: int, m: int) -> torch.Tensor:
    if key_mask.dim() == 1:
        key_mask = key_mask.unsqueeze(0).expand(batch, -1)
    if key_mask.dim() != 2 or key_mask.shape[1] != m or key_mask.shape[0] not in (1, batch):
        raise ValueError(f"FASA: key_mask must be (M,) or (B, M) with M={m}, B={batch}; got {tuple(key_mask.shape)}")
    if key_mask.shape[0] == 1:
        key_mask = key_mask.expand(batch, -1)
    return key_mask.float().clamp(0.0, 1.0)


def fasa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_fd: torch.Tensor, v_fd: torch.Tensor,
                   key_mask: torch.Tensor, omega: float, heads: int) -> torch.Tensor:
    """FASA output for personalized queries q over PD keys plus the in-mask FD keys.

    q, k, v: PD projections (B, N, heads*dim_head); k_fd, v_fd: FD keys/values (B, M, heads*dim_head);
    key_mask: (M,) or (B, M) mask weights in [0, 1] (1 = FD key inside the attribute mask, 0 = outside, between =
    a soft edge); omega: additive logit boost of in-mask FD keys. Returns (B, N, heads*dim_head) in q's dtype: one
    joint softmax (in fp32) over [PD keys | FD keys], FD logits + omega + ln(m) where m > 0, FD keys at m = 0
    excluded. Excluded FD keys are gathered away before the matmul; an all-zero mask returns plain attention.
    """
    _check_shapes(q, k, v, k_fd, v_fd, heads)
    if not math.isfinite(float(omega)):
        raise ValueError(f"FASA: omega must be a finite number, got {omega}")
    rows = _as_row_weights(key_mask.to(q.device), q.shape[0], k_fd.shape[1])
    if bool((rows == rows[:1]).all()):
        idx = (rows[0] > 0).nonzero().squeeze(1)
        return joint_attention(q, k, v, k_fd.index_select(1, idx), v_fd.index_select(1, idx),
                               key_bias(rows[0, idx], omega)[None], heads)
    outs = []
    for b in range(q.shape[0]):
        idx = (rows[b] > 0).nonzero().squeeze(1)
        sl = slice(b, b + 1)
        outs.append(joint_attention(q[sl], k[sl], v[sl], k_fd[sl].index_select(1, idx),
                                    v_fd[sl].index_select(1, idx), key_bias(rows[b, idx], omega)[None], heads))
    return torch.cat(outs, dim=0)


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Ordinary softmax self-attention (fp32 softmax), the FASA result for an empty mask."""
    empty = k[:, :0]
    return joint_attention(q, k, v, empty, empty, 0.0, heads)
