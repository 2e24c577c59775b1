"""Face diversity (Face Div.): mean pairwise LPIPS distance between face crops, with LPIPS (Zhang et al. 2018,
AlexNet variant) written here.

LPIPS needs two files a user can get offline, put in ``ComfyUI/models/lpips/``:
- the linear heads ``alex.pth`` shipped inside the ``lpips`` pip package (``lpips/weights/v0.1/alex.pth``; keys
  ``lin0.model.1.weight`` … ``lin4.model.1.weight``);
- torchvision's AlexNet weights ``alexnet-owt-7be5be79.pth`` (keys ``features.N.weight``; the file torchvision
  caches in ``~/.cache/torch/hub/checkpoints/``).
``python -m freecure_core.eval.face_diversity LIN.pth ALEXNET.pth OUT.safetensors`` joins them into one
``.safetensors`` file, which ``LpipsScorer.load(OUT)`` reads alone. Both are read with weights_only.
Images are RGB uint8 numpy arrays (H, W, 3); each is resized to `size` × `size` before comparison.
"""
from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
CHANNELS = (64, 192, 384, 256, 256)
TAPS = (1, 4, 7, 9, 11)  # the ReLUs of torchvision's alexnet.features whose outputs LPIPS compares
LIN_KEYS = tuple(f"lin{i}.model.1.weight" for i in range(5))
FILE_HINT = ("LPIPS needs lpips' alex.pth (from the lpips pip package, lpips/weights/v0.1/) and torchvision's "
             "alexnet-owt-7be5be79.pth in ComfyUI/models/lpips/, or one file joined from them with "
             "`python -m freecure_core.eval.face_diversity LIN.pth ALEXNET.pth OUT.safetensors`")


def alexnet_features() -> nn.Sequential:
    """torchvision AlexNet's convolutional trunk (same module indices, so `features.N` keys load)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


class Lpips(nn.Module):
    """LPIPS distance d(x0, x1) for image batches (N, 3, H, W) in [-1, 1]: per tapped layer, unit-normalised
    channels, squared difference, 1×1 linear head, spatial mean; summed over layers. Returns (N,)."""

    def __init__(self):
        super().__init__()
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features[:TAPS[-1] + 1]):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for f0, f1, lin in zip(self.taps(x0), self.taps(x1), self.lins):
            n0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            n1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((n0 - n1) ** 2).mean(dim=(2, 3)).squeeze(1)
        return total


def _read(path) -> dict:
    from ..safe_load import load_safetensors, refusal_reason, torch_load_weights
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FreeCure: LPIPS file {path} not found; {FILE_HINT}")
    if path.endswith(".safetensors"):
        return load_safetensors(path, "LPIPS")
    try:
        state = torch_load_weights(path)
    except Exception as exc:
        raise ValueError(f"FreeCure: {path} was refused: {refusal_reason(exc)}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"FreeCure: {path} is not a weights file (a {type(state).__name__}); {FILE_HINT}")
    return state


def lpips_state(*states: dict) -> dict:
    """The Lpips module's state dict from lpips' lin file and torchvision's AlexNet (in any order, or one joined
    file); ValueError saying which part is missing."""
    merged = {}
    for s in states:
        merged.update(s)
    out = {}
    for i, key in enumerate(LIN_KEYS):
        if key not in merged:
            raise ValueError(f"FreeCure: no LPIPS linear heads ({key}) in the given file(s); {FILE_HINT}")
        out[f"lins.{i}.weight"] = merged[key]
    for name, p in alexnet_features().state_dict().items():
        key = f"features.{name}"
        if key not in merged:
            raise ValueError(f"FreeCure: no AlexNet weights ({key}) in the given file(s); {FILE_HINT}")
        if tuple(merged[key].shape) != tuple(p.shape):
            raise ValueError(f"FreeCure: {key} has shape {tuple(merged[key].shape)}, AlexNet needs {tuple(p.shape)}: "
                             f"this is not torchvision's AlexNet; {FILE_HINT}")
        out[key] = merged[key]
    return {k: v.float() for k, v in out.items()}


def to_tensor(images, size: int) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1] from RGB uint8 images (bilinear, antialiased resize)."""
    out = []
    for img in images:
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"FreeCure: expected RGB images (H, W, 3), got shape {img.shape}")
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255.0
        out.append(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out) * 2 - 1


class LpipsScorer:
    """LPIPS between images (see the module docstring)."""

    def __init__(self, net: Lpips, size: int = 128):
        self.net = net.eval()
        self.size = int(size)

    @classmethod
    def load(cls, path, backbone_path=None, size: int = 128) -> "LpipsScorer":
        """From a joined file, or lpips' alex.pth plus torchvision's AlexNet file."""
        states = [_read(path)] + ([_read(backbone_path)] if backbone_path else [])
        net = Lpips()
        net.load_state_dict(lpips_state(*states))
        return cls(net, size)

    @torch.no_grad()
    def distances(self, a_images, b_images) -> np.ndarray:
        """(N,) LPIPS of a_images[i] vs b_images[i]."""
        return self.net(to_tensor(a_images, self.size), to_tensor(b_images, self.size)).numpy().astype(np.float64)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """LPIPS of two images."""
        return float(self.distances([a], [b])[0])


def face_diversity(scorer: LpipsScorer, crops) -> float:
    """Mean LPIPS over all unordered pairs of crops (nan for fewer than two)."""
    crops = [c for c in crops if c is not None]
    pairs = list(itertools.combinations(range(len(crops)), 2))
    if not pairs:
        return float("nan")
    return float(np.mean(scorer.distances([crops[i] for i, _ in pairs], [crops[j] for _, j in pairs])))


def main(argv=None) -> int:
    """Join lpips' lin file and torchvision's AlexNet into one .safetensors."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or not argv[2].endswith(".safetensors"):
        print("usage: python -m freecure_core.eval.face_diversity LIN.pth ALEXNET.pth OUT.safetensors")
        return 2
    from safetensors.torch import save_file
    state = lpips_state(_read(argv[0]), _read(argv[1]))
    joined = {k: v.contiguous() for k, v in state.items() if k.startswith("features.")}
    joined.update({LIN_KEYS[i]: state[f"lins.{i}.weight"].contiguous() for i in range(5)})
    save_file(joined, argv[2])
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
