"""BiSeNet face parser (zllrunning face-parsing.PyTorch layout, 19 CelebAMask-HQ classes), pure torch.

The network: a ResNet-18 context path (timm ``resnet18``, never pretrained) whose 1/8 features stand in
for the spatial path, attention-refinement modules on the 1/16 and 1/32 features, a feature-fusion
module and three output heads (main at 1/8 fused features, auxiliary heads at 1/8 and 1/16 context
features).  Only the main head is used for parsing.

Checkpoint layout (``79999_iter.pth``, facexlib ``parsing_bisenet.pth``): 191 tensors named
``cp.resnet.*`` (torchvision-style ResNet-18 names), ``cp.arm16.*``, ``cp.arm32.*``, ``cp.conv_head32.*``,
``cp.conv_head16.*``, ``cp.conv_avg.*``, ``ffm.*``, ``conv_out.*``, ``conv_out16.*``, ``conv_out32.*``.
timm's resnet18 uses the same names as torchvision (conv1, bn1, layer1..4, downsample.0/1), and the
modules below are named like the reference, so our state dict *is* the reference layout; the key remap
only strips a DataParallel ``module.`` prefix and tolerates checkpoints without BatchNorm
``num_batches_tracked`` counters.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..safe_load import load_safetensors, refusal_reason, torch_load_weights
from .schema import CELEBAMASK_HQ_19, LabelSchema

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REFERENCE_PREFIXES = ("cp.resnet.", "cp.arm16.", "cp.arm32.", "cp.conv_head32.", "cp.conv_head16.",
                      "cp.conv_avg.", "ffm.", "conv_out.", "conv_out16.", "conv_out32.")
TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


# --------------------------------------------------------------------------------------------- network

class ConvBNReLU(nn.Module):
    """conv (no bias) → BatchNorm → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, ks: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ks, 1, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinement(nn.Module):
    """3x3 ConvBNReLU, then channel gating by sigmoid(BN(1x1 conv(global average)))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * gate


class FeatureFusion(nn.Module):
    """Concatenate spatial and context features, 1x1 ConvBNReLU, add a squeeze-excite-gated copy."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, ks=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, spatial, context):
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * gate


class OutputHead(nn.Module):
    """3x3 ConvBNReLU to mid channels, then a 1x1 conv (no bias) to class logits."""

    def __init__(self, in_ch: int, mid_ch: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, n_classes, 1, bias=False)

    def forward(self, x):
        return self.conv_out(self.conv(x))


def _resnet18_features() -> nn.Module:
    try:
        import timm
    except ImportError as e:  # pragma: no cover - dependency of the pack
        raise ImportError("FreeCure: face parsing needs the 'timm' package: pip install timm") from e
    # pretrained=False: never downloads; the weights come from the BiSeNet checkpoint.
    return timm.create_model("resnet18", pretrained=False, features_only=True, out_indices=(2, 3, 4))


