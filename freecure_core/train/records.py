"""Training records (image, caption, identity) from a folder per identity or from the CrossFaceID JSON/JSONL.

Folder layout: ``<root>/<identity>/<image>.(jpg|png|webp)`` with the caption in ``<image>.txt`` next to it (or a
``captions.jsonl`` in the identity folder with ``{"file": ..., "caption": ...}`` rows); images without a caption
get an empty one (reported).

CrossFaceID/FaceID-6M style JSON or JSONL rows: ``image_file`` (or ``file_name``) and ``additional_feature`` (or
``caption``); the identity is the row's ``identity``/``person``/``id`` field when present, else the name of the
image's parent folder. Stored paths are often absolute paths from the authors' machines: ``strip_prefix`` is
removed from them and the rest is joined to ``data_root`` (a relative path is always joined to ``data_root``).
"""
from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


@dataclass(frozen=True)
class Record:
    identity: str
    image: str
    caption: str


def from_folders(root) -> tuple[list[Record], list[str]]:
    """Records of a folder per identity, and notes (images without captions)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"FreeCure: dataset folder {root} not found")
    records, notes = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        captions = {}
        jl = person / "captions.jsonl"
        if jl.is_file():
            for line in jl.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    captions[row["file"]] = row["caption"]
        for img in sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_EXTS):
            txt = img.with_suffix(".txt")
            caption = txt.read_text(encoding="utf-8").strip() if txt.is_file() else captions.get(img.name)
            if caption is None:
                notes.append(f"{img}: no caption (trained with an empty one)")
                caption = ""
            records.append(Record(person.name, str(img), caption))
    if not records:
        raise ValueError(f"FreeCure: no images in {root}; expected <identity>/<image> with <image>.txt captions")
    return records, notes


def remap(path: str, data_root, strip_prefix: str | None) -> str:
    """The stored path made local: strip_prefix removed, then joined to data_root when relative."""
    if strip_prefix and path.startswith(strip_prefix):
        path = path[len(strip_prefix):].lstrip("/\\")
    p = pathlib.Path(path)
    return str(p if p.is_absolute() or data_root is None else pathlib.Path(data_root) / p)


def from_crossfaceid(path, data_root=None, strip_prefix: str | None = None) -> tuple[list[Record], list[str]]:
    """Records of a CrossFaceID-style .json (a list) or .jsonl file, paths remapped (see the module docstring)."""
    path = pathlib.Path(path)
    text = path.read_text(encoding="utf-8")
    rows = json.loads(text) if path.suffix == ".json" else [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    records, notes = [], []
    for n, row in enumerate(rows, start=1):
        image = row.get("image_file") or row.get("file_name")
        if not image:
            raise ValueError(f"FreeCure: {path} row {n} has no image_file/file_name")
        local = remap(image, data_root if data_root is not None else path.parent, strip_prefix)
        identity = row.get("identity") or row.get("person") or row.get("id") or pathlib.Path(local).parent.name
        caption = row.get("additional_feature") or row.get("caption") or ""
        if not pathlib.Path(local).is_file():
            notes.append(f"row {n}: {local} not found (fix --data-root / --strip-prefix)")
            continue
        records.append(Record(str(identity), local, caption))
    return records, notes
