"""SCRFD face detector (the detector of an insightface model pack) run with onnxruntime.

The model folder is `<models>/insightface/models/<antelopev2|buffalo_l>/`; its detector is
`scrfd_10g_bnkps.onnx` (antelopev2) or `det_10g.onnx` (buffalo_l). onnxruntime is imported only when a
detector is loaded, so this module imports without it. No ComfyUI imports.

SCRFD in short: the input is an RGB image letterboxed into the network size (top-left aligned, black
padding) and normalised as (pixel - 127.5) / 128. For every stride s (8, 16, 32) and every cell (i, j) of
the s-grid there are A anchors (2 here) whose point is (j*s, i*s); the outputs per stride are scores
(N, 1), box distances (N, 4) = (left, top, right, bottom) and optionally 5 keypoint offsets (N, 10), all
in stride units, with N = rows * cols * A ordered row-major over cells and anchor-fastest.

Every step follows insightface 0.7.3 (model_zoo/retinaface.py, which its FaceAnalysis uses for SCRFD files) so
that boxes, scores and keypoints equal what InstantID/PuLID users get from the same .onnx file and image
(tests/core/test_insightface_parity.py): the letterbox size is truncated with int() and cv2.resize'd
(bilinear, no antialiasing), one scale (the height's) maps network pixels back to image pixels, the blob is
(pixel - 127.5) * float32(1 / 128) as cv2.dnn.blobFromImage computes it, and non-maximum suppression is
insightface's greedy one on +1-pixel areas, keeping boxes whose overlap is at most the threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..onnx_session import import_onnxruntime, log_providers, open_session

DETECTOR_FILES = ("scrfd_10g_bnkps.onnx", "det_10g.onnx")  # antelopev2, buffalo_l
DETECTOR_PREFIXES = ("det_", "scrfd")
NO_ONNXRUNTIME_ADVICE = ", or choose face_detector 'none' to parse whole images"
INPUT_MEAN, INPUT_STD = 127.5, 128.0
BASE_STRIDE = 8  # strides are 8, 16, 32 (and 64, 128 for 5-level models)


@dataclass(eq=False)  # kps is an array: compare faces by identity
class Face:
    """One detection in image pixels: box (x0, y0, x1, y1), score in 0..1, kps (5, 2) as (x, y) or None."""
    box: tuple[float, float, float, float]
    score: float
    kps: np.ndarray | None = None


def find_detector_file(folder) -> Path:
    """The SCRFD .onnx file in an insightface model pack folder (known names first, then det_*/scrfd*)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FreeCure: face detector folder {folder} does not exist; put the insightface "
                                f"antelopev2 or buffalo_l pack in models/insightface/models/")
    for name in DETECTOR_FILES:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".onnx"
                    and p.name.lower().startswith(DETECTOR_PREFIXES))
    if others:
        return others[0]
    raise FileNotFoundError(f"FreeCure: no face detector in {folder}: expected {' or '.join(DETECTOR_FILES)} "
                            f"(or an .onnx file named det_* / scrfd*); copy it from the insightface "
                            f"antelopev2 or buffalo_l pack")


def require_onnxruntime() -> None:
    """ImportError naming `pip install onnxruntime` and the face_detector 'none' fallback when onnxruntime is
    not installed (the message FaceDetector.load gives); nothing otherwise."""
    import_onnxruntime("the face detector", NO_ONNXRUNTIME_ADVICE)