class ContextPath(nn.Module):
    """ResNet-18 features at 1/8, 1/16, 1/32 → (res 1/8, refined context 1/8, refined context 1/16)."""

    def __init__(self):
        super().__init__()
        self.resnet = _resnet18_features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))  # broadcast add = nearest upsample of 1x1
        up32 = self.conv_head32(F.interpolate(self.arm32(feat32) + avg, feat16.shape[2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class BiSeNet(nn.Module):
    """BiSeNet face parser. forward: x (B, 3, H, W) normalised → three (B, n_classes, H, W) logit maps."""

    def __init__(self, n_classes: int = 19):
        super().__init__()
        self.n_classes = n_classes
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)
        self.conv_out32 = OutputHead(128, 64, n_classes)

    @staticmethod
    def _up(logits, size):
        return F.interpolate(logits, size, mode="bilinear", align_corners=True)

    def forward(self, x):
        size = x.shape[2:]
        feat8, cp8, cp16 = self.cp(x)
        main = self.conv_out(self.ffm(feat8, cp8))
        return self._up(main, size), self._up(self.conv_out16(cp8), size), self._up(self.conv_out32(cp16), size)

    def main_logits(self, x):
        """Main head only: x (B, 3, H, W) normalised → logits (B, n_classes, H, W)."""
        feat8, cp8, _ = self.cp(x)
        return self._up(self.conv_out(self.ffm(feat8, cp8)), x.shape[2:])


# ---------------------------------------------------------------------------------- state-dict layout

@functools.lru_cache(maxsize=4)
def expected_layout(n_classes: int = 19) -> dict[str, tuple[int, ...]]:
    """Reference key → shape of a BiSeNet(n_classes) checkpoint (191 keys, num_batches_tracked included)."""
    with torch.device("meta"):
        model = BiSeNet(n_classes)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def remap_reference_keys(state_dict: dict) -> dict:
    """Reference checkpoint names → this module's names (identical but for a 'module.' prefix)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_bisenet_state_dict(state_dict: dict, n_classes: int | None = None) -> dict:
    """Validate a (remapped) state dict against the BiSeNet layout; fills absent num_batches_tracked.

    Returns a new dict (191 entries).  Raises ValueError listing missing (BatchNorm batch counters are
    optional), unexpected and wrongly shaped keys.
    """
    if n_classes is None:
        head = state_dict.get("conv_out.conv_out.weight")
        n_classes = int(head.shape[0]) if head is not None and head.dim() == 4 else 19
    layout = expected_layout(n_classes)
    optional = [k for k in layout if k.endswith("num_batches_tracked")]  # unused in eval; old files lack them
    missing = [k for k in layout if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in layout]
    wrong = [f"{k} {tuple(state_dict[k].shape)} (expected {layout[k]})" for k in layout
             if k in state_dict and tuple(state_dict[k].shape) != layout[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            "FreeCure: this file is not a BiSeNet face-parsing checkpoint (the 79999_iter.pth / "
            f"parsing_bisenet.pth layout with keys {', '.join(p + '*' for p in REFERENCE_PREFIXES)}). "
            f"{_listing('missing', missing)}{_listing('unexpected', unexpected)}{_listing('wrong shape', wrong)}"
            "Choose the BiSeNet 79999_iter.pth (or its .safetensors conversion) in the parser loader.")
    out = dict(state_dict)
    for key in optional:
        out.setdefault(key, torch.tensor(0, dtype=torch.long))
    return out


def _listing(what: str, keys: list[str], show: int = 8) -> str:
    if not keys:
        return ""
    more = f", ... and {len(keys) - show} more" if len(keys) > show else ""
    return f"{len(keys)} {what} key(s): {', '.join(keys[:show])}{more}. "


def to_reference_layout(model: BiSeNet) -> dict[str, torch.Tensor]:
    """The model's tensors under the reference checkpoint names: detached, contiguous CPU copies."""
    out = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    stray = [k for k in out if not k.startswith(REFERENCE_PREFIXES)]
    if stray:  # would mean timm renamed its ResNet modules
        raise RuntimeError(f"FreeCure: BiSeNet keys outside the reference layout: {stray[:8]}")
    return out


def save_bisenet(model: BiSeNet, path: str | os.PathLike) -> None:
    """Write the model in the reference key layout: .pth/.pt via torch.save, or .safetensors."""
    path = os.fspath(path)
    tensors = to_reference_layout(model)
    if path.lower().endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(tensors, path, metadata={"format": "pt", "architecture": "bisenet-face-parsing",
                                           "n_classes": str(model.n_classes)})
    elif path.lower().endswith(TORCH_SUFFIXES):
        torch.save(tensors, path)
    else:
        raise ValueError(f"FreeCure: save_bisenet writes .pth, .pt or .safetensors, not {path!r}")


def _unwrap(obj, path: str) -> dict[str, torch.Tensor]:
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise ValueError(f"FreeCure: {path} holds a {type(obj).__name__}, not a state dict of tensors; "
                         "save model.state_dict() instead")
    odd = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise ValueError(f"FreeCure: {path} has non-tensor entries {odd[:8]}; it is not a BiSeNet state dict")
    return obj


def load_bisenet_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a BiSeNet checkpoint (.pth/.pt weights-only, or .safetensors), names remapped, on CPU."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FreeCure: face-parsing weights not found: {path}")
    lower = path.lower()
    if lower.endswith(".safetensors"):
        # Own, aligned storage per tensor: the file buffer's 8-byte offsets can change CPU conv
        # kernels' rounding, so .safetensors and .pth of the same weights would parse differently.
        state = {k: v.clone() for k, v in load_safetensors(path, "face-parsing").items()}
    elif lower.endswith(TORCH_SUFFIXES):
        try:
            obj = torch_load_weights(path)
        except Exception as e:  # pickled objects (weights_only refuses them), truncated or foreign files
            raise ValueError(
                f"FreeCure: refusing {path}: it does not load as plain tensors with torch.load(weights_only=True) "
                f"({refusal_reason(e)}). Pickled Python objects (a whole model, custom classes) are never "
                "unpickled; re-save just the state dict, or convert the file to .safetensors.") from None
        state = _unwrap(obj, path)
    else:
        raise ValueError(f"FreeCure: unsupported face-parsing file {path!r}; use .pth, .pt or .safetensors")
    return remap_reference_keys(state)


# ---------------------------------------------------------------------------------------------- parser

class FaceParser:
    """A loaded BiSeNet in eval mode with its label schema; parse() turns IMAGE batches into label maps.

    The model is moved to device/dtype in place (pass a copy to keep the original).
    """

    def __init__(self, model: BiSeNet, schema: LabelSchema = CELEBAMASK_HQ_19, resolution: int = 512,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, batch_size: int = 4):
        if model.n_classes != schema.n_classes:
            raise ValueError(f"FreeCure: the parser predicts {model.n_classes} classes but schema "
                             f"{schema.name!r} has {schema.n_classes}; pick the matching schema")
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval().requires_grad_(False)
        self.schema, self.resolution, self.batch_size = schema, int(resolution), max(1, int(batch_size))
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def parse(self, images: torch.Tensor, on_image: Callable[[int], None] | None = None) -> torch.Tensor:
        """images (B, H, W, 3) float 0..1 → labels (B, H, W) int64 class ids, on the images' device.

        Each image is resized to resolution² (bilinear, antialiased), normalised with ImageNet mean/std,
        parsed, its main-head logits argmax'd at resolution², and the labels resized back to (H, W) by
        nearest neighbour.  Like the reference code this squashes a non-square image into a square, so
        faces in wide or tall frames are parsed distorted; the face-crop path avoids that.
        on_image(i) is called after image i is done (progress bars, interrupts).
        """
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"FreeCure: parse expects an IMAGE batch (B, H, W, 3) in 0..1, got {shape}")
        b, h, w, _ = images.shape
        r = self.resolution
        labels = torch.empty((b, h, w), dtype=torch.int64, device=images.device)
        for start in range(0, b, self.batch_size):
            x = images[start:start + self.batch_size].to(self.device, torch.float32).permute(0, 3, 1, 2)
            if (h, w) != (r, r):
                x = F.interpolate(x, (r, r), mode="bilinear", align_corners=False, antialias=True)
            x = ((x - self._mean) / self._std).to(self.dtype)
            ids = self.model.main_logits(x).argmax(dim=1)
            if (h, w) != (r, r):
                ids = F.interpolate(ids[:, None].float(), (h, w), mode="nearest-exact")[:, 0].long()
            labels[start:start + x.shape[0]] = ids.to(images.device)
            for i in range(start, start + x.shape[0]):
                if on_image is not None:
                    on_image(i)
        return labels


