"""Stage 2 of FreeCure: foundation images → face label maps → attribute masks.

Ties the parser (bisenet), the face detector and crop/paste (face_detect, face_crop), the prompt reader
(attributes) and the mask operations (mask_ops) together; pure torch, no ComfyUI.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from . import mask_ops
from ..attributes import ALL_ATTRIBUTES, attributes_from_prompt
from .face_crop import parse_with_faces
from .schema import LabelSchema, palette

MODES = ("face crop", "whole image")


@dataclass
class FaceParse:
    """Label maps (B, H, W) int64 at image resolution, their schema, and the faces found per image."""
    labels: torch.Tensor
    schema: LabelSchema
    faces: list = field(default_factory=list)
    mode: str = "whole image"


@dataclass
class LoadedFaceParser:
    """A loaded parsing model plus an optional face detector (ComfyUI type FACE_PARSER)."""
    parser: object  # bisenet.FaceParser
    detector: object | None = None  # face_detect.FaceDetector
    note: str = ""


def parse_images(face_parser: LoadedFaceParser, images: torch.Tensor, mode: str = "face crop",
                 margin: float = 0.5, on_image: Callable[[int], None] | None = None) -> FaceParse:
    """Label maps for a batch of IMAGEs (B, H, W, 3) in 0..1.

    "face crop" parses a square crop around each detected face at the parser's resolution and pastes the
    labels back (any aspect ratio, small faces); images without a detected face, or every image when no
    detector is loaded, are parsed whole. "whole image" squashes the frame to the parser's square input,
    as the reference code does.
    """
    if mode not in MODES:
        raise ValueError(f"FreeCure: mode must be one of {MODES}, got {mode!r}")
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"FreeCure: expected an IMAGE batch (B, H, W, 3), got shape {tuple(images.shape)}")
    parser = face_parser.parser
    detect = face_parser.detector.detect if mode == "face crop" and face_parser.detector is not None else None
    labels, faces = parse_with_faces(images, parser.parse, detect, crop_size=parser.resolution, margin=margin,
                                     on_image=on_image)
    return FaceParse(labels=labels, schema=parser.schema, faces=faces,
                     mode="face crop" if detect is not None else "whole image")


def choose_attributes(prompt: str, manual: str) -> tuple[list[str], str]:
    """Attributes to mask and a one-line explanation: a manual comma list wins over reading the prompt."""
    names = [a.strip().lower() for a in manual.replace(";", ",").split(",") if a.strip()]
    if names:
        unknown = [a for a in names if a not in ALL_ATTRIBUTES]
        if unknown:
            raise ValueError(f"FreeCure: unknown attribute(s) {unknown}; choose from {', '.join(ALL_ATTRIBUTES)}")
        return names, f"manual: {', '.join(names)}"
    match = attributes_from_prompt(prompt)
    parts = [f"{a} ('{w}')" for a, w in match.evidence]
    text = "from prompt: " + (", ".join(parts) if parts else "nothing recognised")
    if match.ignored:
        text += f"; ignored (negated): {', '.join(match.ignored)}"
    return list(match.attributes), text


def attribute_mask(parse: FaceParse, attributes: list[str], grow: int = 0, feather: float = 0.0) -> torch.Tensor:
    """MASK (B, H, W): union of the attributes' labels, grown (or shrunk) and feathered in pixels."""
    ids = parse.schema.ids_for(attributes) if attributes else []
    mask = mask_ops.labels_to_mask(parse.labels, ids)
    if grow:
        mask = mask_ops.grow_mask(mask, int(grow))
    if feather:
        mask = mask_ops.feather_mask(mask, float(feather))
    return mask


def preview(parse: FaceParse, images: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """IMAGE (B, H, W, 3): the mask over the images (or over the colour-coded label map when no images are
    given); without a mask, the colour-coded label map."""
    labels = mask_ops.colorize_labels(parse.labels, torch.from_numpy(np.asarray(palette(parse.schema))))
    if mask is None:
        return labels
    return mask_ops.overlay_mask(images if images is not None else labels, mask)


SAM_COMBINE = ("replace", "union", "intersect")


def check_sam_inputs(images, mask) -> None:
    """ValueError naming the fix unless images is an IMAGE batch (B, H, W, 3) and mask (if any) is one (H, W)
    mask or one per image at the images' size."""
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"FreeCure: SAM Refine's image must be an IMAGE batch (B, H, W, 3), got {shape}")
    if mask is None:
        return
    if not torch.is_tensor(mask) or mask.dim() not in (2, 3):
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise ValueError(f"FreeCure: SAM Refine's region must be a MASK (B, H, W), got {shape}")
    m = mask if mask.dim() == 3 else mask[None]
    (b, h, w), (ib, ih, iw) = tuple(m.shape), tuple(images.shape[:3])
    if (h, w) != (ih, iw):
        raise ValueError(f"FreeCure: SAM Refine's region mask is {w}x{h} but the image is {iw}x{ih}; make the mask "
                         "from this image (or resize it to the image's size)")
    if b not in (1, ib):
        raise ValueError(f"FreeCure: SAM Refine's region has {b} masks for {ib} images; give one mask, or one per "
                         "image")


def sam_refine(refiner, images: torch.Tensor, mask: torch.Tensor | None, box=None, points=(),
               combine: str = "replace", on_image: Callable[[int], None] | None = None) -> torch.Tensor:
    """MASK (B, H, W) from SAM for each image: prompted by `box`/`points` when given, else by the bounding box
    of that image's input mask; then replaces, unites with or intersects the input mask."""
    if combine not in SAM_COMBINE:
        raise ValueError(f"FreeCure: combine must be one of {SAM_COMBINE}")
    check_sam_inputs(images, mask)
    if mask is not None and mask.dim() == 2:
        mask = mask[None]
    out = []
    for i in range(images.shape[0]):
        region = None if mask is None else mask[min(i, mask.shape[0] - 1)]
        if points:
            xy = [(p[0], p[1]) for p in points]
            labels = [int(p[2]) if len(p) > 2 else 1 for p in points]
            result = refiner.segment_points(images[i], xy, labels, box=box)
        else:
            prompt_box = box if box is not None else mask_ops.mask_bbox(region)
            result = (torch.zeros(images.shape[1:3]) if prompt_box is None
                      else refiner.refine_box(images[i], prompt_box))
        result = result.float().cpu()
        if region is not None and combine != "replace":
            region = region.float().cpu()
            result = torch.maximum(result, region) if combine == "union" else torch.minimum(result, region)
        out.append(result)
        if on_image is not None:
            on_image(i)
    return torch.stack(out)
