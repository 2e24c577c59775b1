"""Face-crop parsing: parse a square crop around each detected face and paste the labels back (pure torch).

Coordinates are integer pixel boxes (x0, y0, x1, y1), x1/y1 exclusive, and may lie partly outside the
image. A crop pixel u of a crop resized from `side` to S pixels covers image pixels whose centres map
into it: crop index = floor((x - x0 + 0.5) * S / side), i.e. half-pixel-centre ("nearest-exact") mapping,
the same convention as the bilinear resize with align_corners=False.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_MARGIN = 0.5
# Share of the square's vertical slack (side - face height) placed above the face box: hair and hats reach
# further above a face box than chin and neck below it. With margin 0.5 (side = 2 x the larger face side)
# and a tall box, the square spans 0.7 face heights above the box and 0.3 below it, and half a face
# width on either side; with margin 0 it is the box itself (for a square box).
ABOVE_SHARE = 0.7

Box = tuple[int, int, int, int]


def face_crop_box(box: Sequence[float], image_hw: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """Square (x0, y0, x1, y1) ints around a face box (x0, y0, x1, y1) floats, for an image (H, W).

    side = max(w, h) * (1 + 2 * margin), centred horizontally on the box, ABOVE_SHARE of the vertical
    slack above it. The square may extend past the image edges (crop_square pads); a face box cut by the
    frame is used as detected, so the parser sees the face at its usual place and scale in the crop.
    """
    if margin < 0:
        raise ValueError(f"FreeCure: face crop margin must be >= 0, got {margin}")
    h_img, w_img = int(image_hw[0]), int(image_hw[1])
    bx0, by0, bx1, by1 = (float(v) for v in box)
    w, h = bx1 - bx0, by1 - by0
    if w <= 0 or h <= 0 or min(bx1, w_img) <= max(bx0, 0) or min(by1, h_img) <= max(by0, 0):
        raise ValueError(f"FreeCure: face box {tuple(box)} is empty or outside the {w_img}x{h_img} image")
    side = max(1, int(round(max(w, h) * (1 + 2 * margin))))
    x0 = int(math.floor((bx0 + bx1) / 2 - side / 2 + 0.5))
    y0 = int(math.floor(by0 - ABOVE_SHARE * (side - h) + 0.5))
    return x0, y0, x0 + side, y0 + side


def _nearest_index(pixels: torch.Tensor, box_start: int, box_len: int, src_len: int) -> torch.Tensor:
    """Index into a src_len-pixel copy of a box_len-pixel span starting at box_start, for image pixels:
    the exact integer form of floor((x - box_start + 0.5) * src_len / box_len)."""
    idx = ((2 * (pixels - box_start) + 1) * src_len) // (2 * box_len)
    return idx.clamp_(0, src_len - 1)


def crop_square(image: torch.Tensor, crop_box: Box, size: int) -> torch.Tensor:
    """Crop (H, W, C) float to crop_box and resize to (size, size, C) (bilinear, antialiased).

    Pixels outside the image repeat the nearest edge pixel (replicate padding): a black border could be
    read as dark hair or a hat by the parser; replicated edges look like more of the same background.
    The box need not be square; a non-square box is squashed into the square output.
    """
    if image.dim() != 3:
        raise ValueError(f"FreeCure: crop_square expects an image (H, W, C), got shape {tuple(image.shape)}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"FreeCure: empty crop box {crop_box}")
    ys = torch.arange(y0, y1, device=image.device).clamp_(0, h - 1)
    xs = torch.arange(x0, x1, device=image.device).clamp_(0, w - 1)
    patch = image.index_select(0, ys).index_select(1, xs)  # (y1-y0, x1-x0, C)
    x = patch.permute(2, 0, 1)[None].float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).to(image.dtype)


def paste_labels(canvas: torch.Tensor, crop_labels: torch.Tensor, crop_box: Box,
                 keep_background: bool = True) -> torch.Tensor:
    """Write crop labels (S, S) int64 back into canvas (H, W) int64 at crop_box; returns canvas (in place).

    The labels are resized to the box's pixel size with nearest (half-pixel-centre) sampling and only the
    part inside the image is written. Rule: with keep_background, a crop's background (label 0) never
    erases what the canvas already holds (labels of an earlier face, or a whole-image parse); its other
    labels overwrite. Without it, the crop replaces the canvas inside the box entirely.
    """
    if canvas.dim() != 2 or crop_labels.dim() != 2:
        raise ValueError(f"FreeCure: paste_labels expects canvas (H, W) and labels (S, S), got "
                         f"{tuple(canvas.shape)} and {tuple(crop_labels.shape)}")
    h, w = canvas.shape
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"FreeCure: empty crop box {crop_box}")
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        return canvas  # the box lies entirely outside the image
    src_h, src_w = crop_labels.shape
    ys = _nearest_index(torch.arange(iy0, iy1), y0, y1 - y0, src_h).to(crop_labels.device)
    xs = _nearest_index(torch.arange(ix0, ix1), x0, x1 - x0, src_w).to(crop_labels.device)
    patch = crop_labels.index_select(0, ys).index_select(1, xs).to(device=canvas.device, dtype=canvas.dtype)
    region = canvas[iy0:iy1, ix0:ix1]
    if keep_background:
        patch = torch.where(patch != 0, patch, region)
    region.copy_(patch)
    return canvas


def _parse(parse_fn: Callable, crops: torch.Tensor) -> torch.Tensor:
    """parse_fn on (N, S, S, 3) crops, checked to return (N, S, S) labels, as int64."""
    labels = parse_fn(crops)
    n, s = crops.shape[0], crops.shape[1]
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n, s, crops.shape[2]):
        raise ValueError(f"FreeCure: parse_fn must return labels (N, S, S) = {(n, s, crops.shape[2])}, got "
                         f"{tuple(getattr(labels, 'shape', ())) or type(labels)}")
    return labels.long()


def _to_uint8(image: torch.Tensor):
    """(H, W, 3) float 0..1 -> numpy uint8 (H, W, 3)."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def parse_with_faces(images: torch.Tensor, parse_fn: Callable[[torch.Tensor], torch.Tensor],
                     detect_fn: Callable | None, crop_size: int = 512, margin: float = DEFAULT_MARGIN,
                     on_image: Callable[[int], None] | None = None) -> tuple[torch.Tensor, list[list]]:
    """Label maps (B, H, W) int64 for images (B, H, W, 3) in 0..1, and the faces used per image.

    detect_fn(uint8 (H, W, 3) numpy) -> list of faces with a .box; parse_fn((N, S, S, 3)) -> (N, S, S)
    labels, S = crop_size. Each face's square crop (face_crop_box) is parsed and pasted back, largest crop
    first so that smaller faces, parsed at a finer scale in their own crop, keep their labels where crops
    overlap; a crop's background never erases another face's labels. Images without a face (or all images
    when detect_fn is None) are squashed whole to S x S, parsed and resized back. on_image(i) runs after
    each image (progress, interrupts).
    """
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"FreeCure: expected images (B, H, W, 3), got shape {tuple(images.shape)}")
    b, h, w, _ = images.shape
    labels = torch.zeros((b, h, w), dtype=torch.int64, device=images.device)
    all_faces: list[list] = []
    for i in range(b):
        image = images[i]
        faces = []
        if detect_fn is not None:
            faces = [f for f in detect_fn(_to_uint8(image)) if _on_image(f.box, (h, w))]
        if faces:
            boxes = [face_crop_box(f.box, (h, w), margin) for f in faces]
            crops = torch.stack([crop_square(image, bx, crop_size) for bx in boxes])
            crop_labels = _parse(parse_fn, crops)
            for k in sorted(range(len(boxes)), key=lambda k: -(boxes[k][2] - boxes[k][0])):
                paste_labels(labels[i], crop_labels[k], boxes[k], keep_background=True)
        else:
            whole = (0, 0, w, h)
            crop_labels = _parse(parse_fn, crop_square(image, whole, crop_size)[None])
            paste_labels(labels[i], crop_labels[0], whole, keep_background=False)
        all_faces.append(faces)
        if on_image is not None:
            on_image(i)
    return labels, all_faces


def _on_image(box, image_hw) -> bool:
    """True when the face box overlaps the image with a positive area."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = image_hw
    return min(x1, w) > max(x0, 0) and min(y1, h) > max(y0, 0)
