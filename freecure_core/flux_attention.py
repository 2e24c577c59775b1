"""FASA for FLUX's joint text-image attention (method.md section 3.5), pure torch.

FLUX attends over one sequence [text tokens; image tokens] in both double- and single-stream blocks. FreeCure's rule
for FLUX: the personalized branch's (PD) IMAGE queries attend to the PD keys (text and image) plus the foundation
branch's (FD) image keys, restricted to the attribute mask and boosted by omega in log space; PD TEXT queries keep
their plain attention (text-image interaction untouched, and they never see FD keys). FD keys are taken after RoPE
from FD's own pass: FD and PD image tokens share the positional grid, so each FD key carries the position of the PD
key at the same place. Layout: ComfyUI's FLUX attention layout (batch, heads, tokens, dim_head).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_QUERY_CHUNK = 4096


def image_rows_attention(q_img: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_fd: torch.Tensor,
                         v_fd: torch.Tensor, omega: float) -> torch.Tensor:
    """Image queries over [PD keys | FD keys] with +omega on the FD logits, one softmax in fp32.

    q_img (B, H, N, D); k, v (B, H, L, D) (PD text + image keys); k_fd, v_fd (B, H, M, D) (the FD image keys to add,
    M >= 0). Returns (B, H, N, D) in q_img's dtype."""
    if q_img.dim() != 4 or k.dim() != 4 or k_fd.dim() != 4:
        raise ValueError(f"FreeCure FLUX FASA: tensors must be (batch, heads, tokens, dim); got q {tuple(q_img.shape)}, "
                         f"k {tuple(k.shape)}, fd k {tuple(k_fd.shape)}")
    if k_fd.shape[:2] != q_img.shape[:2] or k_fd.shape[-1] != q_img.shape[-1] or k_fd.shape != v_fd.shape:
        raise ValueError(f"FreeCure FLUX FASA: foundation keys {tuple(k_fd.shape)} do not match the personalized "
                         f"queries {tuple(q_img.shape)} (same batch, heads and head size required)")
    if not math.isfinite(float(omega)):
        raise ValueError(f"FreeCure FLUX FASA: omega must be finite, got {omega}")
    kk = torch.cat([k, k_fd.to(k.dtype)], dim=2).float()
    vv = torch.cat([v, v_fd.to(v.dtype)], dim=2).float()
    bias = torch.zeros(kk.shape[2], dtype=torch.float32, device=q_img.device)
    bias[k.shape[2]:] = float(omega)
    bias = bias.view(1, 1, 1, -1)
    q = q_img.float()
    outs = [F.scaled_dot_product_attention(q[:, :, s:s + _QUERY_CHUNK], kk, vv, attn_mask=bias)
            for s in range(0, q.shape[2], _QUERY_CHUNK)]
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)).to(q_img.dtype)


def select_tokens(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """t (B, H, M, D) restricted to the tokens where keep (M,) is True."""
    return t.index_select(2, keep.nonzero().squeeze(1).to(t.device))


def flux_fasa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plain_out: torch.Tensor, n_txt: int,
              k_fd_img: torch.Tensor, v_fd_img: torch.Tensor, key_mask: torch.Tensor, omega: float) -> torch.Tensor:
    """The attention output (B, L, H*D) with FASA on the image query rows.

    q, k, v (B, H, L, D), L = n_txt + image tokens (post-RoPE); plain_out (B, L, H*D) the plain attention output of
    these q, k, v (ComfyUI's own kernel: text rows and rows whose mask is empty are returned from it unchanged);
    k_fd_img, v_fd_img (B, H, M, D) FD image keys/values (all M image tokens, or already only the in-mask ones when
    key_mask is all True); key_mask (B, M) or (M,) in {0, 1}."""
    b, h, length, d = q.shape
    m = k_fd_img.shape[2]
    rows = key_mask if key_mask.dim() == 2 else key_mask[None]
    if rows.dim() != 2 or rows.shape[1] != m or rows.shape[0] not in (1, b):
        raise ValueError(f"FreeCure FLUX FASA: mask {tuple(key_mask.shape)} does not fit {b} rows x {m} FD image tokens")
    rows = rows.to(q.device).expand(b, -1) > 0.5
    out = plain_out.clone()
    for i in range(b):
        if not bool(rows[i].any()):
            continue
        sl = slice(i, i + 1)
        img = image_rows_attention(q[sl, :, n_txt:], k[sl], v[sl], select_tokens(k_fd_img[sl], rows[i]),
                                   select_tokens(v_fd_img[sl], rows[i]), omega)
        out[sl, n_txt:] = img.transpose(1, 2).reshape(1, length - n_txt, h * d).to(out.dtype)
    return out
