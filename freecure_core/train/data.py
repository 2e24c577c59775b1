"""The training dataset over a pairs JSONL written by ``prepare``: target image and keypoint map (resized and cropped
together), the source image's raw ArcFace embedding, the target's caption, SDXL micro-conditioning, and condition
dropout (InstantID's recipe: 5 % face zeroed, 5 % caption empty, 5 % both)."""
from __future__ import annotations

import json
import random

import numpy as np
import torch

from ..identity.kps_image import draw_kps
from .face_info import read_rgb


def read_pairs(path) -> list[dict]:
    """The rows of a pairs JSONL; ValueError naming a row without the needed fields."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in ("image_file", "landmarks", "insightface_feature_file") if k not in row]
            if missing:
                raise ValueError(f"FreeCure: {path} row {n} has no {', '.join(missing)}; write it with "
                                 "python -m freecure_core.train.prepare")
            rows.append(row)
    if not rows:
        raise ValueError(f"FreeCure: {path} holds no pair")
    return rows


def resize_crop(image: np.ndarray, resolution: int, centre: bool = True) -> tuple[np.ndarray, tuple, tuple]:
    """Short side resized to `resolution`, then a square crop (centre); returns (image, (top, left) of the crop in
    the resized image, original (height, width))."""
    import cv2
    h, w = image.shape[:2]
    s = resolution / min(h, w)
    nh, nw = max(resolution, round(h * s)), max(resolution, round(w * s))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    top, left = ((nh - resolution) // 2, (nw - resolution) // 2) if centre else (0, 0)
    return resized[top:top + resolution, left:left + resolution], (top, left), (h, w)


class PairDataset(torch.utils.data.Dataset):
    """Items: pixel_values (3, R, R) in [-1, 1], kps_image (3, R, R) in [0, 1], face_embed (512,), caption (str),
    time_ids (6,) = original size, crop top-left, target size (SDXL micro-conditioning)."""

    def __init__(self, rows, resolution: int = 1024, face_drop: float = 0.05, text_drop: float = 0.05,
                 both_drop: float = 0.05, seed: int = 0):
        self.rows, self.resolution = list(rows), int(resolution)
        self.drops = (face_drop, text_drop, both_drop)
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        image = read_rgb(row["image_file"])
        kps = np.asarray(row["landmarks"], dtype=np.float32).reshape(5, 2)
        kps_map = draw_kps(image.shape[1], image.shape[0], kps)  # drawn at full size, before resizing (InstantID)
        img, (top, left), (h, w) = resize_crop(image, self.resolution)
        kmap, _, _ = resize_crop(kps_map, self.resolution)
        embed = np.load(row["insightface_feature_file"], allow_pickle=False).astype(np.float32).reshape(-1)
        caption = row.get("additional_feature") or row.get("caption") or ""
        r = random.Random(hash((self.seed, self.epoch, i))).random()
        face_drop, text_drop, both_drop = self.drops
        if r < face_drop:
            embed = np.zeros_like(embed)
        elif r < face_drop + text_drop:
            caption = ""
        elif r < face_drop + text_drop + both_drop:
            embed, caption = np.zeros_like(embed), ""
        return {
            "pixel_values": torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 127.5 - 1.0,
            "kps_image": torch.from_numpy(np.array(kmap)).permute(2, 0, 1).float() / 255.0,
            "face_embed": torch.from_numpy(embed),
            "caption": caption,
            "time_ids": torch.tensor([h, w, top, left, self.resolution, self.resolution], dtype=torch.float32),
        }


def collate(items: list[dict]) -> dict:
    """Stack tensors; captions as a list."""
    out = {k: torch.stack([it[k] for it in items]) for k in ("pixel_values", "kps_image", "face_embed", "time_ids")}
    out["caption"] = [it["caption"] for it in items]
    return out
