"""InstantID face analysis with an insightface antelopev2 pack: SCRFD detection plus ArcFace embeddings.

InstantID conditions on the raw ArcFace embedding of the reference face (through its Resampler) and on the
face's 5 keypoints (drawn for IdentityNet). This module finds faces, aligns each onto the ArcFace template and
embeds it; the pack folder is `ComfyUI/models/insightface/models/antelopev2/` and nothing is ever downloaded.
onnxruntime is imported only when the models are loaded. No ComfyUI imports.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..onnx_session import import_onnxruntime
from ..parsing.face_detect import FaceDetector, find_detector_file
from .arcface import ArcFaceRecognizer, find_recognizer_file, norm_crop

log = logging.getLogger("FreeCure")

# Network sizes tried in turn until a face is found (dynamic-size detectors only): a face filling most of a
# tightly cropped photo is often missed at 640 and found at a smaller size. The sizes of cubiq's
# ComfyUI_InstantID (range(640, 128, -64)); PuLID_ComfyUI stops at 320.
DET_SIZES = (640, 576, 512, 448, 384, 320, 256, 192)
PACK_HINT = ("put the insightface antelopev2 pack (scrfd_10g_bnkps.onnx, glintr100.onnx, ...) in "
             "ComfyUI/models/insightface/models/antelopev2/; FreeCure never downloads models")
# SCRFD output counts: 3 or 5 strides x (score, box[, keypoints]).
OUTPUTS_WITH_KPS, OUTPUTS_WITHOUT_KPS = (9, 15), (6, 10)


@dataclass(eq=False)  # arrays inside: compare faces by identity
class AnalyzedFace:
    """One face: box (x0, y0, x1, y1) and kps (5, 2) float32 in the original image's pixels, detector score,
    and the raw (not normalised) ArcFace embedding (D,) float32."""
    box: tuple[float, float, float, float]
    score: float
    kps: np.ndarray
    embedding: np.ndarray

    @property
    def area(self) -> float:
        """Box area in pixels, computed in float32 from the detector's float32 box as peer packs compare it."""
        x0, y0, x1, y1 = (np.float32(v) for v in self.box)
        return float((x1 - x0) * (y1 - y0))


def _check_image(image, what: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"FreeCure: face analysis expects an RGB numpy array (H, W, 3) for the {what}, got "
                         f"{getattr(image, 'shape', type(image))}")
    if image.dtype != np.uint8:
        raise ValueError(f"FreeCure: face analysis expects uint8 pixels for the {what}, got {image.dtype}; convert "
                         f"with (image * 255).round().astype(np.uint8)")
    return image


def _no_kps_error(detector) -> ValueError:
    name = getattr(getattr(detector, "path", None), "name", None) or "the face detector"
    return ValueError(f"FreeCure: {name} gives no facial keypoints, but InstantID needs a detector with 5 "
                      f"keypoints; use scrfd_10g_bnkps.onnx from the antelopev2 pack (or det_10g.onnx)")


def _missing_files_error(folder: Path, missing: list[str]) -> FileNotFoundError:
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    msg = f"FreeCure: {folder} has no {' and no '.join(missing)}; found {', '.join(entries) or 'nothing'}. "
    nested = [p for p in folder.iterdir() if p.is_dir() and any(p.glob("*.onnx"))]
    if nested:
        msg += f"The models seem to be in the subfolder {nested[0].name}/: move them up into {folder}. "
    return FileNotFoundError(msg + PACK_HINT[0].upper() + PACK_HINT[1:])


