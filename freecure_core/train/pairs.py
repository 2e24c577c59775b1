"""Cross pairs for CrossFaceID training and the held-out split by identity (pure Python, deterministic).

A pair gives the model the face of one image (the ID input) and asks it to generate another image of the same
person (the target, with that target's caption and keypoints). An image never pairs with itself, pairs never
cross identities, and the split puts every image of an identity on one side.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    """ID input image `source` and target image `target`, both of `identity`."""
    identity: str
    source: str
    target: str


def split_identities(identities, heldout_fraction: float = 0.05, seed: int = 0,
                     min_heldout: int = 1) -> tuple[list[str], list[str]]:
    """(train, held-out) identity names: a seeded shuffle, `heldout_fraction` of them (at least `min_heldout` when
    there are two or more identities) held out. Sorted lists; disjoint; together all identities."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"FreeCure: heldout_fraction must be in [0, 1), got {heldout_fraction}")
    names = sorted(set(identities))
    order = names[:]
    random.Random(seed).shuffle(order)
    n = round(len(names) * heldout_fraction)
    if heldout_fraction > 0 and len(names) >= 2:
        n = max(n, min_heldout)
    n = min(n, len(names) - 1) if names else 0
    held = sorted(order[:n])
    return sorted(set(names) - set(held)), held


def make_pairs(images_by_identity: dict[str, list[str]], seed: int = 0, sources_per_target: int = 1) -> list[Pair]:
    """For every target image, `sources_per_target` other images of the same identity (drawn without repetition,
    seeded) as ID inputs. Identities with a single image give no pair. Ordered by identity, then target."""
    rng = random.Random(seed)
    pairs = []
    for identity in sorted(images_by_identity):
        images = sorted(set(images_by_identity[identity]))
        if len(images) < 2:
            continue
        for target in images:
            others = [i for i in images if i != target]
            for source in rng.sample(others, min(sources_per_target, len(others))):
                pairs.append(Pair(identity, source, target))
    return pairs
