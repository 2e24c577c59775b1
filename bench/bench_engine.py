"""`make bench`: FreeCure engine cost and speed figures (a benchmark, not a test).

One run, one model: a UNet with SD1.5's real dimensions (ComfyUI's detected SD1.5 unet_config,
859 M parameters) and random weights, fp32 on the CPU, driven by ComfyUI's own samplers.

  1. UNet row-evaluations per image, counted by a model_function_wrapper on the MODEL clones:
     baseline KSampler, replay (stage 1 FD + stage 3 PD), lockstep (stage 1 FD + stage 3 [PD; FD]),
     and the reference implementation's 8N (analytical, method.md section 8).
  2. Wall time of each variant against the stock KSampler (same seed, 25 % box mask, after a warm-up).
  3. One FASA attention call against plain attention at SD1.5's 64x64 decoder shape.
  4. APG (stage 4, gamma 0.5) on the replay result: its rows and wall time, and the whole pipeline
     with APG against the baseline (issue target: <= 3x; the paper reports 3.5-4x).
  5. Size of the stage-1 record (attn1 inputs "x", keys/values "kv", mask-compacted copies) against
     naive fp16 K/V, measured for this run and extrapolated analytically to SD1.5 512² / SDXL 1024².

Usage: .venv/bin/python bench/bench_engine.py [--steps N] [--size PX] [--quick]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import shlex
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.comfy_env import import_comfy  # noqa: E402

import_comfy()  # puts ComfyUI's root first on sys.path (its `nodes` must win over this pack's nodes/)
sys.path.insert(1, str(ROOT))  # for freecure_core

import logging  # noqa: E402

import torch  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # ComfyUI's import-time warnings (torchaudio...) are noise here
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
import nodes as comfy_nodes  # noqa: E402
from timing import median_time, timed  # noqa: E402  (bench/timing.py)
from freecure_core.fasa.attention import fasa_attention  # noqa: E402
from freecure_core.comfy_bridge.apg import apg  # noqa: E402
from freecure_core.comfy_bridge.probe import probe_sites  # noqa: E402
from freecure_core.comfy_bridge.sampling import sample_foundation, sample_freecure  # noqa: E402
from freecure_core.fasa.config import FASAConfig  # noqa: E402
from freecure_core.fasa.record import KVStore  # noqa: E402
from freecure_core.fasa.layers import resolve_layers  # noqa: E402
from freecure_core.fasa.masks import TokenMasks, downsampled_grid  # noqa: E402
from support.tiny_models import init_weights_  # noqa: E402

# ComfyUI's model_detection SD15 unet_config (what a real SD1.5 checkpoint is detected as).
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
# SDXL reference FASA layers (last 20 attn1 calls): (downsample level, channels, count). method.md §8.
SDXL_REFERENCE = [(2, 1280, 14), (1, 640, 6)]
SEED, CFG, SAMPLER, SCHEDULER = 42, 6.0, "euler", "normal"
FP16 = 2


# ------------------------------------------------------------------------------------------ helpers
class RowCounter:
    """model_function_wrapper that counts the UNet rows (batch entries) really evaluated."""

    def __init__(self):
        self.rows = 0
        self.calls = 0

    def __call__(self, apply_model, args):
        self.rows += int(args["input"].shape[0])
        self.calls += 1
        return apply_model(args["input"], args["timestep"], **args["c"])

    def take(self) -> int:
        rows, self.rows, self.calls = self.rows, 0, 0
        return rows


def counted_clone(model):
    clone = model.clone()
    counter = RowCounter()
    clone.set_model_unet_function_wrapper(counter)
    return clone, counter


def build_sd15(seed: int = 0):
    """SD1.5-dimension UNet (random weights, fp32, CPU) in a ModelPatcher."""
    cfg = comfy.supported_models.SD15(dict(SD15_UNET, dtype=torch.float32))
    cfg.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = cfg.get_model({}, device=cpu)
    init_weights_(model.diffusion_model, seed=seed)
    model.diffusion_model.float().eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def conditioning(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 768, generator=g), {}]]


def box_mask(h: int, w: int) -> torch.Tensor:
    """(1, h, w) mask, 1 on a centred box covering a quarter of the image."""
    m = torch.zeros(1, h, w)
    m[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = 1
    return m




def fmt_bytes(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.1f} kB"


def table(title: str, header: list[str], rows: list[list], note: str | None = None) -> None:
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            print(line)
    if note:
        print(note)


class CpuWatch:
    """CPU seconds used by other processes (from /proc/stat minus this process) while the bench runs."""

    def __init__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy(), self._own()

    @staticmethod
    def _busy() -> float | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system

    def report(self) -> str:
        busy = self._busy()
        if busy is None or self.busy0 is None:
            return "other processes' CPU use: unknown (no /proc/stat)"
        wall = time.perf_counter() - self.t0
        others = max(0.0, busy - self.busy0 - (self._own() - self.own0))
        return (f"other processes used {others:.0f} CPU-s during the run ({100 * others / (wall * os.cpu_count()):.0f}% "
                f"of {os.cpu_count()} CPUs over {wall:.0f} s); load average now {os.getloadavg()[0]:.2f}")


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({cpu}), "
            f"python {platform.python_version()}")


# ------------------------------------------------------------------------------------------ sections
def run_pipelines(base, args, mask):
    """Warm up, then time and count baseline, replay (x and kv store) and lockstep on one model."""
    m_base, c_base = counted_clone(base)
    m_fd, c_fd = counted_clone(base)
    m_pd, c_pd = counted_clone(base)
    pos, neg, fd_pos = conditioning(1), conditioning(2), conditioning(3)
    px = args.size
    latent = {"samples": torch.zeros(1, 4, px // 8, px // 8)}
    fasa = FASAConfig(mask=mask)

    def baseline(steps):
        return comfy_nodes.common_ksampler(m_base, SEED, steps, CFG, SAMPLER, SCHEDULER, pos, neg, latent)[0]

    def stage1(steps, store):
        return sample_foundation(m_fd, fd_pos, neg, latent, SEED, steps, CFG, SAMPLER, SCHEDULER, 1.0,
                                 record="cond", layers="reference", store=store)

    def stage3(steps, kv):
        return sample_freecure(m_pd, m_fd, pos, neg, fd_pos, neg, latent, SEED, steps, CFG, SAMPLER, SCHEDULER,
                               1.0, fasa, kv=kv)

    attr_pos = conditioning(4)  # APG: template = the FD prompt, attributes = another prompt (the expression words)

    def stage4(steps, pd_latent):
        return apg(m_fd, pd_latent, fd_pos, attr_pos, neg, SEED, steps, CFG, SAMPLER, SCHEDULER, gamma=0.5)

    t = time.perf_counter()  # warm-up: every code path once, 1 step
    baseline(1)
    stage4(1, stage3(1, stage1(1, "x")[1])[0])
    stage3(1, None)
    for c in (c_base, c_fd, c_pd):
        c.take()
    warm = time.perf_counter() - t

    n = args.steps
    r = {"base": [], "s1x": [], "s3x": []}
    # order: baseline, replay, lockstep, kv record, then baseline and replay again (best of 2 for those)
    for rep in range(2):
        base_lat, t = timed(lambda: baseline(n))
        r["base"].append(t)
        r["base_rows"] = c_base.take()
        (fd_lat, kv_x), t = timed(lambda: stage1(n, "x"))
        r["s1x"].append(t)
        r["s1x_rows"] = c_fd.take()
        (pd_rx, _, rep_x), t = timed(lambda: stage3(n, kv_x))
        r["s3x"].append(t)
        r["s3x_rows"], r["s3x_fd_rows"] = c_pd.take(), c_fd.take()
        if rep == 0:
            (pd_lock, fd_lock, rep_lock), r["lock_s"] = timed(lambda: stage3(n, None))
            r["lock_pd_rows"], r["lock_fd_rows"] = c_pd.take(), c_fd.take()
            (_, kv_kv), r["s1kv_s"] = timed(lambda: stage1(n, "kv"))
            r["s1kv_rows"] = c_fd.take()
            (apg_lat, r["apg_report"]), r["apg_s"] = timed(lambda: stage4(n, pd_rx))
            r["apg_rows"] = c_fd.take()
    for key in ("base", "s1x", "s3x"):
        r[key + "_s"] = min(r[key])
    r.update(warm_s=warm, kv_x=kv_x, kv_kv=kv_kv, rep_x=rep_x, rep_lock=rep_lock)
    r["checks"] = {
        "finite": all(bool(torch.isfinite(t["samples"]).all()) for t in (base_lat, fd_lat, pd_rx, pd_lock)),
        "lock_fd_eq_stage1": bool(torch.equal(fd_lock["samples"], fd_lat["samples"])),
        "replay_x_vs_lock": float((pd_rx["samples"] - pd_lock["samples"]).abs().max()),
        "fasa_effect": float((pd_rx["samples"] - base_lat["samples"]).abs().mean()),
        "apg_ran": bool(r["apg_report"].get("ran")) and bool(torch.isfinite(apg_lat["samples"]).all()),
    }
    return r


def section_rows(r, n):
    base = r["base_rows"]
    lock = r["s1x_rows"] + r["lock_pd_rows"] + r["lock_fd_rows"]
    replay = r["s1x_rows"] + r["s3x_rows"] + r["s3x_fd_rows"]
    rows = [
        ["baseline (stock KSampler)", base, f"{base / n:.0f}N", f"{base / base:.1f}x", "counted"],
        ["FreeCure replay: stage 1 FD + stage 3 PD", f"{r['s1x_rows']}+{r['s3x_rows'] + r['s3x_fd_rows']}={replay}",
         f"{replay / n:.0f}N", f"{replay / base:.1f}x", "counted"],
        ["FreeCure lockstep: stage 1 FD + stage 3 [PD;FD]",
         f"{r['s1x_rows']}+{r['lock_pd_rows']}+{r['lock_fd_rows']}={lock}", f"{lock / n:.0f}N",
         f"{lock / base:.1f}x", "counted"],
        ["reference implementation (2 passes x 4 rows)", 8 * n, "8N", f"{8 * n / base:.1f}x", "analytical"],
    ]
    table(f"[1] UNet row-evaluations per image (N = {n} steps, euler, CFG {CFG}: 1 row = 1 image through the UNet)",
          ["variant", "rows", "per N", "vs base", "source"], rows,
          f"FASA attention calls: replay {r['rep_x'].get('fasa_calls')}, lockstep {r['rep_lock'].get('fasa_calls')} "
          f"({len(r['rep_x'].get('sites', []))} sites {', '.join(r['rep_x'].get('sites', []))}; "
          f"omega {r['rep_x'].get('omega')}). Probe forwards (1 row, 16x24 latent) are not counted.")


def section_time(r, args):
    base = r["base_s"]

    def row(name, s, rows):
        return [name, f"{s:.1f}", f"{s / base:.2f}x", rows, f"{s / rows:.2f}" if rows else "-"]

    def runs(key):
        return " / ".join(f"{t:.1f}" for t in r[key])

    rep = r["s1x_s"] + r["s3x_s"]
    lock = r["s1x_s"] + r["lock_s"]
    rows = [
        row("baseline: stock KSampler (best of 2)", base, r["base_rows"]),
        row("replay stage 1: FD, record attn1 inputs x (best of 2)", r["s1x_s"], r["s1x_rows"]),
        row("replay stage 3: PD + FASA from the x record (best of 2)", r["s3x_s"], r["s3x_rows"]),
        row("replay total (stage 1 + stage 3)", rep, r["s1x_rows"] + r["s3x_rows"]),
        row("lockstep stage 3: [PD; FD] paired", r["lock_s"], r["lock_pd_rows"] + r["lock_fd_rows"]),
        row("lockstep total (stage 1 + stage 3)", lock, r["s1x_rows"] + r["lock_pd_rows"] + r["lock_fd_rows"]),
        row("stage 1 recording kv instead of x (for section 5)", r["s1kv_s"], r["s1kv_rows"]),
    ]
    c = r["checks"]
    table(f"[2] Wall time, SD1.5-dimension UNet (859 M params, random weights, fp32 CPU), {args.size}x{args.size} px, "
          f"{args.steps} steps, seed {SEED}, 25% box mask",
          ["variant", "s", "vs base", "rows", "s/row"], rows,
          f"runs (s): baseline {runs('base')}, stage 1 {runs('s1x')}, stage 3 {runs('s3x')}; warm-up {r['warm_s']:.1f} s. "
          f"Both totals use the same stage-1 run\n(record x; with record off stage 1 is a plain KSampler pass). "
          f"checks: outputs finite {c['finite']}; lockstep FD == stage-1 FD {c['lock_fd_eq_stage1']}; "
          f"max|PD replay - PD lockstep| {c['replay_x_vs_lock']:.1e}; mean|PD(FASA) - baseline| {c['fasa_effect']:.3f}")
    return base, rep, lock


def section_apg(r, args):
    n, base_rows, base = args.steps, r["base_rows"], r["base_s"]
    k = r["apg_report"].get("inverted_steps")
    replay_rows = r["s1x_rows"] + r["s3x_rows"] + r["s3x_fd_rows"]
    replay_s = r["s1x_s"] + r["s3x_s"]
    total_rows, total_s = replay_rows + r["apg_rows"], replay_s + r["apg_s"]
    rows = [
        ["APG alone (inversion cfg 1 + regeneration cfg %g)" % CFG, r["apg_rows"], f"{r['apg_rows'] / n:.1f}N",
         f"{r['apg_s']:.1f}", f"{r['apg_s'] / base:.2f}x"],
        ["replay FreeCure (stages 1 + 3), from [2]", replay_rows, f"{replay_rows / n:.1f}N", f"{replay_s:.1f}",
         f"{replay_s / base:.2f}x"],
        ["whole pipeline with APG (stages 1 + 3 + 4)", total_rows, f"{total_rows / n:.1f}N", f"{total_s:.1f}",
         f"{total_s / base:.2f}x"],
    ]
    rep = r["apg_report"]
    turn = f"turn at sigma {rep.get('sigma_turn', 0):.4g}, {rep.get('whole_steps', k)} of the {n} scheduled" + \
        (" + 1 to the turn" if rep.get("turn_step") else "")
    table(f"[4] APG, gamma 0.5 ({turn}): {k} steps inverted then regenerated (one run, same model and size as [2])",
          ["variant", "rows", "per N", "s", "vs base"], rows,
          f"baseline = stock KSampler, {base_rows} rows, {base:.1f} s. Inversion runs the template prompt at cfg 1 "
          f"(ComfyUI skips the uncond row), so APG costs 3 rows per step inverted. Target for the whole pipeline: <= 3x "
          f"the baseline's wall time (paper: 3.5-4x). APG ran and is finite: {r['checks']['apg_ran']}")
    return total_s


def section_attention(args):
    n, c, heads = 64 * 64, 320, 8
    g = torch.Generator().manual_seed(0)
    q, k, v, k_fd, v_fd = (torch.randn(1, n, c, generator=g) for _ in range(5))
    mask = box_mask(64, 64).flatten(1)[0]
    empty = torch.zeros_like(mask)
    reps = args.attn_repeats
    default = comfy_attention.optimized_attention
    sdpa = comfy_attention.attention_pytorch
    t_def = median_time(lambda: default(q, k, v, heads), reps)
    t_sdpa = median_time(lambda: sdpa(q, k, v, heads), reps)
    t_empty = median_time(lambda: fasa_attention(q, k, v, k_fd, v_fd, empty, 0.5, heads), reps)
    t_fasa = median_time(lambda: fasa_attention(q, k, v, k_fd, v_fd, mask, 0.5, heads), reps)
    diff = float((fasa_attention(q, k, v, k_fd, v_fd, empty, 0.5, heads) - default(q, k, v, heads)).abs().max())
    rows = [
        [f"ComfyUI optimized_attention (CPU default: {default.__name__})", f"{t_def * 1e3:.0f}", "1.00x", "4096"],
        ["ComfyUI attention_pytorch (SDPA)", f"{t_sdpa * 1e3:.0f}", f"{t_sdpa / t_def:.2f}x", "4096"],
        ["fasa_attention, empty mask (= plain attention)", f"{t_empty * 1e3:.0f}", f"{t_empty / t_def:.2f}x", "4096"],
        ["fasa_attention, 25% mask", f"{t_fasa * 1e3:.0f}", f"{t_fasa / t_def:.2f}x",
         f"{n}+{int(mask.sum())}"],
    ]
    table(f"[3] One attention call at SD1.5's 64x64 decoder shape: batch 1, {n} tokens, {c} ch = {heads} heads x "
          f"{c // heads}, fp32, median of {reps} after 1 warm-up",
          ["call", "ms", "vs default", "keys"], rows,
          f"fasa/empty-mask {t_fasa / t_empty:.2f}x (key count ratio {(n + int(mask.sum())) / n:.2f}); "
          f"max|fasa(empty) - default| = {diff:.1e}")
    return t_def, t_sdpa, t_empty, t_fasa


def _site_layout(store: KVStore):
    """[(level, channels)] per recorded site, from the store itself."""
    latent_hw = store.info.latent_shape[-2:]
    out = []
    for key in store.info.site_keys:
        grid = store.info.site_tokens[key]
        level = next(lv for lv in range(8) if downsampled_grid(latent_hw, lv) == tuple(grid))
        tensors = next(t for (ev, k, row), t in store.entries.items() if k == key)
        out.append((level, int(tensors[0].shape[-1])))
    return out


def _analytic(layout, latent_hw, evals, mask_frac_at):
    """Bytes (fp16) of naive K/V, x, and their mask-compacted copies for sites `layout` [(level, ch)]."""
    kv = x = kv_c = x_c = 0
    for level, ch in layout:
        grid = downsampled_grid(latent_hw, level)
        tokens = grid[0] * grid[1]
        kept = tokens * mask_frac_at(grid)
        kv += 2 * tokens * ch * FP16 * evals
        x += tokens * ch * FP16 * evals
        kv_c += 2 * kept * ch * FP16 * evals
        x_c += kept * ch * FP16 * evals
    return kv, x, kv_c, x_c


def section_store(r, mask, args):
    kv_x, kv_kv = r["kv_x"], r["kv_kv"]
    info = kv_x.info
    evals = len(info.eval_sigmas)
    latent_hw = tuple(info.latent_shape[-2:])
    layout = _site_layout(kv_x)
    tm = TokenMasks(mask, "nearest")
    compact_masks = {key: tm.at(info.site_tokens[key]) for key in info.site_keys}
    kv_kv_c = kv_kv.compacted_copy(compact_masks)
    dtype = next(iter(kv_x.entries.values()))[0].dtype
    esize = torch.finfo(dtype).bits // 8

    def frac_fn(m):
        t = TokenMasks(m, "nearest")
        return lambda grid: float(t.at(grid).mean())

    naive, _, _, _ = _analytic(layout, latent_hw, evals, frac_fn(mask))
    measured_naive = sum(2 * t.numel() * FP16 for ts in kv_x.entries.values() for t in ts)
    sd15 = _analytic(layout, (64, 64), 30, frac_fn(box_mask(512, 512)))
    sdxl = _analytic([(lv, ch) for lv, ch, cnt in SDXL_REFERENCE for _ in range(cnt)], (128, 128), 30,
                     frac_fn(box_mask(1024, 1024)))

    def cell(b):  # measured bytes in the store's dtype, and fp16-equivalent
        return f"{fmt_bytes(b)}" + ("" if esize == FP16 else f" ({fmt_bytes(b * FP16 / esize)} fp16)")

    rows = [
        ["naive K/V, fp16, all layers x all evals (cond)", fmt_bytes(naive), "1.00", fmt_bytes(sd15[0]), fmt_bytes(sdxl[0])],
        ["recorded kv store", cell(kv_kv.nbytes()), f"{kv_kv.nbytes() * FP16 / esize / naive:.2f}",
         fmt_bytes(sd15[0]), fmt_bytes(sdxl[0])],
        ["recorded x store (attn1 inputs, default)", cell(kv_x.nbytes()), f"{kv_x.nbytes() * FP16 / esize / naive:.2f}",
         fmt_bytes(sd15[1]), fmt_bytes(sdxl[1])],
        ["kv, compacted to the 25% mask", cell(kv_kv_c.nbytes()), f"{kv_kv_c.nbytes() * FP16 / esize / naive:.2f}",
         fmt_bytes(sd15[2]), fmt_bytes(sdxl[2])],
        ["x, compacted to the 25% mask (used by replay)", cell(r["rep_x"]["compacted_bytes"]),
         f"{r['rep_x']['compacted_bytes'] * FP16 / esize / naive:.2f}", fmt_bytes(sd15[3]), fmt_bytes(sdxl[3])],
    ]
    sites = ", ".join(f"L{lv}x{ch}" for lv, ch in layout)
    table(f"[5] FD record size, reference layers, cond row only. Bench run: {args.size}² px, {evals} evals, "
          f"{len(layout)} sites, stored as {str(dtype).replace('torch.', '')} (measured)",
          ["store", "bench run (measured)", "/naive", "SD1.5 512² 30 st*", "SDXL 1024² 30 st*"], rows,
          f"* ANALYTICAL extrapolation, fp16 (as stored for an fp16 model): SD1.5 = this run's sites ({sites}; "
          f"L = downsample level) on a 64² latent;\n  SDXL = last 20 attn1 calls (14 x 1280 ch at 32², 6 x 640 ch at "
          f"64², method.md §8). The naive row of this run is computed from the store's shapes "
          f"({fmt_bytes(measured_naive)}, {'matches' if abs(measured_naive - naive) < 1 else 'DIFFERS FROM'} the "
          f"formula).")
    return sd15, sdxl


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    """Run every section, print them, and return the headline figures (bench/bench_report.py tabulates them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="sampling steps N (default 8; --quick 2)")
    ap.add_argument("--size", type=int, default=None, help="image size in px, square (default 256; --quick 128)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny size, few steps, few repeats")
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 8)
    args.size = args.size or (128 if args.quick else 256)
    args.attn_repeats = 3 if args.quick else 5
    if args.size % 8:
        ap.error("--size must be a multiple of 8 (one latent pixel = 8 px)")
    t0 = time.perf_counter()
    comfy.utils.PROGRESS_BAR_ENABLED = False

    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    print("FreeCure engine benchmark")
    print(f"command: {exe} {shlex.join(sys.argv)}")
    print(f"machine: {machine_line()}")

    base, build_s = timed(lambda: build_sd15(seed=0))
    probe_sites(base.model, torch.device("cpu"))
    sites, probe_s = timed(lambda: probe_sites(base.model, torch.device("cpu")))
    ref = resolve_layers("reference", sites, "sd1")
    print(f"model:   ComfyUI SD15 unet_config, random init (init_weights_), built in {build_s:.0f} s; "
          f"{len(sites)} attn1 sites, FASA 'reference' layers: {', '.join(s.label() for s in ref)}; "
          f"one site probe (1-row forward, 16x24 latent, run by each FreeCure stage) {probe_s:.2f} s")
    mask = box_mask(args.size, args.size)
    watch = CpuWatch()

    r = run_pipelines(base, args, mask)
    section_rows(r, args.steps)
    t_base, t_rep, t_lock = section_time(r, args)
    t_def, t_sdpa, t_empty, t_fasa = section_attention(args)
    t_apg_total = section_apg(r, args)
    sd15, sdxl = section_store(r, mask, args)

    n = args.steps
    total = time.perf_counter() - t0
    print(f"\ntotal runtime {total:.0f} s; {watch.report()}")
    print("\nSummary (README):")
    print(f"- UNet row-evaluations per image with CFG, N steps: baseline 2N, FreeCure replay 4N, lockstep 6N, "
          f"reference code 8N (counted at N={n}: {r['base_rows']} / {r['s1x_rows'] + r['s3x_rows']} / "
          f"{r['s1x_rows'] + r['lock_pd_rows'] + r['lock_fd_rows']}; 8N analytical).")
    print(f"- Wall time vs stock KSampler, SD1.5-size UNet (random weights, fp32, {torch.get_num_threads()}-thread CPU, "
          f"{args.size}², {n} steps): replay {t_rep / t_base:.2f}x (stage 1 {r['s1x_s'] / t_base:.2f}x + stage 3 "
          f"{r['s3x_s'] / t_base:.2f}x), lockstep {t_lock / t_base:.2f}x; with APG (gamma 0.5) "
          f"{t_apg_total / t_base:.2f}x ({(r['s1x_rows'] + r['s3x_rows'] + r['apg_rows']) / n:.1f}N rows).")
    print(f"- One FASA attention call at SD1.5 64² (4096 tokens, 8x40 heads, 25% mask): {t_fasa * 1e3:.0f} ms vs "
          f"{t_empty * 1e3:.0f} ms with an empty mask and {t_def * 1e3:.0f} ms for ComfyUI's CPU default "
          f"({comfy_attention.optimized_attention.__name__}).")
    print(f"- FD record, fp16, 30 steps (analytical): SD1.5 512² naive K/V {fmt_bytes(sd15[0])} -> attn1 inputs "
          f"{fmt_bytes(sd15[1])} -> 25%-mask compacted {fmt_bytes(sd15[3])}; SDXL 1024² {fmt_bytes(sdxl[0])} -> "
          f"{fmt_bytes(sdxl[1])} -> {fmt_bytes(sdxl[3])}.")
    return {
        "steps": n, "size": args.size, "cfg": CFG, "sampler": SAMPLER, "threads": torch.get_num_threads(),
        "rows": {"baseline": r["base_rows"], "replay": r["s1x_rows"] + r["s3x_rows"] + r["s3x_fd_rows"],
                 "lockstep": r["s1x_rows"] + r["lock_pd_rows"] + r["lock_fd_rows"], "reference": 8 * n,
                 "apg": r["apg_rows"], "with_apg": r["s1x_rows"] + r["s3x_rows"] + r["s3x_fd_rows"] + r["apg_rows"]},
        "wall": {"replay": t_rep / t_base, "stage1": r["s1x_s"] / t_base, "stage3": r["s3x_s"] / t_base,
                 "lockstep": t_lock / t_base, "with_apg": t_apg_total / t_base, "baseline_s": t_base},
        "replay_vs_lockstep_max_diff": r["checks"]["replay_x_vs_lock"],
        "attention_ms": {"fasa": t_fasa * 1e3, "empty": t_empty * 1e3, "default": t_def * 1e3, "sdpa": t_sdpa * 1e3,
                         "default_name": comfy_attention.optimized_attention.__name__},
        "store": {"sd15": [fmt_bytes(b) for b in sd15], "sdxl": [fmt_bytes(b) for b in sdxl]},
        "cpu_contention": watch.report(), "total_s": total,
    }


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs nodes
        main()
