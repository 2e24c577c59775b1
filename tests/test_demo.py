"""`make demo` runs the whole pipeline and writes its images and a report whose invariants hold."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_images_and_a_passing_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(tmp_path), "--steps", "4",
                           "--width", "128", "--height", "96"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for name in report["files"].values():
        assert (tmp_path / name).stat().st_size > 0
    checks = report["checks"]
    assert checks["pd_without_fasa_bit_identical_to_ksampler"] and checks["lockstep_fd_bit_identical_to_stage1"]
    assert checks["replay_vs_lockstep_max_abs_diff"] < 1e-4 and checks["fasa_changes_pd_mean_abs"] > 0
