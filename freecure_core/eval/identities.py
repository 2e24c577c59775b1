"""Reading an identities folder for the benchmark protocol.

Layout (either form, mixed freely):
- ``<folder>/<name>.<png|jpg|jpeg|webp>``: one identity with one reference photo;
- ``<folder>/<name>/*.png …``: one identity with several reference photos (sorted by name).
The class word (man, woman, boy, girl, person …) that replaces ``<class>`` in the prompts comes from
``<folder>/classes.txt`` (lines ``name: woman``) when it lists the identity, else from a ``__<class>`` suffix of
the name (``ada__woman.png``), else ``--default-class`` (``person``).
"""
from __future__ import annotations

import pathlib
import re
from dataclasses import dataclass, field

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Identity:
    """One identity: a file-safe name, its reference photos and its class word."""
    name: str
    images: list = field(default_factory=list)
    class_word: str = "person"


def _classes(folder: pathlib.Path) -> dict[str, str]:
    path = folder / "classes.txt"
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" not in line:
            raise ValueError(f"FreeCure: {path}:{n}: expected 'name: class word', got {line!r}")
        name, word = (s.strip() for s in line.split(":", 1))
        out[name] = word
    return out


def load_identities(folder, default_class: str = "person") -> list[Identity]:
    """The identities of the folder (see the module docstring), sorted by name; errors name the folder."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FreeCure: identities folder {folder} not found; make one with a photo (or a "
                                "subfolder of photos) per identity")
    classes = _classes(folder)
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir() if p.suffix.lower() in IMAGE_EXTS)
            stem = entry.name
        elif entry.suffix.lower() in IMAGE_EXTS:
            images, stem = [entry], entry.stem
        else:
            continue
        if not images:
            raise ValueError(f"FreeCure: identity folder {entry} has no image ({', '.join(sorted(IMAGE_EXTS))})")
        name, _, suffix = stem.partition("__")
        word = classes.get(stem) or classes.get(name) or suffix.replace("_", " ").strip() or default_class
        found.append(Identity(_SAFE.sub("_", name) or "identity", images, word))
    if not found:
        raise ValueError(f"FreeCure: no identity photo in {folder}; put one image (or one folder of images) per "
                         "identity there")
    names = [i.name for i in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"FreeCure: identities {dup} appear twice in {folder} (as a file and a folder?)")
    return found
