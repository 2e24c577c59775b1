"""The FASA settings that flow from FreeCureFASAConfig to the samplers (ComfyUI type FREECURE_FASA)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .layers import PRESETS, default_omega
from .masks import RESAMPLE_MODES, normalize_mask

AUTO_OMEGA = -1.0


@dataclass(frozen=True)
class FASAConfig:
    """Where and how strongly the personalized branch attends to the foundation branch.

    mask: (B, H, W) attribute mask in foundation-image pixels (1 = take the attribute from FD).
    omega: log-space boost of in-mask FD keys; AUTO_OMEGA (-1) = per-family default.
    layers: a preset name (reference, decoder, all) or a custom layer list (see layers.parse_layer_spec).
    start_percent / end_percent: the part of the sampling schedule (0 = first step) where FASA acts.
    uncond_blend: 0 keeps the unconditional PD row on plain attention (reference); 1 gives it FASA too.
    mask_resample: "nearest" (reference) or "area".
    """
    mask: torch.Tensor
    omega: float = AUTO_OMEGA
    layers: str = "reference"
    start_percent: float = 0.0
    end_percent: float = 1.0
    uncond_blend: float = 0.0
    mask_resample: str = "nearest"

    def __post_init__(self):
        object.__setattr__(self, "mask", normalize_mask(self.mask).detach().cpu())
        if not 0.0 <= self.start_percent <= self.end_percent <= 1.0:
            raise ValueError(f"FreeCure: need 0 <= start_percent <= end_percent <= 1; got "
                             f"{self.start_percent}..{self.end_percent}")
        if not 0.0 <= self.uncond_blend <= 1.0:
            raise ValueError(f"FreeCure: uncond_blend must be within 0..1, got {self.uncond_blend}")
        if self.mask_resample not in RESAMPLE_MODES:
            raise ValueError(f"FreeCure: mask_resample must be one of {RESAMPLE_MODES}")
        if self.omega != AUTO_OMEGA and not -10.0 <= self.omega <= 10.0:
            raise ValueError(f"FreeCure: omega {self.omega} is outside -10..10 (the paper uses about 0.5-2.4)")
        if not self.layers.strip():
            raise ValueError(f"FreeCure: layers is empty; use a preset {PRESETS} or a list like 'output:6-11'")

    def omega_for(self, family: str) -> float:
        """omega to use on a model of this family (the explicit value, or the family default)."""
        return default_omega(family) if self.omega == AUTO_OMEGA else float(self.omega)

    def mask_is_empty(self) -> bool:
        return not bool((self.mask >= 0.5).any())
