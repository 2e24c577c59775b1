"""ArcFace face recognizer (the recognition model of an insightface pack) run with onnxruntime.

The pack folder is `<models>/insightface/models/<antelopev2|buffalo_l>/`; its recognizer is `glintr100.onnx`
(antelopev2) or `w600k_r50.onnx` (buffalo_l). A face is first aligned: its 5 keypoints (eyes, nose, mouth
corners) are mapped onto the fixed ArcFace template by a least-squares similarity transform and the image is
warped to 112 x 112. The network takes that crop as an RGB NCHW float32 blob and returns one raw (not
L2-normalised) embedding per face.

Input normalisation follows insightface: graphs converted from MXNet carry their own normalisation, seen as
nodes named Sub*/_minus* and Mul*/_mul* among the first 8 nodes; those are fed raw pixels (mean 0, std 1),
all others (pixel - 127.5) / 127.5. Reading node names needs the optional `onnx` package; without it the
(pixel - 127.5) / 127.5 default is used (right for PyTorch exports such as
glintr100; an MXNet-converted model then gets wrong embeddings, so install onnx to be safe).

onnxruntime is imported only when a recognizer is loaded, so this module imports without it. No ComfyUI
imports.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..onnx_session import log_providers, open_session

log = logging.getLogger("FreeCure")

ARCFACE_SIZE = 112
# The 5-point ArcFace template (x, y) in a 112 x 112 crop: left eye, right eye, nose, left/right mouth corner.
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
RECOGNIZER_FILES = ("glintr100.onnx", "w600k_r50.onnx")  # antelopev2, buffalo_l
# Other models of an insightface pack, never the recognizer.
NON_RECOGNIZER_PREFIXES = ("det_", "scrfd", "1k3d68", "2d106det", "genderage")
NORM_SCAN_NODES = 8
SUB_PREFIXES, MUL_PREFIXES = ("Sub", "_minus"), ("Mul", "_mul")
DEFAULT_MEAN, DEFAULT_STD = 127.5, 127.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity (rotation, uniform scale, translation; no reflection) that best maps src onto dst.

    Least squares over corresponding points (Umeyama 1991): src and dst are (N, 2) arrays of (x, y), N >= 2.
    The arithmetic is scikit-image's SimilarityTransform.estimate step by step, in the points' common precision
    (float32 keypoints and the float32 template are fitted in float32, then the matrix is float64), so the
    matrix equals the one insightface's face_align.estimate_norm gives for a detector's float32 keypoints.
    """
    src = np.asarray(src)
    dst = np.asarray(dst)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"FreeCure: similarity_transform needs two (N, 2) point arrays of the same shape with "
                         f"N >= 2, got {src.shape} and {dst.shape}")
    dtype = np.result_type(src.dtype, dst.dtype, np.float32)  # float32 only when both are float32 (or narrower)
    src, dst = src.astype(dtype, copy=False), dst.astype(dtype, copy=False)
    num, dim = src.shape
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_demean, dst_demean = src - src_mean, dst - dst_mean
    if src_demean.var(axis=0).sum() <= 1e-12:
        raise ValueError("FreeCure: cannot align a face whose keypoints all coincide; check the detector output")
    a = dst_demean.T @ src_demean / num
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(a) < 0:  # the best orthogonal map would be a reflection
        d[dim - 1] = -1
    t = np.eye(dim + 1, dtype=np.float64)
    u, s, v = np.linalg.svd(a)
    rank = np.count_nonzero(s > s.max() * np.max(a.shape) * np.finfo(float).eps)
    if rank == 0:
        raise ValueError("FreeCure: cannot align a face whose keypoints all coincide; check the detector output")
    if rank == dim - 1 and np.linalg.det(u) * np.linalg.det(v) > 0:  # collinear points
        t[:dim, :dim] = u @ v
    elif rank == dim - 1:
        flip = d.copy()
        flip[dim - 1] = -1
        t[:dim, :dim] = u @ np.diag(flip) @ v
    else:
        t[:dim, :dim] = u @ np.diag(d) @ v
    scale = 1.0 / src_demean.var(axis=0).sum() * (s @ d)
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
    t[:dim, :dim] *= scale
    return t[:2]


