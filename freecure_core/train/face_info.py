"""Face info per training image (insightface antelopev2 through freecure_core.identity.face_analysis): the raw
ArcFace embedding, the face box and the 5 keypoints, computed once and cached on disk (resumable).

An image is usable when it holds exactly one usable face: detection score >= min_score and box area >=
min_area_fraction of the image (FaceID-6M drops faces under 4 %; the default here is 1 %). Other images are
reported with the reason ("no face", "2 faces", "unreadable") and dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass

import numpy as np


@dataclass
class FaceInfo:
    """The usable face of an image (status "ok"), or why there is none (embedding/box/kps None)."""
    path: str
    status: str
    embedding: np.ndarray | None = None
    box: tuple | None = None
    kps: np.ndarray | None = None
    size: tuple | None = None  # (width, height)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def read_rgb(path) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def usable_faces(faces, width: int, height: int, min_score: float = 0.5, min_area_fraction: float = 0.01) -> list:
    """The faces whose score and box area pass the thresholds."""
    area = float(width * height)
    return [f for f in faces if f.score >= min_score
            and (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) >= min_area_fraction * area]


def analyse(analyser, path, min_score: float = 0.5, min_area_fraction: float = 0.01) -> FaceInfo:
    """FaceInfo of one image with `analyser` (anything with FaceAnalysis.analyze's interface)."""
    try:
        image = read_rgb(path)
    except (OSError, ValueError) as exc:
        return FaceInfo(str(path), f"unreadable ({type(exc).__name__})")
    h, w = image.shape[:2]
    faces = usable_faces(analyser.analyze(image), w, h, min_score, min_area_fraction)
    if len(faces) != 1:
        return FaceInfo(str(path), "no face" if not faces else f"{len(faces)} faces", size=(w, h))
    f = faces[0]
    return FaceInfo(str(path), "ok", np.asarray(f.embedding, np.float32), tuple(float(v) for v in f.box),
                    np.asarray(f.kps, np.float32).reshape(5, 2), (w, h))


class FaceInfoCache:
    """One .npz per image under `folder`, keyed by the image's path, size and mtime (a changed image is redone)."""

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _file(self, path) -> pathlib.Path:
        st = os.stat(path)
        key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
        return self.folder / (hashlib.sha1(key.encode()).hexdigest() + ".npz")

    def get(self, path) -> FaceInfo | None:
        """The cached FaceInfo, or None when the image was not analysed (or changed since)."""
        try:
            file = self._file(path)
        except OSError:
            return None
        if not file.is_file():
            return None
        with np.load(file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["status"] != "ok":
                return FaceInfo(str(path), meta["status"], size=tuple(meta["size"]) if meta.get("size") else None)
            return FaceInfo(str(path), "ok", z["embedding"].copy(), tuple(meta["box"]), z["kps"].copy(),
                            tuple(meta["size"]))

    def put(self, info: FaceInfo) -> None:
        """Store one result (atomically: an interrupted run never leaves half a file)."""
        file = self._file(info.path)
        meta = {"status": info.status, "box": list(info.box) if info.box else None,
                "size": list(info.size) if info.size else None, "path": info.path}
        arrays = {"meta": np.array(json.dumps(meta))}
        if info.ok:
            arrays.update(embedding=info.embedding, kps=info.kps)
        tmp = file.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, file)


def analyse_all(paths, analyser, cache: FaceInfoCache, min_score: float = 0.5, min_area_fraction: float = 0.01,
                progress: bool = True) -> tuple[dict, int]:
    """path -> FaceInfo for every image (cached ones read back, others analysed and cached, with a tqdm bar);
    also returns how many were computed in this call."""
    out, computed = {}, 0
    todo = []
    for p in paths:
        info = cache.get(p)
        if info is None:
            todo.append(p)
        else:
            out[str(p)] = info
    bar = None
    if progress and todo:
        from tqdm import tqdm
        bar = tqdm(total=len(todo), desc="face info", unit="image")
    for p in todo:
        info = analyse(analyser, p, min_score, min_area_fraction)
        cache.put(info)
        out[str(p)] = info
        computed += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return out, computed
