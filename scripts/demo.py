"""`make demo`: the face-parsing FreeCure workflow run by the headless runner on tiny random models.

Writes the tests' tiny SD1.5 checkpoint, random BiSeNet parser and stand-in face detector to a temporary models
folder, then runs ``python -m freecure_core.run workflows/freecure_face_parsing.json`` in an embedded ComfyUI (CPU)
with ``--set`` for those models, the size, steps and seed, and a two-value ``--sweep`` of the Attribute Mask prompt:
the foundation prompt (hair and glasses masked: FASA on) and a prompt with no attribute (empty mask: FreeCure
samples without FASA).  Writes the runner's images and record.json, friendly copies of the four pictures and a
report.json with the checks below.  The tiny model has random weights, so the pictures are noise-like: the demo
shows the plumbing (stage 1 -> face parsing -> attribute mask -> FASA -> stage 3, all from the example workflow),
not image quality.  The engine's bit-level invariants (no-FASA run == KSampler, lockstep == replay) need graphs
the example workflow does not have; tests/bridge/test_invariants.py checks them.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
WORKFLOW = ROOT / "workflows" / "freecure_face_parsing.json"
FD_PROMPT = "close-up portrait photo of a woman with blonde curly hair, wearing sunglasses"  # the workflow's
NO_ATTRIBUTE_PROMPT = "a photo"


def write_models(base: pathlib.Path, env: dict) -> None:
    """The tests' tiny checkpoint and parsing models under base/models (two writers, run side by side)."""
    ckpt = base / "models" / "checkpoints" / "tiny_sd15.safetensors"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    jobs = [subprocess.Popen([sys.executable, str(TESTS / "e2e" / "make_ckpt.py"), str(ckpt)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            subprocess.Popen([sys.executable, str(TESTS / "e2e" / "make_parsing_models.py"), str(base)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    for job in jobs:
        log, _ = job.communicate(timeout=600)
        if job.returncode != 0:
            sys.exit(f"demo: {' '.join(job.args[1:2])} failed:\n{log}")
    (base / "extra_model_paths.yaml").write_text(
        "freecure_demo:\n"
        f"    base_path: {json.dumps(str(base))}\n"
        "    checkpoints: models/checkpoints\n"
        "    face_parsing: models/face_parsing\n"
        "    insightface: models/insightface\n")


def runner_command(args, base: pathlib.Path, out: pathlib.Path) -> list[str]:
    sets = ["CheckpointLoaderSimple.ckpt_name=tiny_sd15.safetensors",
            "FreeCureFaceParserLoader.parser=tiny_bisenet.safetensors", "FreeCureFaceParserLoader.device=cpu",
            f"EmptyLatentImage.width={args.width}", f"EmptyLatentImage.height={args.height}",
            f"*.steps={args.steps}", f"*.seed={args.seed}"]
    cmd = [sys.executable, "-m", "freecure_core.run", str(WORKFLOW.relative_to(ROOT)), "--cpu",
           "--extra-model-paths", str(base / "extra_model_paths.yaml"),
           "--custom-nodes", str(TESTS / "e2e_pack"),  # registers the tiny model configs for CheckpointLoaderSimple
           "--out", str(out)]
    for spec in sets:
        cmd += ["--set", spec]
    return cmd + ["--sweep", "FreeCureAttributeMask.prompt=" + json.dumps([FD_PROMPT, NO_ATTRIBUTE_PROMPT])]


def _node(entry: dict, class_type: str, title_word: str = "") -> str:
    (nid,) = [k for k, v in entry["prompt"].items()
              if v["class_type"] == class_type and title_word in v.get("_meta", {}).get("title", "")]
    return nid


def _pixels(path: pathlib.Path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float64), im.size


def report_from(record: dict, out: pathlib.Path, args) -> dict:
    """Friendly copies of the pictures and the checks, from the runner's record."""
    with_fasa, without_fasa = record["prompts"]
    first = lambda entry, nid: out / entry["outputs"][nid][0]["file"]  # noqa: E731
    result, fd = _node(with_fasa, "SaveImage"), _node(with_fasa, "PreviewImage", "Foundation")
    mask = _node(with_fasa, "PreviewImage", "mask")
    files = {"fd_image": "fd_image.png", "mask": "mask.png", "pd_with_fasa": "pd_with_fasa.png",
             "pd_without_fasa": "pd_without_fasa.png"}
    for key, entry, nid in (("fd_image", with_fasa, fd), ("mask", with_fasa, mask),
                            ("pd_with_fasa", with_fasa, result), ("pd_without_fasa", without_fasa, result)):
        shutil.copyfile(first(entry, nid), out / files[key])
    (on, size), (off, _) = _pixels(out / files["pd_with_fasa"]), _pixels(out / files["pd_without_fasa"])
    mask_node = _node(with_fasa, "FreeCureAttributeMask")
    text_on, text_off = with_fasa["texts"][mask_node][0], without_fasa["texts"][mask_node][0]
    sizes = {_pixels(out / name)[1] for entry in record["prompts"] for name in entry["files"]}
    return {
        "workflow": str(WORKFLOW.relative_to(ROOT)),
        "size": [args.width, args.height], "steps": args.steps, "seed": args.seed,
        "files": files,
        "runner_record": "record.json",
        "mask_text": {"with_fasa": text_on, "without_fasa": text_off},
        "seconds": {"with_fasa": with_fasa["seconds"], "without_fasa": without_fasa["seconds"]},
        "checks": {
            "all_prompts_succeeded": record["status"] == "success",
            "images_have_the_requested_size": sizes == {(args.width, args.height)} and size == (args.width,
                                                                                                args.height),
            "mask_names_hair_and_glasses": "hair" in text_on and "glasses" in text_on,
            "empty_mask_is_reported": "mask is empty" in text_off,
            "fasa_changes_pd_mean_abs": float(abs(on - off).mean()),
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    out = pathlib.Path(args.out).resolve()
    t0 = time.perf_counter()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is faster
    with tempfile.TemporaryDirectory(prefix="freecure-demo-") as tmp:
        base = pathlib.Path(tmp)
        write_models(base, env)
        models_s = time.perf_counter() - t0
        cmd = runner_command(args, base, out)
        print("demo:", " ".join(cmd[1:]), flush=True)
        proc = subprocess.run(cmd, cwd=str(ROOT), env=env)
    record = json.loads((out / "record.json").read_text())
    if proc.returncode != 0 or len(record["prompts"]) != 2:
        sys.exit(f"demo: the runner failed (exit {proc.returncode}); see {out / 'record.json'}")
    report = report_from(record, out, args)
    report.update(command=["python"] + cmd[1:], models_s=round(models_s, 2), total_s=round(time.perf_counter() - t0, 2))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("files", "mask_text", "checks", "total_s")}, indent=2))
    ok = report["checks"]
    if not (ok["all_prompts_succeeded"] and ok["images_have_the_requested_size"] and ok["mask_names_hair_and_glasses"]
            and ok["empty_mask_is_reported"] and ok["fasa_changes_pd_mean_abs"] > 0):
        sys.exit("demo: a check failed, see the report")


if __name__ == "__main__":
    main()
