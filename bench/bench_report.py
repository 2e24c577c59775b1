"""`make bench-report`: the README's performance table for this machine, from one run of bench_engine.py and
bench_parsing.py (ratios measured in that run), with the machine described. A benchmark, not a test.

Usage: .venv/bin/python bench/bench_report.py [--quick] [--steps N] [--size PX] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def machine() -> dict:
    """CPU model and count, memory, OS, Python/torch versions and the GPU (if torch sees one)."""
    import torch
    cpu = platform.processor() or platform.machine()
    mem = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
        with open("/proc/meminfo") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal"))
            mem = kb / 2 ** 20
    except (OSError, StopIteration, ValueError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)"
    return {"cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "memory_gib": mem,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "torch": torch.__version__, "gpu": gpu}


def _met(value, target) -> str:
    return "not measured" if value is None else f"{'met' if value <= target else '**not met**'}"


def _sdpa_figures(engine: dict) -> tuple[str, str, str]:
    """The wall-time row's attention label and its SDPA-baseline figures, and the FASA-layer-vs-floor figures, from
    bench_engine's newer keys ('' for each when an older engine dict lacks them)."""
    names, ws, targets, layer = (engine.get(k) for k in ("attention_names", "wall_sdpa", "targets", "fasa_layer"))
    on_default = f" (ComfyUI's default attention here: {names['default']})" if names else ""
    sdpa_wall = ""
    if ws and names and names["sdpa"] != names["default"]:
        sdpa_wall = (f"; with SDPA as the stock KSampler's attention: replay **{ws['replay']:.2f}×**, lockstep "
                     f"{ws['lockstep']:.2f}×, replay + APG {ws['with_apg']:.2f}×")
    if ws and targets:
        t, a = targets["replay_sdpa"], targets["with_apg_sdpa"]
        sdpa_wall += (f" (issue targets with SDPA: replay ≤ {t['target']:g}× {_met(t['value'], t['target'])}, "
                      f"with APG ≤ {a['target']:g}× {_met(a['value'], a['target'])})")
    text = ""
    if layer:
        parts = []
        for dtype, fig in layer.items():
            ratio = fig["vs_floor"].get("auto")
            parts.append(f"{dtype} {ratio:.2f}×" if ratio else f"{dtype} not measured")
        target = (targets or {}).get("fasa_layer_fp32", {}).get("target")
        text = (f"; one FASA layer (25% mask, kernel auto) vs SDPA over the same keys: {', '.join(parts)}"
                + (f" (target ≤ {target:g}× in fp32 and bf16)" if target else ""))
    return on_default, sdpa_wall, text


def report(engine: dict, parsing: dict, m: dict) -> str:
    """The README's performance table (markdown) from bench_engine.main() and bench_parsing.main() figures."""
    n, rows, wall, attn, st = engine["steps"], engine["rows"], engine["wall"], engine["attention_ms"], engine["store"]
    per = lambda k: f"{rows[k] / n:g}N"  # noqa: E731
    on_default, sdpa_wall, layer = _sdpa_figures(engine)
    mem = f"{m['memory_gib']:.0f} GiB RAM" if m["memory_gib"] else "RAM unknown"
    lines = [
        f"Machine: {m['cpu']}, {m['cpus']} CPUs ({m['threads']} torch threads), {mem}, GPU {m['gpu']}; "
        f"{m['os']}, Python {m['python']}, torch {m['torch']}.",
        "",
        f"| figure (one run, {engine['size']}² px, {n} steps, {engine['sampler']}, CFG {engine['cfg']:g}, 25% mask) "
        "| result |",
        "|---|---|",
        f"| UNet row-evaluations per image (counted) | baseline **{per('baseline')}**, replay **{per('replay')}**, "
        f"lockstep {per('lockstep')} (reference code: 8N, analytical) |",
        f"| wall time vs stock KSampler{on_default} | replay **{wall['replay']:.2f}×** (stage 1 {wall['stage1']:.2f}× + "
        f"stage 3 {wall['stage3']:.2f}×), lockstep {wall['lockstep']:.2f}× (paper's reference pipeline: 3.5–4×)"
        f"{sdpa_wall} |",
        f"| replay PD vs lockstep PD | max abs diff {engine['replay_vs_lockstep_max_diff']:.1e} |",
        f"| APG (stage 4, γ 0.5) | {rows['apg'] / n:g}N rows; whole pipeline replay + APG {rows['with_apg'] / n:g}N "
        f"rows, wall **{wall['with_apg']:.2f}×** the stock KSampler |",
        f"| one attention call at SD1.5's 64² decoder layer (4096 tokens, 8×40 heads) | FASA with 25% mask "
        f"{attn['fasa']:.0f} ms, FASA empty mask {attn['empty']:.0f} ms, ComfyUI default ({attn['default_name']}) "
        f"{attn['default']:.0f} ms, PyTorch SDPA {attn['sdpa']:.0f} ms{layer} |",
        f"| FD record, fp16, 30 steps (analytical) | SD1.5 512²: naive K/V {st['sd15'][0]} → stored attention inputs "
        f"{st['sd15'][1]} → compacted to a 25% mask {st['sd15'][3]}; SDXL 1024²: {st['sdxl'][0]} → {st['sdxl'][1]} → "
        f"{st['sdxl'][3]} |",
        f"| face parsing, one 1024² image (random-weight BiSeNet of the real size) | whole image "
        f"{parsing['whole']:.2f} s, face crop {parsing['crop']:.2f} s (+ detector) |",
        "",
        f"Baseline {wall['baseline_s']:.1f} s per image; {engine['cpu_contention']}; benchmark ran "
        f"{engine['total_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 128² px, 2 steps")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--size", type=int)
    ap.add_argument("--out", help="also write the report to this file")
    args = ap.parse_args(argv)
    import torch

    import bench_engine
    import bench_parsing
    engine_argv = (["--quick"] if args.quick else []) + (["--steps", str(args.steps)] if args.steps else []) + \
                  (["--size", str(args.size)] if args.size else [])
    with torch.inference_mode():
        engine = bench_engine.main(engine_argv)
    parsing = bench_parsing.main(["--repeats", "1" if args.quick else "3"])
    text = report(engine, parsing, machine())
    print("\n== README performance table ==\n" + text)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