class FaceAnalysis:
    """A face detector (SCRFD with keypoints) and an ArcFace recognizer from one insightface pack folder."""

    def __init__(self, detector: FaceDetector, recognizer: ArcFaceRecognizer, folder: Path | None = None):
        self.detector = detector
        self.recognizer = recognizer
        self.folder = Path(folder) if folder is not None else None

    @classmethod
    def load(cls, folder, providers: list[str] | None = None) -> "FaceAnalysis":
        """Load the detector and recognizer of the pack in folder; providers default to CUDA then CPU."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"FreeCure: insightface model folder {folder} not found; {PACK_HINT}")
        missing, paths = [], {}
        for key, finder, what in (("detector", find_detector_file, "face detector (scrfd_10g_bnkps.onnx)"),
                                  ("recognizer", find_recognizer_file, "face recognizer (glintr100.onnx)")):
            try:
                paths[key] = finder(folder)
            except FileNotFoundError:
                missing.append(what)
        if missing:
            raise _missing_files_error(folder, missing)
        try:
            import_onnxruntime()
        except ImportError as e:
            raise ImportError("FreeCure: InstantID face analysis needs onnxruntime: pip install onnxruntime "
                              "(or onnxruntime-gpu for CUDA)") from e
        detector = FaceDetector.load(paths["detector"], providers)
        if len(detector.output_names) in OUTPUTS_WITHOUT_KPS:
            raise _no_kps_error(detector)
        recognizer = ArcFaceRecognizer.load(paths["recognizer"], providers)
        return cls(detector, recognizer, folder)

    @property
    def providers(self) -> dict[str, list[str]]:
        """The onnxruntime providers each session really runs on: {"detector": [...], "recognizer": [...]}."""
        return {"detector": list(self.detector.providers), "recognizer": list(self.recognizer.providers)}

    def describe(self) -> str:
        """One line for the UI: the pack name and the provider each model runs on."""
        name = self.folder.name if self.folder is not None else "face analysis"
        p = self.providers
        det, rec = (p[k][0] if p[k] else "?" for k in ("detector", "recognizer"))
        return f"{name}: detector on {det}, recognizer on {rec}"

    def detection_sizes(self, det_sizes=DET_SIZES) -> list[int]:
        """The max_size values to try in order: one for fixed-size detectors, else det_sizes without sizes
        that give the same network input."""
        sizes = [int(s) for s in det_sizes]
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"FreeCure: det_sizes must be positive network sizes such as {DET_SIZES}, got "
                             f"{tuple(det_sizes)}")
        if getattr(self.detector, "input_size", None) is not None:
            return sizes[:1]
        net = getattr(self.detector, "network_size", None)
        out, seen = [], set()
        for s in sizes:
            key = net(s) if net is not None else s
            if key not in seen:
                seen.add(key)
                out.append(s)
        return out

    def detect(self, image: np.ndarray, det_sizes=DET_SIZES, threshold: float = 0.5) -> list:
        """Detector faces of the first size in det_sizes that finds any (see detection_sizes); [] if none do."""
        sizes = self.detection_sizes(det_sizes)
        for size in sizes:
            faces = self.detector.detect(image, threshold=threshold, max_size=size)
            if faces:
                if size != sizes[0]:
                    log.info("FreeCure: face found at detection size %d", size)
                return faces
        return []

    def analyze(self, image: np.ndarray, det_sizes=DET_SIZES, threshold: float = 0.5) -> list[AnalyzedFace]:
        """All faces of an RGB uint8 image (H, W, 3) with keypoints and raw embeddings, largest box first.

        Equal areas keep the reverse of the detector's order, so faces[0] is the face peer InstantID/PuLID
        packs pick (sorted(faces, key=area)[-1]). Each face is embedded on its own, as insightface does.
        """
        image = _check_image(image)
        faces = self.detect(image, det_sizes, threshold)
        if not faces:
            return []
        if any(f.kps is None for f in faces):
            raise _no_kps_error(self.detector)
        kps = [np.asarray(f.kps, dtype=np.float32).reshape(5, 2) for f in faces]
        # one crop per run, as insightface's FaceAnalysis.get: a batched run may sum in another order
        embeddings = [self.recognizer.embed(norm_crop(image, k))[0] for k in kps]
        out = [AnalyzedFace(box=tuple(float(v) for v in f.box), score=float(f.score), kps=k,
                            embedding=np.asarray(e, dtype=np.float32))
               for f, k, e in zip(faces, kps, embeddings)]
        return sorted(out, key=lambda f: f.area)[::-1]

    def embed_faces(self, images, det_sizes=DET_SIZES,
                    threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, list[AnalyzedFace]]:
        """The InstantID identity of one or more reference images (a list of RGB uint8 (H, W, 3) arrays, a
        (B, H, W, 3) array or a single image), using the largest face of each image.

        Returns (embedding, kps, faces): embedding (D,) float32 is the mean of those faces' raw ArcFace
        embeddings; kps (5, 2) float32 is the first image's largest face's keypoints in that image's pixels;
        faces lists each image's largest AnalyzedFace, in input order. Raises ValueError naming the image
        (counted from 1) in which no face is found.
        """
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("FreeCure: no reference image given; connect at least one image with a face")
        chosen = []
        for i, image in enumerate(images, start=1):
            faces = self.analyze(_check_image(image, f"reference image {i}"), det_sizes, threshold)
            if not faces:
                raise ValueError(f"FreeCure: no face found in reference image {i} (of {len(images)}); use a photo "
                                 f"where the face is clearly visible, or crop closer")
            chosen.append(faces[0])
        embedding = np.mean(np.stack([f.embedding for f in chosen]).astype(np.float64), axis=0).astype(np.float32)
        return embedding, chosen[0].kps.copy(), chosen
