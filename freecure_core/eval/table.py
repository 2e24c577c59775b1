"""The protocol's results: one CSV row per generated image, and the summary table in the paper's layout.

PC = mean CLIP-T (%), IF = mean identity cosine × 100 (an image in which no face is found scores 0 and is counted
in the face-found rate), Face Div = mean LPIPS between the face crops of the images of one (identity, prompt)
across seeds, averaged over those groups (× 100, as the paper reports it), hMean = harmonic mean of PC and IF.
"""
from __future__ import annotations

import csv
import math
import os
import pathlib

import numpy as np

COLUMNS = ("method", "identity", "class_word", "prompt_index", "attributes", "seed", "prompt", "image",
           "pc", "if", "face_found", "attr_acc")
KEY = ("method", "identity", "prompt_index", "seed")


def row_key(row: dict) -> tuple:
    """The identity of a row: (method, identity, prompt_index, seed) as strings."""
    return tuple(str(row[k]) for k in KEY)


def read_rows(path) -> list[dict]:
    """The rows of a results CSV ([] when it does not exist yet); ValueError when its header is not ours."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"FreeCure: {path} is not a results file of this protocol version (columns "
                             f"{reader.fieldnames}); use another --out folder")
        return list(reader)


def append_rows(path, rows) -> None:
    """Append rows to the CSV (writing the header first for a new file), flushed and synced so an interrupted
    run keeps every finished row."""
    path = pathlib.Path(path)
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        fh.flush()
        os.fsync(fh.fileno())


def _fmt(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6f}"
    return v


def to_float(v) -> float:
    """A table cell as a float: float(v), or nan for empty / non-numeric cells."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def harmonic_mean(pc: float, if_: float) -> float:
    """2·PC·IF / (PC + IF); nan if either is nan, 0 if both are 0."""
    if math.isnan(pc) or math.isnan(if_):
        return float("nan")
    return 0.0 if pc + if_ <= 0 else 2 * pc * if_ / (pc + if_)


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def summarize(rows, face_div: dict | None = None) -> dict:
    """method -> {"images", "pc", "if", "face_found", "attr_acc", "face_div", "hmean", "pc_by_attributes": {n: pc}}."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        scored_if = [r for r in mine if r["if"] != "" or r["face_found"] != ""]
        if_values = [(to_float(r["if"]) if r["face_found"] in ("1", "True", 1, True) else 0.0) for r in scored_if]
        pc = _mean(to_float(r["pc"]) for r in mine)
        if_ = _mean(if_values) if scored_if else float("nan")
        by_n = {}
        for n in sorted({int(r["attributes"]) for r in mine}):
            by_n[n] = _mean(to_float(r["pc"]) for r in mine if int(r["attributes"]) == n)
        out[method] = {
            "images": len(mine), "pc": pc, "if": if_,
            "face_found": _mean(1.0 if r["face_found"] in ("1", "True") else 0.0 for r in scored_if),
            "attr_acc": _mean(to_float(r["attr_acc"]) for r in mine),
            "face_div": (face_div or {}).get(method, float("nan")),
            "hmean": harmonic_mean(pc, if_), "pc_by_attributes": by_n,
        }
    return out


def _cell(v: float, digits: int = 2) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def markdown(summary: dict, title: str = "", baseline: str = "baseline", treated: str = "freecure") -> str:
    """The summary as markdown: Table 1's columns (PC, IF, Face Div, hMean) per method, a baseline → FreeCure
    row when both ran, and Table 2's PC by number of attributes."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| method | images | PC (CLIP-T) ↑ | IF (×100) ↑ | Face Div (×100) ↑ | hMean ↑ | face found | attribute acc. |",
              "|---|---|---|---|---|---|---|---|"]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['images']} | {_cell(s['pc'])} | {_cell(s['if'])} | {_cell(s['face_div'])} | "
                     f"{_cell(s['hmean'])} | {_cell(100 * s['face_found'], 0)}% | {_cell(100 * s['attr_acc'], 0)}% |")
    if baseline in summary and treated in summary:
        b, t = summary[baseline], summary[treated]
        cells = " | ".join(f"{_cell(b[k])} → {_cell(t[k])}" for k in ("pc", "if", "face_div", "hmean"))
        lines += ["", f"Paper layout (baseline → FreeCure): PC, IF, Face Div, hMean = {cells.replace(' | ', ', ')}"]
    counts = sorted({n for s in summary.values() for n in s["pc_by_attributes"]})
    if counts:
        lines += ["", "| method | " + " | ".join(f"PC, {n} attribute{'s' if n != 1 else ''}" for n in counts) + " |",
                  "|---|" + "---|" * len(counts)]
        for m, s in summary.items():
            lines.append(f"| {m} | " + " | ".join(_cell(s["pc_by_attributes"].get(n, float('nan'))) for n in counts)
                         + " |")
    return "\n".join(lines) + "\n"
