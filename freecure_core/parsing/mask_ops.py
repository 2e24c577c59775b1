"""Pixel-space mask operations for the face-parsing stage (pure torch, no ComfyUI).

Conventions (ComfyUI types):
    MASK   (B, H, W) float in 0..1
    IMAGE  (B, H, W, 3) float in 0..1
    labels (B, H, W) int64 class ids (one id per pixel)
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..fasa.masks import normalize_mask


def labels_to_mask(labels: torch.Tensor, ids: Iterable[int]) -> torch.Tensor:
    """MASK (B, H, W) float: 1 where the label is any of `ids` (union), else 0; no ids gives all zeros.

    labels: (B, H, W) or (H, W) integer label map; the result has the same shape.
    """
    if not torch.is_tensor(labels) or labels.is_floating_point():
        raise TypeError("FreeCure: labels must be an integer torch tensor (a label map), "
                        f"got {getattr(labels, 'dtype', type(labels).__name__)}")
    ids = [int(i) for i in ids]
    if not ids:
        return torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    wanted = torch.tensor(ids, dtype=labels.dtype, device=labels.device)
    return torch.isin(labels, wanted).float()


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow (pixels > 0) or shrink (pixels < 0) a MASK by exactly |pixels| pixels; 0 returns it unchanged.

    Square structuring element (Chebyshev distance): growing is a max filter of size 2|p|+1, shrinking a min
    filter, so a binary square of side s becomes side s + 2p. Soft masks are grown as grey-level max/min.
    The image border counts as "inside", so shrinking does not eat masks that touch the frame.
    mask: (B, H, W) (also (H, W) or (B, 1, H, W)); returns (B, H, W) float.
    """
    if isinstance(pixels, bool) or int(pixels) != pixels:
        raise ValueError(f"FreeCure: grow must be a whole number of pixels, got {pixels!r}")
    pixels = int(pixels)
    m = normalize_mask(mask)
    if pixels == 0:
        return m
    r = abs(pixels)
    x = m.unsqueeze(1)  # (B, 1, H, W)
    if pixels < 0:
        x = -x
    # Separable max filter: a (2r+1)-square equals a row pass followed by a column pass.
    x = F.max_pool2d(x, kernel_size=(1, 2 * r + 1), stride=1, padding=(0, r))
    x = F.max_pool2d(x, kernel_size=(2 * r + 1, 1), stride=1, padding=(r, 0))
    if pixels < 0:
        x = -x
    return x[:, 0].contiguous()


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def feather_mask(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Soften a MASK's edges with a gaussian blur of sigma = pixels / 2 (edge ramp about 2*pixels wide).

    The blur is centred on the edge (a binary edge lands at 0.5), uses replicate padding, and keeps values
    inside the input's range (0..1 stays 0..1). pixels = 0 returns the mask unchanged.
    mask: (B, H, W) (also (H, W) or (B, 1, H, W)); returns (B, H, W) float.
    """
    pixels = float(pixels)
    if not math.isfinite(pixels) or pixels < 0:
        raise ValueError(f"FreeCure: feather must be a number of pixels >= 0, got {pixels!r}")
    m = normalize_mask(mask)
    if pixels == 0:
        return m
    k = _gaussian_kernel(pixels / 2.0, m.device, m.dtype)
    r = (k.numel() - 1) // 2
    x = m.unsqueeze(1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x[:, 0].clamp_(0.0, 1.0)


def colorize_labels(labels: torch.Tensor, palette) -> torch.Tensor:
    """IMAGE (B, H, W, 3) float 0..1: each label id painted with palette[id].

    labels: (B, H, W) or (H, W) int; palette: (n, 3) uint8 (tensor, array or nested lists), n > max label.
    """
    if not torch.is_tensor(labels) or labels.is_floating_point():
        raise TypeError("FreeCure: labels must be an integer torch tensor (a label map)")
    if labels.dim() == 2:
        labels = labels.unsqueeze(0)
    pal = torch.as_tensor(palette, device=labels.device)
    if pal.dim() != 2 or pal.shape[1] != 3:
        raise ValueError(f"FreeCure: the palette must be (n, 3) RGB colours, got shape {tuple(pal.shape)}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= pal.shape[0]:
            raise ValueError(f"FreeCure: label ids {lo}..{hi} do not fit a palette of {pal.shape[0]} colours; "
                             "use the palette of the schema that produced the labels")
    colours = pal.float() / 255.0 if not pal.is_floating_point() else pal.float()
    return colours[labels.long()]


def overlay_mask(images: torch.Tensor, mask: torch.Tensor, color: Sequence[float] = (1.0, 0.0, 0.0),
                 alpha: float = 0.5) -> torch.Tensor:
    """IMAGE (B, H, W, 3): `color` blended over the images with weight alpha * mask.

    images: (B, H, W, 3); mask: (B, H, W), (1, H, W) or (H, W), resized (bilinear) when its size differs.
    Batches of 1 on either side are broadcast to the other's batch size.
    """
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"FreeCure: expected an IMAGE batch (B, H, W, 3), got shape {tuple(images.shape)}")
    m = normalize_mask(mask).to(images.device)
    h, w = images.shape[1:3]
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    b_img, b_m = images.shape[0], m.shape[0]
    if b_img != b_m and 1 not in (b_img, b_m):
        raise ValueError(f"FreeCure: mask batch {b_m} does not match image batch {b_img} (use 1 or {b_img})")
    c = torch.as_tensor(color, dtype=images.dtype, device=images.device).view(1, 1, 1, 3)
    weight = (float(alpha) * m.clamp(0.0, 1.0)).unsqueeze(-1).to(images.dtype)
    return images * (1.0 - weight) + c * weight


def mask_bbox(mask: torch.Tensor, threshold: float = 0.5) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) of the pixels above `threshold`, or None when there are none.

    mask: (H, W) (or (1, H, W)). x1 and y1 are exclusive (PIL getbbox style): the box covers
    mask[y0:y1, x0:x1], so its width is x1 - x0; as a SAM box it encloses those pixels fully.
    """
    if mask.dim() == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 2:
        raise ValueError(f"FreeCure: mask_bbox takes one (H, W) mask, got shape {tuple(mask.shape)}")
    on = mask > threshold
    rows = torch.nonzero(on.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(on.any(dim=0)).flatten()
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