def norm_crop(image: np.ndarray, kps: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """The (size, size, 3) uint8 crop of an RGB uint8 image with the face's 5 keypoints on the ArcFace template.

    The float32 template is scaled by size / 112 and fitted to the keypoints (see similarity_transform), as
    insightface's face_align.norm_crop does; the warp is cv2 bilinear with black outside the image.
    """
    kps = np.asarray(kps)
    if kps.shape != (5, 2):
        raise ValueError(f"FreeCure: norm_crop needs 5 keypoints as a (5, 2) array, got {kps.shape}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"FreeCure: norm_crop expects an RGB uint8 array (H, W, 3), got "
                         f"{getattr(image, 'shape', type(image))} {getattr(image, 'dtype', '')}")
    m = similarity_transform(kps, ARCFACE_DST * (float(size) / ARCFACE_SIZE))
    return cv2.warpAffine(image, m, (size, size), borderValue=0.0)


def find_recognizer_file(folder) -> Path:
    """The ArcFace .onnx file in an insightface pack folder (known names first, then any other model file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FreeCure: face recognizer folder {folder} does not exist; put the insightface "
                                f"antelopev2 pack in ComfyUI/models/insightface/models/antelopev2/")
    for name in RECOGNIZER_FILES:
        if (folder / name).is_file():
            return folder / name
    others = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".onnx"
                    and not p.name.lower().startswith(NON_RECOGNIZER_PREFIXES))
    if others:
        return others[0]
    raise FileNotFoundError(f"FreeCure: no face recognizer in {folder}: expected {' or '.join(RECOGNIZER_FILES)} "
                            f"(or another .onnx file that is not a detector, landmark or genderage model); copy "
                            f"it from the insightface antelopev2 pack")


def graph_normalisation(path) -> tuple[float, float]:
    """(mean, std) for the input blob: (0, 1) when the graph normalises itself (Sub and Mul nodes among its
    first 8, by insightface's naming rule), else (127.5, 127.5). Needs `onnx`; without it, the latter."""
    try:
        import onnx
    except ImportError:
        log.info("FreeCure: onnx is not installed; assuming %s needs (pixel - 127.5) / 127.5 input",
                 Path(path).name)
        return DEFAULT_MEAN, DEFAULT_STD
    nodes = onnx.load(str(path), load_external_data=False).graph.node[:NORM_SCAN_NODES]
    names = [n.name for n in nodes]
    has_sub = any(n.startswith(SUB_PREFIXES) for n in names)
    has_mul = any(n.startswith(MUL_PREFIXES) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (DEFAULT_MEAN, DEFAULT_STD)


class ArcFaceRecognizer:
    """An ArcFace onnxruntime session; `embed(aligned crops)` returns raw embeddings (B, D)."""

    def __init__(self, session, path: Path | None = None, mean: float = DEFAULT_MEAN, std: float = DEFAULT_STD):
        self.session = session
        self.path = path
        self.providers: list[str] = list(session.get_providers())  # what really runs, not what was asked
        self.input_mean, self.input_std = float(mean), float(std)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        spatial_ok = len(shape) == 4 and all(not isinstance(v, int) or v == ARCFACE_SIZE for v in shape[2:])
        if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3 or not spatial_ok:
            got = [(i.name, list(i.shape)) for i in inputs]
            raise ValueError(f"FreeCure: {path} is not an ArcFace recognizer: inputs {got}, expected one input "
                             f"(N, 3, 112, 112); use glintr100.onnx (antelopev2) or w600k_r50.onnx (buffalo_l)")
        out_shape = list(outputs[0].shape) if len(outputs) == 1 else []
        if len(outputs) != 1 or len(out_shape) != 2:
            got = [(o.name, list(o.shape)) for o in outputs]
            raise ValueError(f"FreeCure: {path} is not an ArcFace recognizer: outputs {got}, expected one output "
                             f"(N, 512); use glintr100.onnx (antelopev2) or w600k_r50.onnx (buffalo_l)")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        # None when the batch dimension is dynamic; else the only batch size the model accepts.
        self.batch_size: int | None = shape[0] if isinstance(shape[0], int) else None
        # None when the graph leaves the width symbolic; set by the first embed().
        self.embedding_dim: int | None = out_shape[1] if isinstance(out_shape[1], int) else None

    @classmethod
    def load(cls, path, providers: list[str] | None = None) -> "ArcFaceRecognizer":
        """Open an ArcFace .onnx file; providers default to CUDA (when this onnxruntime has it) then CPU."""
        session, wanted = open_session(path, "face recognizer", providers)
        mean, std = graph_normalisation(path)
        rec = cls(session, Path(path), mean, std)
        log_providers("face recognizer", path, wanted, rec.providers)
        return rec

    def blob(self, aligned: np.ndarray) -> np.ndarray:
        """uint8 RGB crops (B, 112, 112, 3) -> float32 NCHW (B, 3, 112, 112) (pixel - mean) / std, RGB order.

        Computed as (pixel - mean) * float32(1 / std), cv2.dnn.blobFromImages' arithmetic with which insightface
        feeds its recognizer (dividing by 127.5 instead differs in the last bit for some pixels).
        """
        x = aligned.astype(np.float32).transpose(0, 3, 1, 2)
        return np.ascontiguousarray((x - np.float32(self.input_mean)) * np.float32(1.0 / self.input_std))

    def embed(self, aligned: np.ndarray) -> np.ndarray:
        """Raw (not normalised) float32 embeddings (B, D) of aligned RGB uint8 crops (B, 112, 112, 3) or one crop."""
        aligned = np.asarray(aligned)
        if aligned.ndim == 3:
            aligned = aligned[None]
        if aligned.ndim != 4 or aligned.shape[1:] != (ARCFACE_SIZE, ARCFACE_SIZE, 3) or aligned.dtype != np.uint8:
            raise ValueError(f"FreeCure: embed expects aligned RGB uint8 crops (B, 112, 112, 3), got "
                             f"{aligned.shape} {aligned.dtype}; align faces with norm_crop first")
        if len(aligned) == 0:
            return np.zeros((0, self.embedding_dim or 0), np.float32)
        blob = self.blob(aligned)
        if self.batch_size is None:
            chunks = [blob]
        else:  # a fixed-batch export: run it batch_size crops at a time, padding the last chunk
            n = self.batch_size
            chunks = []
            for i in range(0, len(blob), n):
                c = blob[i:i + n]
                chunks.append(np.concatenate([c, np.zeros((n - len(c),) + c.shape[1:], c.dtype)]) if len(c) < n
                              else c)
        outs = [np.asarray(self.session.run([self.output_name], {self.input_name: c})[0], dtype=np.float32)
                for c in chunks]
        emb = np.concatenate(outs)[:len(aligned)]
        if self.embedding_dim is None:
            self.embedding_dim = int(emb.shape[1])
        return emb
