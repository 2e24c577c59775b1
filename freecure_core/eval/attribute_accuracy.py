"""Attribute accuracy: does an image show the face attributes its prompt asked for?

Two checks, each per requested attribute (attributes read from the prompt by ``freecure_core.attributes``):
- ``attribute_presence``: the parsed label map (a face parse of the image) contains that attribute's region over
  at least ``min_fraction`` of the image (e.g. glasses were parsed when "sunglasses" was asked for);
- ``attribute_zero_shot``: CLIP zero-shot between "a photo of a person with <the prompt's words for it>" and
  "a photo of a person" — the attribute counts as shown when the first label gets probability > 0.5.
Accuracy over a set = the fraction of requested attributes judged present.
"""
from __future__ import annotations

import numpy as np
import torch

from ..attributes import attributes_from_prompt

MIN_FRACTION = 0.002  # 0.2 % of the image: a few hundred pixels at 512², well above parser noise


def requested_attributes(prompt: str) -> list[tuple[str, str]]:
    """(attribute, the prompt's words for it) for each attribute the prompt asks for (negated ones excluded)."""
    return list(attributes_from_prompt(prompt).evidence)


def region_fractions(labels: torch.Tensor, schema, attributes) -> dict[str, float]:
    """Fraction of the (H, W) label map covered by each attribute's labels; attributes the parser's schema has no
    labels for are left out (they cannot be judged from a parse)."""
    labels = torch.as_tensor(labels)
    if labels.dim() != 2:
        raise ValueError(f"FreeCure: expected one (H, W) label map, got shape {tuple(labels.shape)}")
    out = {}
    for attr in attributes:
        if attr not in schema.attribute_labels:
            continue
        ids = schema.ids_for([attr])
        hit = torch.zeros_like(labels, dtype=torch.bool)
        for i in ids:
            hit |= labels == i
        out[attr] = float(hit.float().mean())
    return out


def attribute_presence(prompt: str, labels: torch.Tensor, schema, min_fraction: float = MIN_FRACTION) -> dict[str, bool]:
    """Requested attribute -> whether its parsed region covers at least min_fraction of the image."""
    attrs = [a for a, _ in requested_attributes(prompt)]
    return {a: f >= min_fraction for a, f in region_fractions(labels, schema, attrs).items()}


def attribute_zero_shot(clip_scorer, image: np.ndarray, prompt: str, subject: str = "a person") -> dict[str, float]:
    """Requested attribute -> CLIP probability of "a photo of <subject> with <words>" against "a photo of
    <subject>" (shown when > 0.5)."""
    out = {}
    for attr, words in requested_attributes(prompt):
        probs = clip_scorer.zero_shot(image, [f"a photo of {subject} with {words}", f"a photo of {subject}"])
        out[attr] = float(probs[0])
    return out


def accuracy(judgements) -> float:
    """Fraction of True (or of probabilities > 0.5) among the judgements; nan when there are none."""
    values = [bool(v > 0.5) if isinstance(v, float) else bool(v) for v in judgements]
    return float(np.mean(values)) if values else float("nan")
