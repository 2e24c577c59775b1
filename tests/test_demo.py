"""`make demo` runs the face-parsing workflow through the headless runner and writes its images and a passing report."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_images_and_a_passing_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(tmp_path), "--steps", "4",
                           "--width", "128", "--height", "96"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for name in report["files"].values():
        assert (tmp_path / name).stat().st_size > 0
    checks = report["checks"]
    assert checks["all_prompts_succeeded"] and checks["images_have_the_requested_size"]
    assert checks["mask_names_hair_and_glasses"] and checks["empty_mask_is_reported"]
    assert checks["fasa_changes_pd_mean_abs"] > 0
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["mode"] == "embedded" and [p["status"] for p in record["prompts"]] == ["success", "success"]
