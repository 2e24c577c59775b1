"""bench/bench_report.py turns the benchmark's figures into the README's performance table (issue 8, item 3)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import bench_report  # noqa: E402


def test_report_has_the_readme_rows_and_the_machine():
    engine = {"steps": 8, "size": 256, "cfg": 6.0, "sampler": "euler", "threads": 2,
              "rows": {"baseline": 16, "replay": 32, "lockstep": 48, "reference": 64, "apg": 12, "with_apg": 44},
              "wall": {"replay": 1.96, "stage1": 0.94, "stage3": 1.02, "lockstep": 3.08, "with_apg": 2.87,
                       "baseline_s": 10.0},
              "replay_vs_lockstep_max_diff": 0.0,
              "attention_ms": {"fasa": 284, "empty": 280, "default": 725, "sdpa": 215, "default_name": "sub_quad"},
              "store": {"sd15": ["708 MB", "354 MB", "177 MB", "89 MB"], "sdxl": ["4.09 GB", "2.04 GB", "1 GB", "511 MB"]},
              "cpu_contention": "others 0%", "total_s": 300}
    parsing = {"whole": 0.25, "crop": 0.18, "detect": 0.02}
    text = bench_report.report(engine, parsing, bench_report.machine())
    assert "baseline **2N**, replay **4N**, lockstep 6N" in text
    assert "replay **1.96×** (stage 1 0.94× + stage 3 1.02×), lockstep 3.08×" in text
    assert "replay + APG 5.5N rows, wall **2.87×**" in text
    assert "SD1.5 512²: naive K/V 708 MB → stored attention inputs 354 MB → compacted to a 25% mask 89 MB" in text
    assert "whole image 0.25 s, face crop 0.18 s" in text
    assert text.startswith("Machine: ") and "CPUs" in text and "torch " in text
    assert sum(line.startswith("| ") for line in text.splitlines()) == 8


def test_report_shows_the_sdpa_baseline_and_the_fasa_layer_targets():
    """Issue 19 item 4: the wall-time row also gives the ratios against a stock KSampler on SDPA with the issue's
    targets, and the attention row one FASA layer against SDPA over the same keys."""
    engine = {"steps": 8, "size": 256, "cfg": 6.0, "sampler": "euler", "threads": 2,
              "rows": {"baseline": 16, "replay": 32, "lockstep": 48, "reference": 64, "apg": 12, "with_apg": 44},
              "wall": {"replay": 1.5, "stage1": 0.7, "stage3": 0.8, "lockstep": 2.5, "with_apg": 2.2, "baseline_s": 30.0},
              "wall_sdpa": {"replay": 1.93, "stage1": 0.96, "stage3": 0.97, "lockstep": 3.1, "with_apg": 2.9,
                            "baseline_s": 10.0},
              "attention_names": {"default": "sub_quad", "sdpa": "pytorch (SDPA)"},
              "targets": {"replay_sdpa": {"target": 2.0, "value": 1.93, "met": True},
                          "with_apg_sdpa": {"target": 2.7, "value": 2.9, "met": False},
                          "fasa_layer_fp32": {"target": 1.05, "value": 1.03, "met": True}},
              "fasa_layer": {"fp32": {"vs_floor": {"auto": 1.03}}, "bf16": {"vs_floor": {"auto": 1.2}},
                             "fp16": {"vs_floor": {}}},
              "replay_vs_lockstep_max_diff": 0.0,
              "attention_ms": {"fasa": 150, "empty": 121, "default": 472, "sdpa": 125, "default_name": "sub_quad"},
              "store": {"sd15": ["708 MB", "354 MB", "177 MB", "89 MB"], "sdxl": ["4.09 GB", "2.04 GB", "1 GB", "511 MB"]},
              "cpu_contention": "others 0%", "total_s": 300}
    text = bench_report.report(engine, {"whole": 0.25, "crop": 0.18, "detect": 0.02}, bench_report.machine())
    assert "| wall time vs stock KSampler (ComfyUI's default attention here: sub_quad) | replay **1.50×**" in text
    assert "with SDPA as the stock KSampler's attention: replay **1.93×**, lockstep 3.10×, replay + APG 2.90×" in text
    assert "replay ≤ 2× met, with APG ≤ 2.7× **not met**" in text
    assert "vs SDPA over the same keys: fp32 1.03×, bf16 1.20×, fp16 not measured (target ≤ 1.05× in fp32 and bf16)" \
        in text
    assert sum(line.startswith("| ") for line in text.splitlines()) == 8