def load_face_parser(path: str | os.PathLike, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32, schema: LabelSchema = CELEBAMASK_HQ_19,
                     resolution: int = 512) -> FaceParser:
    """Build BiSeNet from a checkpoint file, check its layout and class count, return a FaceParser."""
    state = check_bisenet_state_dict(load_bisenet_state_dict(path))
    n_classes = int(state["conv_out.conv_out.weight"].shape[0])
    if n_classes != schema.n_classes:
        raise ValueError(f"FreeCure: {os.fspath(path)} is a {n_classes}-class parser; FreeCure needs the "
                         f"{schema.n_classes}-class CelebAMask-HQ BiSeNet (79999_iter.pth)")
    with torch.device("meta"):
        model = BiSeNet(n_classes)
    model.load_state_dict(state, strict=True, assign=True)
    return FaceParser(model, schema=schema, resolution=resolution, device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------- test helper

def _calibration_images(generator: torch.Generator, size: int = 192) -> torch.Tensor:
    """(4, 3, size, size) normalised smooth random images (blobs and gradients), deterministic."""
    coarse = torch.rand(4, 3, 6, 6, generator=generator)
    x = F.interpolate(coarse, (size, size), mode="bicubic", align_corners=False)
    x = (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def random_bisenet(seed: int = 0, n_classes: int = 19) -> BiSeNet:
    """A BiSeNet with deterministic random weights (for tests): finite outputs, several classes per photo.

    Convs get He-normal weights, BatchNorm affine parameters small random offsets, and the BatchNorm
    running statistics are measured on synthetic smooth images so every layer is roughly normalised.
    """
    g = torch.Generator().manual_seed(seed)
    model = BiSeNet(n_classes)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        elif isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=g))
            module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=g))
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass sets the statistics exactly
    model.train()
    model(_calibration_images(g))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model.eval()