class FaceDetector:
    """An SCRFD onnxruntime session; `detect(image)` returns faces sorted by score."""

    def __init__(self, session, path: Path | None = None):
        self.session = session
        self.path = path
        self.providers: list[str] = list(session.get_providers())  # what really runs, not what was asked
        inp = session.get_inputs()[0]
        self.input_name: str = inp.name
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ValueError(f"FreeCure: {path} is not an SCRFD detector: input {inp.name} has shape {shape}, "
                             f"expected (1, 3, H, W)")
        h, w = shape[2], shape[3]
        # (H, W) for fixed-size models; None when the model accepts any size.
        self.input_size: tuple[int, int] | None = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.output_names: list[str] = [o.name for o in session.get_outputs()]
        if len(self.output_names) not in (6, 9, 10, 15):
            raise ValueError(f"FreeCure: {path} is not an SCRFD detector ({len(self.output_names)} outputs, "
                             f"expected 6 or 9); use scrfd_10g_bnkps.onnx or det_10g.onnx")

    @classmethod
    def load(cls, path, providers: list[str] | None = None) -> "FaceDetector":
        """Open an SCRFD .onnx file; providers default to CUDA (when this onnxruntime has it) then CPU."""
        session, wanted = open_session(path, "face detector", providers, advice=NO_ONNXRUNTIME_ADVICE)
        det = cls(session, Path(path))
        log_providers("face detector", path, wanted, det.providers)
        return det

    def network_size(self, max_size: int = 640) -> tuple[int, int]:
        """(H, W) fed to the network: the model's fixed size, else max_size rounded up to a multiple of 32."""
        if self.input_size is not None:
            return self.input_size
        side = max(32, int(math.ceil(max_size / 32)) * 32)
        return side, side

    def detect(self, image: np.ndarray, threshold: float = 0.5, nms_iou: float = 0.4,
               max_size: int = 640) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), best score first. max_size only applies to dynamic models."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"FreeCure: detect expects an RGB numpy array (H, W, 3), got "
                             f"{getattr(image, 'shape', type(image))}")
        if image.dtype != np.uint8:
            raise ValueError(f"FreeCure: detect expects uint8 pixels, got {image.dtype}; convert with "
                             f"(image * 255).round().astype(np.uint8)")
        net_hw = self.network_size(max_size)
        blob, det_scale = letterbox(image, net_hw)
        outs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, kps = decode_outputs(outs, net_hw, threshold)
        if len(scores) == 0:
            return []
        # float32 / float32(scale), as insightface divides its float32 arrays by the Python float det_scale
        boxes = boxes / np.float32(det_scale)
        if kps is not None:
            kps = kps / np.float32(det_scale)
        order = scores.argsort()[::-1]  # insightface sorts before its NMS (which sorts again): same tie order
        boxes, scores = boxes[order], scores[order]
        kps = None if kps is None else kps[order]
        keep = nms(boxes, scores, nms_iou)
        return [Face(box=tuple(float(v) for v in boxes[i]), score=float(scores[i]),
                     kps=None if kps is None else kps[i].copy()) for i in keep]


def letterbox_size(image_hw: tuple[int, int], net_hw: tuple[int, int]) -> tuple[int, int, float]:
    """(new_h, new_w, det_scale): an (H, W) image's resized size inside an (h, w) input and its one scale.

    As insightface computes them: the side that does not fill the input is truncated with int(), and the
    scale is new_h / H for both axes (so x is off by under one network pixel, as in insightface).
    """
    h, w = image_hw
    net_h, net_w = net_hw
    im_ratio, model_ratio = float(h) / w, float(net_h) / net_w
    if im_ratio > model_ratio:
        new_h = net_h
        new_w = int(new_h / im_ratio)
    else:
        new_w = net_w
        new_h = int(new_w * im_ratio)
    new_h, new_w = max(1, new_h), max(1, new_w)  # insightface fails on a 0-pixel side; never smaller than 1
    return new_h, new_w, float(new_h) / h


