"""Label schemas of face-parsing models: class id ↔ label name, and user-facing attributes → labels.

Callers never hard-code class ids: they ask a schema, e.g. ``schema.ids_for(["hair"])`` is ``[17]`` for
the BiSeNet CelebAMask-HQ model and ``[13]`` for the SegFormer face-parsing model.

Attributes (the names other modules use): hair, eyes, brows, glasses, ears, earrings, nose, mouth, lips,
hat, necklace, skin, neck, cloth, lower_face.  No model here has a beard or moustache class, so
``lower_face`` (for beard/moustache prompts) maps to ``skin``: a coarse mask of the whole face skin,
not of the lower face only.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

ATTRIBUTES = ("hair", "eyes", "brows", "glasses", "ears", "earrings", "nose", "mouth", "lips", "hat",
              "necklace", "skin", "neck", "cloth", "lower_face")

# CelebAMask-HQ file-name spellings ↔ the long names used by CELEBAMASK_HQ_19 (either works in id()).
LABEL_ALIASES = {"eye_g": "eyeglasses", "ear_r": "earring", "neck_l": "necklace"}


@dataclass(frozen=True)
class LabelSchema:
    """Class names of a parsing model (index = class id) and the labels behind each attribute."""
    name: str
    labels: tuple[str, ...]
    attribute_labels: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"FreeCure: schema {self.name!r} repeats a label name: {self.labels}")
        for attribute, names in self.attribute_labels.items():
            unknown = [n for n in names if n not in self.labels]
            if unknown:
                raise ValueError(f"FreeCure: schema {self.name!r} maps attribute {attribute!r} to unknown "
                                 f"label(s) {unknown}; labels are {', '.join(self.labels)}")

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.attribute_labels)

    def id(self, label_name: str) -> int:
        """Class id of one label name (CelebAMask-HQ short spellings such as 'eye_g' are accepted too)."""
        spellings = [label_name, LABEL_ALIASES.get(label_name)]
        spellings += [short for short, long in LABEL_ALIASES.items() if long == label_name]
        for spelling in spellings:
            if spelling in self.labels:
                return self.labels.index(spelling)
        raise ValueError(f"FreeCure: schema {self.name!r} has no label {label_name!r}; "
                         f"labels are {', '.join(self.labels)}")

    def ids_for(self, attributes: list[str]) -> list[int]:
        """Sorted, de-duplicated class ids of the labels behind the given attribute names."""
        if isinstance(attributes, str):
            attributes = [attributes]
        wanted = [a.strip().lower() for a in attributes]
        unknown = [a for a in wanted if a not in self.attribute_labels]
        if unknown:
            raise ValueError(f"FreeCure: unknown attribute(s) {unknown} for face parser {self.name!r}; "
                             f"known attributes: {', '.join(self.attribute_labels)}")
        return sorted({self.id(label) for a in wanted for label in self.attribute_labels[a]})


def _attribute_map(eyeglasses: str, earring: str, necklace: str) -> dict[str, tuple[str, ...]]:
    return {
        "hair": ("hair",),
        "eyes": ("l_eye", "r_eye"),
        "brows": ("l_brow", "r_brow"),
        "glasses": (eyeglasses,),
        "ears": ("l_ear", "r_ear"),
        "earrings": (earring,),
        "nose": ("nose",),
        "mouth": ("mouth", "u_lip", "l_lip"),
        "lips": ("u_lip", "l_lip"),
        "hat": ("hat",),
        "necklace": (necklace,),
        "skin": ("skin",),
        "neck": ("neck",),
        "cloth": ("cloth",),
        "lower_face": ("skin",),  # no beard class: the whole face skin (coarse)
    }


# zllrunning face-parsing.PyTorch BiSeNet `79999_iter.pth` (and facexlib `parsing_bisenet.pth`).
CELEBAMASK_HQ_19 = LabelSchema(
    name="celebamask_hq_19",
    labels=("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eyeglasses", "l_ear", "r_ear",
            "earring", "nose", "mouth", "u_lip", "l_lip", "neck", "necklace", "cloth", "hair", "hat"),
    attribute_labels=_attribute_map("eyeglasses", "earring", "necklace"),
)

# jonathandinu/face-parsing (SegFormer) config.json id2label; same classes, another order.
SEGFORMER_FACE_19 = LabelSchema(
    name="segformer_face_19",
    labels=("background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
            "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"),
    attribute_labels=_attribute_map("eye_g", "ear_r", "neck_l"),
)

SCHEMAS = {s.name: s for s in (CELEBAMASK_HQ_19, SEGFORMER_FACE_19)}

# Preview colours keyed by label name, so a class looks the same whichever model produced it.
_COLOURS = {
    "background": (0, 0, 0), "skin": (230, 180, 140), "l_brow": (120, 60, 20), "r_brow": (160, 90, 40),
    "l_eye": (0, 120, 255), "r_eye": (0, 200, 255), "eyeglasses": (255, 0, 255), "l_ear": (255, 140, 0),
    "r_ear": (255, 200, 0), "earring": (255, 255, 0), "nose": (255, 90, 90), "mouth": (140, 0, 40),
    "u_lip": (220, 20, 60), "l_lip": (255, 80, 140), "neck": (180, 130, 100), "necklace": (0, 255, 160),
    "cloth": (70, 70, 200), "hair": (150, 40, 200), "hat": (0, 160, 60),
}


def _fallback_colour(name: str) -> tuple[int, int, int]:
    # Deterministic across runs (no hash()): a byte sum picks a hue.
    hue = (sum(name.encode()) * 0.618034) % 1.0
    h6, i = hue * 6.0, int(hue * 6.0) % 6
    f = h6 - int(h6)
    r, g, b = [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def palette(schema: LabelSchema) -> np.ndarray:
    """Deterministic preview colours: (n_classes, 3) uint8, row = class id; background is black."""
    rows = [_COLOURS.get(LABEL_ALIASES.get(n, n)) or _fallback_colour(n) for n in schema.labels]
    return np.asarray(rows, dtype=np.uint8)
