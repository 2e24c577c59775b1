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

import torch

from .kernel import attend
from .selection import KeySelection, key_bias, select_keys  # noqa: F401  (key_bias: the FD keys' bias)


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


def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_extra: torch.Tensor,
                    v_extra: torch.Tensor, extra_bias, heads: int, *, kernel: str = "auto") -> torch.Tensor:
    """Softmax attention of q over [k | k_extra] with +extra_bias on the extra keys (kernel.attend).

    q, k, v: (B, N, heads*d); k_extra, v_extra: (B, M, heads*d) with M >= 0; extra_bias a float or a (B or 1, M)
    per-key bias. Returns (B, N, heads*d) in q's dtype.
    """
    return _merge_heads(attend(_split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads),
                               _split_heads(k_extra, heads), _split_heads(v_extra, heads), extra_bias, kernel=kernel))


def fasa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_fd: torch.Tensor, v_fd: torch.Tensor,
                   key_mask: torch.Tensor | None, omega: float, heads: int, *, selection: KeySelection | None = None,
                   kernel: str = "auto") -> torch.Tensor:
    """FASA output for personalized queries q over PD keys plus the in-mask FD keys.

    q, k, v: PD projections (B, N, heads*dim_head); k_fd, v_fd: FD keys/values (B, M, heads*dim_head);
    key_mask: (M,) or (B, M) mask weights in [0, 1] (1 = FD key inside the attribute mask, 0 = outside, between =
    a soft edge); omega: additive logit boost of in-mask FD keys. Returns (B, N, heads*dim_head) in q's dtype: one
    joint softmax over [PD keys | FD keys], FD logits + omega + ln(m) where m > 0, FD keys at m = 0 excluded.
    Excluded FD keys are gathered away before the matmul; rows with an all-zero mask get plain attention.
    selection: the keys already chosen by selection.select_keys (then key_mask and omega are not read, and nothing
    here synchronises with the host); kernel: kernel.attend's choice.
    """
    _check_shapes(q, k, v, k_fd, v_fd, heads)
    if selection is None:
        if key_mask.dim() not in (1, 2) or key_mask.shape[-1] != k_fd.shape[1] or (
                key_mask.dim() == 2 and key_mask.shape[0] not in (1, q.shape[0])):
            raise ValueError(f"FASA: key_mask must be (M,) or (B, M) with M={k_fd.shape[1]}, B={q.shape[0]}; got "
                             f"{tuple(key_mask.shape)}")
        selection = select_keys(key_mask, omega, q.device)
    elif selection.n_keys != k_fd.shape[1]:
        raise ValueError(f"FASA: the key selection is over {selection.n_keys} FD keys, the FD tensors have "
                         f"{k_fd.shape[1]}")
    selection.check_batch(q.shape[0])
    groups = selection.groups
    if len(groups) == 1 and groups[0].rows == slice(None):
        g = groups[0]
        return joint_attention(q, k, v, k_fd.index_select(1, g.index), v_fd.index_select(1, g.index), g.fd_bias, heads,
                               kernel=kernel)
    out = plain_attention(q, k, v, heads, kernel=kernel) if len(groups) < q.shape[0] else torch.empty_like(q)
    for g in groups:
        sl = g.rows
        out[sl] = joint_attention(q[sl], k[sl], v[sl], k_fd[sl].index_select(1, g.index),
                                  v_fd[sl].index_select(1, g.index), g.fd_bias, heads, kernel=kernel)
    return out


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *,
                    kernel: str = "auto") -> torch.Tensor:
    """Ordinary softmax self-attention with FASA's kernel, the FASA result for an empty mask."""
    empty = k[:, :0]
    return joint_attention(q, k, v, empty, empty, 0.0, heads, kernel=kernel)
