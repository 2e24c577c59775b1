"""Identity fidelity (IF): cosine similarity of ArcFace embeddings, generated face vs reference face(s).

Uses an insightface model pack folder (antelopev2: SCRFD + glintr100, or buffalo_l: SCRFD + w600k_r50) through
``freecure_core.identity.face_analysis.FaceAnalysis``; the largest face of each image is used. Images are RGB uint8
numpy arrays (H, W, 3).
"""
from __future__ import annotations

import numpy as np

from ..identity.face_analysis import FaceAnalysis


def unit(v: np.ndarray) -> np.ndarray:
    """v / ||v|| in float64 (ValueError for a zero vector)."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n == 0.0:
        raise ValueError("FreeCure: cannot normalise a zero or non-finite embedding")
    return v / n


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings, in [-1, 1]."""
    if np.asarray(a).size != np.asarray(b).size:
        raise ValueError(f"FreeCure: embeddings of different sizes ({np.asarray(a).size} and {np.asarray(b).size}) "
                         "come from different recognizers; use one model pack for both")
    return float(np.clip(unit(a) @ unit(b), -1.0, 1.0))


class IdentityScorer:
    """ArcFace identity similarity with one insightface pack (see the module docstring)."""

    def __init__(self, analysis: FaceAnalysis):
        self.analysis = analysis

    @classmethod
    def load(cls, pack_dir, providers="auto") -> "IdentityScorer":
        """The detector and recognizer of the pack folder (FileNotFoundError naming missing files)."""
        return cls(FaceAnalysis.load(pack_dir, None if providers in (None, "auto") else list(providers)))

    def describe(self) -> str:
        """The pack and the providers its models run on."""
        return self.analysis.describe()

    def largest_face(self, image: np.ndarray):
        """The largest AnalyzedFace of the image (box, kps, raw embedding), or None when there is none."""
        faces = self.analysis.analyze(np.ascontiguousarray(image))
        return faces[0] if faces else None

    def embed(self, image: np.ndarray) -> np.ndarray | None:
        """Unit ArcFace embedding (D,) of the image's largest face, or None when no face is found."""
        face = self.largest_face(image)
        return None if face is None else unit(face.embedding)

    def reference_embedding(self, references) -> np.ndarray:
        """Unit vector of the mean of the references' unit embeddings; ValueError naming a reference without
        a face (counted from 1)."""
        refs = [references] if isinstance(references, np.ndarray) and references.ndim == 3 else list(references)
        if not refs:
            raise ValueError("FreeCure: no reference image given for identity similarity")
        embs = []
        for i, ref in enumerate(refs, start=1):
            e = self.embed(ref)
            if e is None:
                raise ValueError(f"FreeCure: no face found in reference image {i} (of {len(refs)}); use a photo "
                                 "where the face is clearly visible")
            embs.append(e)
        return unit(np.mean(np.stack(embs), axis=0))

    def similarity(self, references, image: np.ndarray, reference_embedding: np.ndarray | None = None) -> float | None:
        """Cosine between the image's largest face and the references (see reference_embedding); None when the
        image has no face. Pass reference_embedding to score many images against one identity."""
        ref = self.reference_embedding(references) if reference_embedding is None else reference_embedding
        e = self.embed(image)
        return None if e is None else cosine(ref, e)

    def face_crop(self, image: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
        """The largest face's box (grown by `margin` × its size on each side, clipped) cut from the image."""
        face = self.largest_face(image)
        if face is None:
            return None
        return crop_box(image, face.box, margin)


def crop_box(image: np.ndarray, box, margin: float = 0.0) -> np.ndarray:
    """image[y0:y1, x0:x1] for box (x0, y0, x1, y1) grown by margin × its width/height, clipped to the image."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = max(0, int(np.floor(x0 - dx))), max(0, int(np.floor(y0 - dy)))
    x1, y1 = min(w, int(np.ceil(x1 + dx))), min(h, int(np.ceil(y1 + dy)))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"FreeCure: empty face box {box} for an image of {w}x{h}")
    return np.ascontiguousarray(image[y0:y1, x0:x1])
