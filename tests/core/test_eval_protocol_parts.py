"""The protocol's pure parts (issue 8): prompts, identities folder, prompt slots, CSV/summary/markdown, the plot."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from freecure_core.eval import protocol, table
from freecure_core.eval.identities import load_identities
from freecure_core.eval.prompts import PAPER_PROMPTS, load_prompts, substitute


def test_paper_prompts():
    assert len(PAPER_PROMPTS) == 20
    assert [p.attributes for p in PAPER_PROMPTS].count(1) == 8
    assert [p.attributes for p in PAPER_PROMPTS].count(2) == 8
    assert [p.attributes for p in PAPER_PROMPTS].count(3) == 4
    assert all("<class>" in p.text for p in PAPER_PROMPTS)
    assert not any(p.reconstructed for p in PAPER_PROMPTS[:8])
    assert PAPER_PROMPTS[1].for_class("woman") == "a photo of a woman with blonde curly hair"
    with pytest.raises(ValueError, match="class word"):
        substitute("a <class>", " ")


def test_prompt_file(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# mine\na <class> with red hair, wearing glasses\n\n")
    (p,) = load_prompts(f)
    assert p.attributes == 2 and p.for_class("boy") == "a boy with red hair, wearing glasses"
    f.write_text("a woman with red hair\n")
    with pytest.raises(ValueError, match="no <class>"):
        load_prompts(f)


def test_identities_folder(tmp_path):
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    img.save(tmp_path / "ada__woman.png")
    (tmp_path / "bo").mkdir()
    img.save(tmp_path / "bo" / "2.jpg")
    img.save(tmp_path / "bo" / "1.png")
    img.save(tmp_path / "cy d.webp")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "classes.txt").write_text("bo: man\n")
    ids = load_identities(tmp_path)
    assert [(i.name, i.class_word, [p.name for p in i.images]) for i in ids] == [
        ("ada", "woman", ["ada__woman.png"]), ("bo", "man", ["1.png", "2.jpg"]), ("cy_d", "person", ["cy d.webp"])]
    with pytest.raises(FileNotFoundError, match="identities folder"):
        load_identities(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no image"):
        load_identities(tmp_path)


def _workflow():
    text = "a photo of a woman with blonde hair"
    return {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["2", 1]}},
            "3": {"class_type": "FreeCureAttributeMask", "inputs": {"prompt": text, "grow": 0}},
            "4": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
            "5": {"class_type": "FreeCureFASAConfig", "inputs": {"end_percent": 1.0}},
            "6": {"class_type": "FreeCureSampler", "inputs": {"seed": 1}},
            "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "a"}}}


def test_prompt_slots_fill_and_baseline():
    w = _workflow()
    slots = protocol.prompt_slots(w)
    assert slots == [("1", "text"), ("3", "prompt")]
    filled = protocol.fill(w, "new", slots, "id.png", protocol.image_slot(w, None), 9)
    assert filled["1"]["inputs"]["text"] == filled["3"]["inputs"]["prompt"] == "new"
    assert filled["4"]["inputs"]["image"] == "id.png" and filled["6"]["inputs"]["seed"] == 9
    assert w["1"]["inputs"]["text"] != "new"  # the base workflow is not touched
    base = protocol.method_prompt(w, "baseline", protocol.DEFAULT_BASELINE_SETS)
    assert base["5"]["inputs"]["end_percent"] == 0 and w["5"]["inputs"]["end_percent"] == 1.0
    assert protocol.output_node(w, None) == "7"
    del w["3"]
    with pytest.raises(protocol.ProtocolError, match="--prompt-input"):
        protocol.prompt_slots(w)
    assert protocol.prompt_slots(w, ["1.text"]) == [("1", "text")]
    w["8"] = {"class_type": "LoadImage", "inputs": {"image": "y.png"}}
    with pytest.raises(protocol.ProtocolError, match="--image-input"):
        protocol.image_slot(w, None)


def _row(method, ident, pi, seed, pc, if_, found, n=1):
    return {"method": method, "identity": ident, "class_word": "woman", "prompt_index": pi, "attributes": n,
            "seed": seed, "prompt": "p", "image": "i.png", "pc": pc, "if": if_, "face_found": found, "attr_acc": 0.5}


def test_csv_roundtrip_summary_and_markdown(tmp_path):
    path = tmp_path / "results.csv"
    assert table.read_rows(path) == []
    table.append_rows(path, [_row("baseline", "a", 0, 0, 20.0, 60.0, 1), _row("baseline", "a", 1, 0, 22.0, None, 0, 2)])
    table.append_rows(path, [_row("freecure", "a", 0, 0, 24.0, 58.0, 1), _row("freecure", "a", 1, 0, 26.0, 56.0, 1, 2)])
    rows = table.read_rows(path)
    assert len(rows) == 4 and table.row_key(rows[0]) == ("baseline", "a", "0", "0")
    s = table.summarize(rows, {"freecure": 41.0})
    assert s["baseline"]["pc"] == pytest.approx(21.0) and s["baseline"]["if"] == pytest.approx(30.0)  # no face = 0
    assert s["baseline"]["face_found"] == pytest.approx(0.5)
    assert s["freecure"]["hmean"] == pytest.approx(2 * 25 * 57 / (25 + 57))
    assert s["baseline"]["pc_by_attributes"] == {1: 20.0, 2: 22.0}
    assert math.isnan(s["baseline"]["face_div"]) and s["freecure"]["face_div"] == 41.0
    md = table.markdown(s, "t")
    assert "| baseline | 2 | 21.00 | 30.00 | — |" in md and "| freecure | 2 | 25.00 | 57.00 | 41.00 |" in md
    assert "21.00 → 25.00" in md and "| method | PC, 1 attribute | PC, 2 attributes |" in md
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="another --out"):
        table.read_rows(path)


def test_harmonic_mean():
    assert table.harmonic_mean(20.0, 60.0) == pytest.approx(30.0)
    assert table.harmonic_mean(0.0, 0.0) == 0.0 and math.isnan(table.harmonic_mean(float("nan"), 1.0))


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    from freecure_core.eval.plots import plot_pc_vs_if
    rows = [{k: str(v) for k, v in _row(m, "a", 0, 0, pc, 50.0, 1).items()}
            for m, pc in (("baseline", 20.0), ("freecure", 24.0))]
    out = plot_pc_vs_if(rows, table.summarize(rows), tmp_path / "p.png")
    img = Image.open(out)
    assert img.size[0] > 300 and np.asarray(img.convert("L")).std() > 1
