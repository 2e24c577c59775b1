"""Which FLUX blocks FASA acts in: presets and custom lists over the double- and single-stream blocks.

Blocks are named ("double", i) for FLUX's double-stream blocks (separate text and image weights) and ("single", j)
for its single-stream blocks (one sequence), in call order. Presets:
- ``reference``: every single-stream block — FLUX's later, appearance-forming part (chosen by measurement on a tiny
  FLUX-shaped model, ``bench/bench_flux_presets.py``; see the README);
- ``decoder``: the same as reference (the name SD users know for "the late layers");
- ``all``: every block;
- custom: ``double:0-18, single:10-37`` (ranges inclusive; ``double`` or ``single`` alone = all of that kind).
"""
from __future__ import annotations

import re

_ITEM = re.compile(r"^(double|single)(?::(\d+)(?:-(\d+))?)?$")


def all_blocks(n_double: int, n_single: int) -> list[tuple[str, int]]:
    """Every block in call order."""
    return [("double", i) for i in range(n_double)] + [("single", j) for j in range(n_single)]


def resolve_flux_layers(spec: str, n_double: int, n_single: int) -> list[tuple[str, int]]:
    """The blocks a layers setting names, in call order; ValueError naming a bad item or out-of-range index."""
    spec = (spec or "").strip().lower()
    if spec in ("reference", "decoder"):
        return [("single", j) for j in range(n_single)]
    if spec == "all":
        return all_blocks(n_double, n_single)
    chosen = set()
    for raw in (s.strip() for s in spec.replace(";", ",").split(",")):
        if not raw:
            continue
        m = _ITEM.match(raw.replace(" ", ""))
        if not m:
            raise ValueError(f"FreeCure FLUX: layer item {raw!r} is not 'double', 'single', 'double:3' or "
                             f"'single:10-37' (this model has {n_double} double and {n_single} single blocks)")
        kind, a, b = m.group(1), m.group(2), m.group(3)
        count = n_double if kind == "double" else n_single
        lo, hi = (0, count - 1) if a is None else (int(a), int(b) if b is not None else int(a))
        if not 0 <= lo <= hi < count:
            raise ValueError(f"FreeCure FLUX: {raw!r} is out of range: this model has {count} {kind} blocks "
                             f"(0-{count - 1})")
        chosen.update((kind, i) for i in range(lo, hi + 1))
    if not chosen:
        raise ValueError("FreeCure FLUX: no block chosen; use reference, all or e.g. 'single:10-37'")
    return [b for b in all_blocks(n_double, n_single) if b in chosen]
