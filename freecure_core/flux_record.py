"""The stage-1 record for FLUX replay: FD image-token keys/values (after RoPE) per model evaluation and block,
keyed explicitly by (evaluation index, block) — never by a call counter — plus what the run was (sigmas, latent
shape, noise, weights) so a replay with other settings is refused by name."""
from __future__ import annotations

from dataclasses import dataclass

import torch


class FluxReplayMismatch(ValueError):
    """Stage 3 does not match the stage-1 record; the message says which setting differs."""


@dataclass(frozen=True)
class FluxRecordInfo:
    blocks: tuple          # (("double", i) | ("single", j), ...) recorded
    sigmas: tuple
    latent_shape: tuple
    noise_id: str
    latent_id: str
    weights_id: str


class FluxRecord:
    """FD keys/values of the image tokens: entries[(eval_index, block)] = (k, v), each (B, H, M, D)."""

    def __init__(self, info: FluxRecordInfo, offload: bool = True, dtype=torch.float16):
        self.info = info
        self.offload, self.dtype = offload, dtype
        self.entries: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.eval_sigmas: list[float] = []
        self.fd_samples: torch.Tensor | None = None

    def begin_eval(self, sigma: float) -> int:
        """Index of a new model evaluation at `sigma`."""
        self.eval_sigmas.append(float(sigma))
        return len(self.eval_sigmas) - 1

    def put(self, eval_index: int, block: tuple, k: torch.Tensor, v: torch.Tensor) -> None:
        dev = "cpu" if self.offload else k.device
        self.entries[(eval_index, block)] = (k.detach().to(dev, self.dtype, copy=True),
                                             v.detach().to(dev, self.dtype, copy=True))

    def get(self, eval_index: int, block: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self.entries[(eval_index, block)]
        except KeyError:
            raise FluxReplayMismatch(f"FreeCure FLUX: the stage-1 record has no keys for evaluation {eval_index} at "
                                     f"{block[0]} block {block[1]}; record stage 1 with the same layers, steps and "
                                     "sampler") from None

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.entries.values() for t in kv)

    def check_compatible(self, *, blocks, sigmas, latent_shape, noise_id, latent_id, weights_id=None) -> None:
        """FluxReplayMismatch naming the first difference between this record and a stage-3 run."""
        i = self.info
        missing = [b for b in blocks if b not in i.blocks]
        if missing:
            raise FluxReplayMismatch(f"FreeCure FLUX: stage 1 recorded {len(i.blocks)} blocks but FASA needs "
                                     f"{missing[0][0]} block {missing[0][1]}; use the same layers in both samplers")
        if tuple(latent_shape) != tuple(i.latent_shape):
            raise FluxReplayMismatch(f"FreeCure FLUX: replay latent {tuple(latent_shape)} differs from the record's "
                                     f"{tuple(i.latent_shape)}; use the same size and batch in stage 1 and stage 3")
        if len(sigmas) != len(i.sigmas) or any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(sigmas, i.sigmas)):
            raise FluxReplayMismatch("FreeCure FLUX: the replay's sigmas differ from the record's; use the same steps, "
                                     "scheduler and denoise in stage 1 and stage 3")
        if noise_id != i.noise_id:
            raise FluxReplayMismatch("FreeCure FLUX: the replay's noise differs from the record's; use the same seed")
        if latent_id != i.latent_id:
            raise FluxReplayMismatch("FreeCure FLUX: the replay's input latent differs from the record's")

    def check_eval(self, eval_index: int, sigma: float) -> None:
        """The replay's evaluation at `eval_index` must be at the sigma recorded there (same sampler)."""
        if eval_index >= len(self.eval_sigmas) or abs(self.eval_sigmas[eval_index] - sigma) > 1e-5 * max(1.0, sigma):
            raise FluxReplayMismatch(f"FreeCure FLUX: model evaluation {eval_index} is at sigma {sigma:.4g}, the record "
                                     "has another; use the same sampler in stage 1 and stage 3")

    def compacted(self, masks: torch.Tensor) -> "FluxRecord":
        """A copy keeping only the image tokens inside `masks` (B, M) (the same for every row: one index set)."""
        keep = (masks > 0.5).any(0).nonzero().squeeze(1)
        out = FluxRecord(self.info, self.offload, self.dtype)
        out.eval_sigmas, out.fd_samples = list(self.eval_sigmas), self.fd_samples
        out.entries = {key: (k.index_select(2, keep.to(k.device)), v.index_select(2, keep.to(v.device)))
                       for key, (k, v) in self.entries.items()}
        out.kept = keep
        return out