def letterbox(image: np.ndarray, net_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """uint8 RGB (H, W, 3) -> normalised blob (1, 3, h, w) float32 and the scale applied (see letterbox_size).

    The image keeps its aspect ratio, is resized (cv2 bilinear) into the top-left corner and padded
    right/bottom with black; a network coordinate divided by the scale is an image coordinate.
    """
    net_h, net_w = net_hw
    new_h, new_w, det_scale = letterbox_size(image.shape[:2], net_hw)
    canvas = np.zeros((net_h, net_w, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(np.ascontiguousarray(image), (new_w, new_h))
    x = canvas.transpose(2, 0, 1)[None].astype(np.float32)
    blob = (x - np.float32(INPUT_MEAN)) * np.float32(1.0 / INPUT_STD)  # cv2.dnn.blobFromImage's arithmetic
    return np.ascontiguousarray(blob), det_scale


def anchor_points(rows: int, cols: int, stride: int, anchors: int) -> np.ndarray:
    """(rows*cols*anchors, 2) points (x, y) = (j*stride, i*stride), row-major over cells, anchor-fastest."""
    ys, xs = np.mgrid[:rows, :cols]
    pts = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(pts, anchors, axis=0)


def _group_outputs(outs: list[np.ndarray]) -> tuple[list, list, list]:
    """Split raw outputs into per-stride (scores, boxes, kps) lists, finest stride first, by their shapes."""
    groups: dict[int, list[np.ndarray]] = {1: [], 4: [], 10: []}
    for o in outs:
        o = np.asarray(o, dtype=np.float32)
        if o.ndim == 3 and o.shape[0] == 1:  # some exports keep the batch dimension
            o = o[0]
        if o.ndim != 2 or o.shape[1] not in groups:
            raise ValueError(f"FreeCure: unexpected SCRFD output shape {o.shape}; expected (N, 1), (N, 4) or "
                             f"(N, 10) - is this an SCRFD detector (scrfd_10g_bnkps.onnx / det_10g.onnx)?")
        groups[o.shape[1]].append(o)
    scores, boxes, kps = (sorted(groups[k], key=lambda a: -a.shape[0]) for k in (1, 4, 10))
    if not scores or len(boxes) != len(scores) or (kps and len(kps) != len(scores)):
        raise ValueError(f"FreeCure: SCRFD outputs do not pair up ({len(scores)} score, {len(boxes)} box, "
                         f"{len(kps)} keypoint maps)")
    return scores, boxes, kps


def decode_outputs(outs: list[np.ndarray], net_hw: tuple[int, int], threshold: float):
    """Raw outputs -> boxes (M, 4), scores (M,), kps (M, 5, 2) or None in network pixels, score >= threshold."""
    scores, boxes, kps = _group_outputs(outs)
    net_h, net_w = net_hw
    all_boxes, all_scores, all_kps = [], [], []
    for level, (sc, bx) in enumerate(zip(scores, boxes)):
        stride = BASE_STRIDE * 2 ** level
        n = sc.shape[0]
        if bx.shape[0] != n or (kps and kps[level].shape[0] != n):
            raise ValueError(f"FreeCure: SCRFD stride {stride} outputs disagree in length")
        rows, cols = net_h // stride, net_w // stride
        if n % (rows * cols):
            rows, cols = -(-net_h // stride), -(-net_w // stride)
        if n % (rows * cols):
            raise ValueError(f"FreeCure: SCRFD stride {stride} output has {n} rows, not a multiple of the "
                             f"{rows}x{cols} grid for input {net_h}x{net_w}")
        keep = np.nonzero(sc[:, 0] >= threshold)[0]
        if keep.size == 0:
            continue
        pts = anchor_points(rows, cols, stride, n // (rows * cols))[keep]
        d = bx[keep] * stride
        all_boxes.append(np.concatenate([pts - d[:, :2], pts + d[:, 2:]], axis=1))
        all_scores.append(sc[keep, 0])
        if kps:
            all_kps.append(pts[:, None, :] + kps[level][keep].reshape(-1, 5, 2) * stride)
    if not all_scores:
        return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), None
    out_kps = np.concatenate(all_kps).astype(np.float32) if kps else None
    return np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32), out_kps


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices kept by insightface's greedy non-maximum suppression, highest score first.

    Areas count +1 pixel per side and a box is dropped when its overlap with a kept box exceeds iou, in
    float32 for float32 boxes, exactly as insightface's SCRFD/RetinaFace.nms.
    """
    iou = float(iou)  # a Python float, compared in float32 as insightface's 0.4 is
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= iou)[0] + 1]
    return keep
