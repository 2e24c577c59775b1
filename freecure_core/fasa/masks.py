"""Attribute masks on attention token grids.

A ComfyUI MASK is (B, H, W) in image pixels. Each attention layer sees the latent at its own
resolution: a UNet halves the grid at each downsample with ceil rounding (a 75-row latent becomes
38, then 19), so grids are computed from the latent shape, never from sqrt(tokens).

Token masks are weights in [0, 1]: "nearest" keeps the mask's own values, so a feathered edge reaches FASA as soft
weights (selection.key_bias); "area" keeps the tokens at least half covered, as 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

RESAMPLE_MODES = ("nearest", "area")
# Largest relative aspect-ratio difference between a mask and the latent that is still accepted.
ASPECT_TOLERANCE = 0.03


def downsampled_grid(latent_hw: tuple[int, int], level: int) -> tuple[int, int]:
    """Token grid (h, w) after `level` stride-2 downsamples of a latent of size latent_hw (ceil rounding)."""
    h, w = int(latent_hw[0]), int(latent_hw[1])
    for _ in range(level):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def normalize_mask(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as a float (B, H, W) tensor; accepts (H, W), (B, H, W) and (B, 1, H, W)."""
    if not torch.is_tensor(mask):
        raise TypeError(f"FreeCure: the mask must be a torch tensor (ComfyUI MASK), got {type(mask).__name__}")
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    elif mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"FreeCure: a MASK must be (batch, height, width); got shape {tuple(mask.shape)}")
    return mask.float()


def check_mask_batch(mask: torch.Tensor, batch: int) -> None:
    """Raise a ValueError unless the mask batch is 1 (shared) or equal to the latent batch."""
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"FreeCure: the mask has a batch of {mask.shape[0]} but the latent has {batch} "
                         f"images; give one mask per image or a single mask for all of them")


def check_mask_aspect(mask: torch.Tensor, latent_hw: tuple[int, int]) -> None:
    """Raise a ValueError when the mask's aspect ratio differs from the latent's (a resize is missing)."""
    mh, mw = mask.shape[-2:]
    lh, lw = latent_hw
    ratio_mask, ratio_latent = mw / mh, lw / lh
    if abs(ratio_mask - ratio_latent) / ratio_latent > ASPECT_TOLERANCE:
        raise ValueError(f"FreeCure: the mask is {mw}x{mh} pixels but the image being sampled is about "
                         f"{lw * 8}x{lh * 8} (latent {lw}x{lh}); their aspect ratios differ. Make the mask "
                         f"from the foundation image of this same size (or resize the mask).")


def resample_mask(mask: torch.Tensor, grid_hw: tuple[int, int], mode: str = "nearest") -> torch.Tensor:
    """Token weights (B, h*w) in [0, 1] of a (B, H, W) mask resampled to the grid (h, w).

    mode "nearest" (the reference's choice) takes one source pixel's value per token (binary for a binary
    mask, soft on a feathered edge); "area" averages the pixels under each token and keeps tokens at least
    half covered (binary).
    """
    mask = normalize_mask(mask)
    h, w = grid_hw
    x = mask.unsqueeze(1)
    if mode == "nearest":
        return F.interpolate(x, size=(h, w), mode="nearest")[:, 0].flatten(1).clamp(0.0, 1.0)
    if mode == "area":
        out = F.interpolate(x, size=(h, w), mode="area")
        return (out[:, 0] >= 0.5).flatten(1).to(torch.float32)
    raise ValueError(f"FreeCure: unknown mask resampling mode {mode!r}; use one of {RESAMPLE_MODES}")


def crop_mask(mask: torch.Tensor, area: tuple[int, int, int, int], latent_hw: tuple[int, int]) -> torch.Tensor:
    """The part (B, h', w') of a (B, H, W) pixel mask under a latent area (h, w, y, x), in cells of a latent of
    size latent_hw: what an area conditioning's cropped latent sees of the whole-image mask."""
    mask = normalize_mask(mask)
    h, w, y, x = (int(a) for a in area)
    lh, lw = int(latent_hw[0]), int(latent_hw[1])
    mh, mw = mask.shape[-2:]
    top, left = round(y * mh / lh), round(x * mw / lw)
    bottom, right = max(top + 1, round((y + h) * mh / lh)), max(left + 1, round((x + w) * mw / lw))
    return mask[:, top:min(bottom, mh), left:min(right, mw)]


class TokenMasks:
    """Per-grid cache of a mask resampled to each attention layer's token grid."""

    def __init__(self, mask: torch.Tensor, mode: str = "nearest"):
        self.mask = normalize_mask(mask)
        self.mode = mode
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def at(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """(B_mask, h*w) token weights in [0, 1] on grid (h, w)."""
        grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
        if grid_hw not in self._cache:
            self._cache[grid_hw] = resample_mask(self.mask, grid_hw, self.mode)
        return self._cache[grid_hw]

    def is_empty(self) -> bool:
        """True when no pixel of any mask is above 0."""
        return not bool((self.mask > 0).any())
