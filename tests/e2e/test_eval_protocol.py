"""The benchmark protocol end to end (issue 8): ``python -m freecure_core.eval.protocol`` drives the InstantID
workflow on the headless server (tiny SDXL, IdentityNet, adapter, stand-in antelopev2) for 2 identities x 2 prompts
x 1 seed x {baseline, freecure}, scores every image (stand-in ArcFace pack, a tiny CLIP folder, a tiny LPIPS file)
and writes results.csv, summary.md and pc_vs_if.png.

* every prompt got its identity photo (uploaded), its prompt text in both the CLIPTextEncode and the Attribute Mask,
  the seed, and - for the baseline only - FASA's end_percent 0 (the plain-sampling invariant);
* the CSV has one row per image with PC from the tiny CLIP (recomputed here from the stored image) and the face
  columns filled; the table has the paper's columns and a baseline -> FreeCure line;
* a second run resumes: nothing is generated or scored again, and the files are unchanged.
"""
from __future__ import annotations

import csv
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_instantid as tsi  # noqa: E402
import workflow_utils as wu  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = ("a photo of a <class> with blonde curly hair", "a photo of a <class> wearing sunglasses, laughing")


def _protocol(args, timeout=600):
    return subprocess.run([sys.executable, "-m", "freecure_core.eval.protocol", *map(str, args)], cwd=str(REPO),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_protocol_runs_scores_and_resumes(comfy_server, tmp_path):
    from support.tiny_eval_models import make_tiny_clip, make_tiny_lpips
    workflow = tsi._small("freecure_instantid", "freecure_e2e/protocol")
    (tmp_path / "workflow.json").write_text(json.dumps(workflow))
    portrait = np.asarray(Image.open(comfy_server.tmp / "input" / tsi.PORTRAIT).convert("RGB"))
    ids = tmp_path / "identities"
    ids.mkdir()
    Image.fromarray(portrait).save(ids / "ada__woman.png")
    Image.fromarray(np.ascontiguousarray(portrait[:, ::-1])).save(ids / "bo.png")  # the stand-in face, mirrored
    (ids / "classes.txt").write_text("bo: man\n")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    clip = make_tiny_clip(tmp_path / "clip")
    lpips = make_tiny_lpips(tmp_path / "lpips.safetensors")
    out = tmp_path / "out"
    args = ["workflow.json", "--identities", ids, "--prompts", tmp_path / "prompts.txt", "--seeds", "5",
            "--server", comfy_server.url, "--out", out,
            "--insightface", comfy_server.tmp / "models" / "insightface" / "models" / "antelopev2", "--providers",
            "CPUExecutionProvider", "--clip", clip, "--lpips", lpips]
    args[0] = tmp_path / "workflow.json"
    first = _protocol(args)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "8 image(s) planned" in first.stdout and "8 to generate" in first.stdout, first.stdout

    # what was queued
    records = sorted((out / "generation").glob("*/record.json"))
    assert len(records) == 1
    entries = json.loads(records[0].read_text())["prompts"]
    assert len(entries) == 8 and all(e["status"] == "success" for e in entries), [e["errors"] for e in entries]
    fasa = wu.only_node(workflow, "FreeCureFASAConfig")
    mask = wu.only_node(workflow, "FreeCureAttributeMask")
    load = wu.only_node(workflow, "LoadImage")
    for e in entries:
        p, v = e["prompt"], e["variation"]
        assert p[fasa]["inputs"]["end_percent"] == (0 if v["method"] == "baseline" else 1.0)
        word = "woman" if v["identity"] == "ada" else "man"
        text = PROMPTS[v["prompt_index"]].replace("<class>", word)
        assert p[mask]["inputs"]["prompt"] == text
        assert [n["inputs"]["text"] for n in p.values() if n["class_type"] == "CLIPTextEncode"].count(text) == 1
        assert p[load]["inputs"]["image"] == f"freecure_eval/freecure_eval_{v['identity']}.png"
        assert all(n["inputs"]["seed"] == 5 for n in p.values() if "seed" in n["inputs"])

    # results
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and {r["method"] for r in rows} == {"baseline", "freecure"}
    from freecure_core.eval.clip_score import ClipScorer
    scorer = ClipScorer.load(clip)
    for r in rows:
        image = np.asarray(Image.open(out / r["image"]).convert("RGB"))
        assert image.shape == (tsi.SIZE, tsi.SIZE, 3)
        assert float(r["pc"]) == pytest.approx(float(scorer.clip_t([image], [r["prompt"]])[0]), abs=1e-4)
        assert r["face_found"] in ("0", "1") and r["attr_acc"] != ""
    summary = (out / "summary.md").read_text()
    assert "| method | images | PC (CLIP-T)" in summary and "| baseline | 4 |" in summary and "| freecure | 4 |" in summary
    assert "Paper layout (baseline → FreeCure)" in summary and "PC, 1 attribute" in summary
    assert (out / "pc_vs_if.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} | {out / "results.csv": (out / "results.csv").stat().st_mtime_ns}
    second = _protocol(args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 to generate, 8 stored" in second.stdout and "scored 0 new image(s); 8 row(s)" in second.stdout
    assert len(list((out / "generation").glob("*/record.json"))) == 1  # nothing queued
    for p, t in before.items():
        if p.name != "pc_vs_if.png":
            assert p.stat().st_mtime_ns == t, p
