"""The FASA settings that flow from FreeCureFASAConfig to the samplers (ComfyUI type FREECURE_FASA)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .layers import PRESETS, default_omega
from .masks import RESAMPLE_MODES, normalize_mask

# How FreeCureFASAConfig reads its omega number. "-1 = auto" is how the node read omega before omega_mode existed
# (saved workflows carry no omega_mode and load with it); "auto" ignores the number; "value" takes it as written.
OMEGA_MODES = ("-1 = auto", "auto", "value")
LEGACY_AUTO = -1.0
OMEGA_RANGE = (-10.0, 10.0)


def read_omega(omega: float, mode: str = "-1 = auto") -> float | None:
    """The omega a FASA Config node asks for: a number, or None for the per-model default."""
    if mode not in OMEGA_MODES:
        raise ValueError(f"FreeCure: omega_mode {mode!r} is not one of {OMEGA_MODES}")
    if mode == "auto" or (mode == "-1 = auto" and float(omega) == LEGACY_AUTO):
        return None
    return float(omega)


@dataclass(frozen=True)
class FASAConfig:
    """Where and how strongly the personalized branch attends to the foundation branch.

    mask: (B, H, W) attribute mask in foundation-image pixels (1 = take the attribute from FD; values between 0 and 1
    are soft weights, see selection.key_bias).
    omega: log-space boost of in-mask FD keys (any value in -10..10; 0 = their natural weight); None = the model
    family's default (default_omega).
    layers: a preset name (SD: reference, decoder, all; FLUX: single, all) or a custom layer list (see
    layers.parse_layer_spec, flux.resolve_flux_layers).
    start_percent / end_percent: the part of the sampling schedule (0 = first step) where FASA acts.
    uncond_blend: 0 keeps the unconditional PD row on plain attention (reference); 1 gives it FASA too.
    mask_resample: "nearest" (reference; passes soft values through) or "area" (binary, half covered).
    """
    mask: torch.Tensor
    omega: float | None = None
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
        if self.omega is not None and not OMEGA_RANGE[0] <= self.omega <= OMEGA_RANGE[1]:
            raise ValueError(f"FreeCure: omega {self.omega} is outside -10..10 (the paper uses about 0.5-2.4); "
                             f"set omega_mode to auto for the model's default")
        if not self.layers.strip():
            raise ValueError(f"FreeCure: layers is empty; use a preset {PRESETS} or a list like 'output:6-11'")

    def omega_for(self, family: str) -> float:
        """omega to use on a model of this family (the explicit value, or the family default)."""
        return default_omega(family) if self.omega is None else float(self.omega)

    def mask_is_empty(self) -> bool:
        """True when no mask pixel is above 0 (FASA then has nothing to act on)."""
        return not bool((self.mask > 0).any())
