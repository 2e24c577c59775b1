"""`make bench`: FreeCure engine cost and speed figures (a benchmark, not a test).

One run, one model: a UNet with SD1.5's real dimensions (ComfyUI's detected SD1.5 unet_config,
859 M parameters) and random weights, fp32 on the CPU, driven by ComfyUI's own samplers.

  1. UNet row-evaluations per image, counted by a model_function_wrapper on the MODEL clones:
     baseline KSampler, replay (stage 1 FD + stage 3 PD), lockstep (stage 1 FD + stage 3 [PD; FD]),
     and the reference implementation's 8N (analytical, method.md section 8).
  2. Wall time of each variant against the stock KSampler (same seed, 25 % box mask, after a warm-up), once per
     attention the stock KSampler may run with: ComfyUI's CPU default (`optimized_attention`, sub-quadratic) and
     PyTorch SDPA (`attention_pytorch`). ComfyUI's CrossAttention and FreeCure's plain rows both look up
     `comfy.ldm.modules.attention.optimized_attention` at call time, so setting that module attribute (and
     `optimized_attention_masked`) switches both; every ratio is measured within one run of this script.
  3. One FASA attention layer at SD1.5's 64x64 decoder shape in fp32, bf16 and fp16: each kernel (reference,
     masked, folded, split, auto) called as the patch calls it (keys chosen once by select_keys, then fasa_attention with
     that selection), against the floor: ComfyUI's SDPA attention over the same number of keys. Target: <= 1.05x the floor
     (fp32 and bf16 on the CPU).
  4. APG (stage 4, gamma 0.5) on the replay result: its rows and wall time, and the whole pipeline
     with APG against the baseline, per attention as in 2 (issue target with SDPA: <= 2.7x; the paper reports
     3.5-4x).
  5. Size of the stage-1 record (attn1 inputs "x", keys/values "kv", mask-compacted copies) against
     naive fp16 K/V, measured for this run and extrapolated analytically to SD1.5 512² / SDXL 1024².
  6. Record traffic of one replay: bytes of the record served to FASA and copied to another device, per step
     (the record's read_bytes / copied_bytes counters; "n/a" where the record has none).

Usage: .venv/bin/python bench/bench_engine.py [--steps N] [--size PX] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
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
import torch.nn.functional as F  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # ComfyUI's import-time warnings (torchaudio...) are noise here
import comfy.ldm.modules.attention as comfy_attention  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402
import nodes as comfy_nodes  # noqa: E402
from record_traffic import COUNTERS, fmt_traffic, per_step  # noqa: E402  (bench/record_traffic.py)
from timing import interleaved_medians, timed  # noqa: E402  (bench/timing.py)
from freecure_core.fasa.attention import fasa_attention  # noqa: E402
from freecure_core.fasa.kernel import choose_kernel  # noqa: E402
from freecure_core.comfy_bridge.apg import apg  # noqa: E402
from freecure_core.comfy_bridge.probe import probe_sites  # noqa: E402
from freecure_core.comfy_bridge.sampling import sample_foundation, sample_freecure  # noqa: E402
from freecure_core.fasa.config import FASAConfig  # noqa: E402
from freecure_core.fasa.record import KVStore  # noqa: E402
from freecure_core.fasa.layers import resolve_layers  # noqa: E402
from freecure_core.fasa.masks import TokenMasks, downsampled_grid  # noqa: E402
from freecure_core.fasa.selection import select_keys  # noqa: E402
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
OMEGA = 0.5
FASA_KERNELS = ("reference", "masked", "folded", "split", "auto")
LAYER_DTYPES = (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16))
# issue 19, on the CPU: replay and replay + APG against the stock KSampler with SDPA as its attention; one FASA layer
# against plain SDPA over the same number of keys (fp32 and bf16)
TARGETS = {"replay": 2.0, "with_apg": 2.7, "fasa_layer": 1.05}
LAYER_TARGET_DTYPES = ("fp32", "bf16")


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


# ------------------------------------------------------------------------------------------ attention choice
def attn_name(fn) -> str:
    """'sub_quad' for comfy's attention_sub_quad, 'pytorch (SDPA)' for attention_pytorch, etc."""
    name = getattr(fn, "__name__", str(fn)).replace("attention_", "")
    return "pytorch (SDPA)" if name == "pytorch" else name


def attention_choices() -> list[tuple[str, object]]:
    """[(key, function)] the stock KSampler is timed with: ComfyUI's default attention on this machine ("default"),
    then PyTorch SDPA ("sdpa"); one entry when ComfyUI's default already is SDPA."""
    default = comfy_attention.optimized_attention
    out = [("default", default)]
    if default is not comfy_attention.attention_pytorch:
        out.append(("sdpa", comfy_attention.attention_pytorch))
    return out


@contextlib.contextmanager
def comfy_attention_set_to(fn):
    """ComfyUI's attention switched to `fn` inside the block. CrossAttention.forward (comfy/ldm/modules/attention.py)
    calls the module globals optimized_attention / optimized_attention_masked at call time, and FreeCure's plain rows
    (comfy_bridge.patches.plain_attention) call comfy_attention.optimized_attention, so both follow."""
    saved = comfy_attention.optimized_attention, comfy_attention.optimized_attention_masked
    comfy_attention.optimized_attention = comfy_attention.optimized_attention_masked = fn
    try:
        yield
    finally:
        comfy_attention.optimized_attention, comfy_attention.optimized_attention_masked = saved


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "not measured"
    return f"{value:.3f}x (target <= {target:g}x: {'met' if value <= target else 'NOT MET'})"  # 3 places: 1.052 > 1.05


# ------------------------------------------------------------------------------------------ sections
def run_pipelines(base, args, mask, full: bool = True):
    """Warm up, then time and count baseline, replay (x and kv store) and lockstep on one model. full=False skips
    the kv-record run (only section 5 uses it). Also measures the record traffic of one replay (section 6)."""
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
    r = {"base": [], "s1x": [], "s3x": [], "kv_kv": None}
    # order: baseline, replay, lockstep, kv record, APG, then baseline and replay again each further round (best of
    # args.rounds for those three: a round times them back to back, so a change of load hits all three alike)
    for rep in range(args.rounds):
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
            r["traffic"] = rep_x.get("record_traffic", {})  # the replay guider's own count of its record's traffic
            (pd_lock, fd_lock, rep_lock), r["lock_s"] = timed(lambda: stage3(n, None))
            r["lock_pd_rows"], r["lock_fd_rows"] = c_pd.take(), c_fd.take()
            if full:
                (_, r["kv_kv"]), r["s1kv_s"] = timed(lambda: stage1(n, "kv"))
                r["s1kv_rows"] = c_fd.take()
            (apg_lat, r["apg_report"]), r["apg_s"] = timed(lambda: stage4(n, pd_rx))
            r["apg_rows"] = c_fd.take()
    for key in ("base", "s1x", "s3x"):
        r[key + "_s"] = min(r[key])
    r.update(warm_s=warm, kv_x=kv_x, rep_x=rep_x, rep_lock=rep_lock)
    r["checks"] = {
        "finite": all(bool(torch.isfinite(t["samples"]).all()) for t in (base_lat, fd_lat, pd_rx, pd_lock)),
        "lock_fd_eq_stage1": bool(torch.equal(fd_lock["samples"], fd_lat["samples"])),
        "replay_x_vs_lock": float((pd_rx["samples"] - pd_lock["samples"]).abs().max()),
        "fasa_effect": float((pd_rx["samples"] - base_lat["samples"]).abs().mean()),
        "apg_ran": bool(r["apg_report"].get("ran")) and bool(torch.isfinite(apg_lat["samples"]).all()),
    }
    return r


def wall_figures(r, apg_total_s: float) -> dict:
    """The wall-time ratios of one run_pipelines result against its stock KSampler."""
    base = r["base_s"]
    return {"replay": (r["s1x_s"] + r["s3x_s"]) / base, "stage1": r["s1x_s"] / base, "stage3": r["s3x_s"] / base,
            "lockstep": (r["s1x_s"] + r["lock_s"]) / base, "with_apg": apg_total_s / base, "baseline_s": base}


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


def section_time(r, args, tag: str, attention: str):
    base = r["base_s"]

    def row(name, s, rows):
        return [name, f"{s:.1f}", f"{s / base:.2f}x", rows, f"{s / rows:.2f}" if rows else "-"]

    def runs(key):
        return " / ".join(f"{t:.1f}" for t in r[key])

    rep = r["s1x_s"] + r["s3x_s"]
    lock = r["s1x_s"] + r["lock_s"]
    per_round = " / ".join(f"{(a + b) / t:.3f}x" for t, a, b in zip(r["base"], r["s1x"], r["s3x"]))
    rows = [
        row(f"baseline: stock KSampler (best of {len(r['base'])})", base, r["base_rows"]),
        row(f"replay stage 1: FD, record attn1 inputs x (best of {len(r['s1x'])})", r["s1x_s"], r["s1x_rows"]),
        row(f"replay stage 3: PD + FASA from the x record (best of {len(r['s3x'])})", r["s3x_s"], r["s3x_rows"]),
        row("replay total (stage 1 + stage 3)", rep, r["s1x_rows"] + r["s3x_rows"]),
        row("lockstep stage 3: [PD; FD] paired", r["lock_s"], r["lock_pd_rows"] + r["lock_fd_rows"]),
        row("lockstep total (stage 1 + stage 3)", lock, r["s1x_rows"] + r["lock_pd_rows"] + r["lock_fd_rows"]),
    ]
    if r.get("kv_kv") is not None:
        rows.append(row("stage 1 recording kv instead of x (for section 5)", r["s1kv_s"], r["s1kv_rows"]))
    c = r["checks"]
    table(f"[{tag}] Wall time, SD1.5-dimension UNet (859 M params, random weights, fp32 CPU), {args.size}x{args.size} "
          f"px, {args.steps} steps, seed {SEED}, 25% box mask; ComfyUI attention (stock KSampler and FreeCure's plain "
          f"rows): {attention}",
          ["variant", "s", "vs base", "rows", "s/row"], rows,
          f"runs (s): baseline {runs('base')}, stage 1 {runs('s1x')}, stage 3 {runs('s3x')}; replay / baseline within "
          f"each round: {per_round}; warm-up {r['warm_s']:.1f} s. "
          f"Both totals use the same stage-1 run\n(record x; with record off stage 1 is a plain KSampler pass). "
          f"FASA layers use fasa.kernel (SDPA) whatever ComfyUI's attention. checks: outputs finite {c['finite']}; "
          f"lockstep FD == stage-1 FD {c['lock_fd_eq_stage1']};\nmax|PD replay - PD lockstep| "
          f"{c['replay_x_vs_lock']:.1e}; mean|PD(FASA) - baseline| {c['fasa_effect']:.3f}")
    return base, rep, lock


def section_apg(r, args, tag: str, attention: str, target: float | None):
    n, base_rows, base = args.steps, r["base_rows"], r["base_s"]
    k = r["apg_report"].get("inverted_steps")
    replay_rows = r["s1x_rows"] + r["s3x_rows"] + r["s3x_fd_rows"]
    replay_s = r["s1x_s"] + r["s3x_s"]
    total_rows, total_s = replay_rows + r["apg_rows"], replay_s + r["apg_s"]
    rows = [
        ["APG alone (inversion cfg 1 + regeneration cfg %g)" % CFG, r["apg_rows"], f"{r['apg_rows'] / n:.1f}N",
         f"{r['apg_s']:.1f}", f"{r['apg_s'] / base:.2f}x"],
        [f"replay FreeCure (stages 1 + 3), from [{tag.replace('4', '2')}]", replay_rows, f"{replay_rows / n:.1f}N",
         f"{replay_s:.1f}", f"{replay_s / base:.2f}x"],
        ["whole pipeline with APG (stages 1 + 3 + 4)", total_rows, f"{total_rows / n:.1f}N", f"{total_s:.1f}",
         f"{total_s / base:.2f}x"],
    ]
    rep = r["apg_report"]
    turn = f"turn at sigma {rep.get('sigma_turn', 0):.4g}, {rep.get('whole_steps', k)} of the {n} scheduled" + \
        (" + 1 to the turn" if rep.get("turn_step") else "")
    goal = (f"Issue target for the whole pipeline with SDPA as the baseline's attention: <= {target:g}x "
            f"({verdict(total_s / base, target)}; paper: 3.5-4x)." if target is not None else
            "No target against this attention (the issue's is against SDPA, [4b]); paper: 3.5-4x.")
    table(f"[{tag}] APG, gamma 0.5 ({turn}): {k} steps inverted then regenerated (one run, same model and size as "
          f"[2]); ComfyUI attention: {attention}",
          ["variant", "rows", "per N", "s", "vs base"], rows,
          f"baseline = stock KSampler, {base_rows} rows, {base:.1f} s. Inversion runs the template prompt at cfg 1 "
          f"(ComfyUI skips the uncond row), so APG costs 3 rows per step inverted.\n{goal} "
          f"APG ran and is finite: {r['checks']['apg_ran']}")
    return total_s


def section_fasa_layer(args) -> dict:
    """[3]: one FASA layer at SD1.5's 64² decoder shape per dtype and kernel, against the floor (plain SDPA over the
    same number of keys). Returns {dtype label: figures}."""
    n, c, heads = 64 * 64, 320, 8
    d = c // heads
    cpu = torch.device("cpu")
    mask = box_mask(64, 64).flatten(1)[0]
    sel = select_keys(mask, OMEGA, cpu)  # once, as FasaRun does per run and grid
    idx, m = sel.groups[0].index, sel.key_count()
    empty = torch.zeros_like(mask)
    reps = args.attn_repeats
    default = comfy_attention.optimized_attention
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(1, n, c, generator=g) for _ in range(5)]

    def split(t):
        return t.view(1, t.shape[1], heads, d).transpose(1, 2)

    rows, figures = [], {}
    for label, dtype in LAYER_DTYPES:
        q, k, v, k_fd, v_fd = (t.to(dtype) for t in base)
        qh, kh, vh = split(q), split(k), split(v)
        k_all = torch.cat([kh, split(k_fd.index_select(1, idx))], 2)
        v_all = torch.cat([vh, split(v_fd.index_select(1, idx))], 2)
        # a binary mask gives every chosen key the same bias (the selection's float): "split" applies
        auto = choose_kernel("auto", qh, False, one_bias=isinstance(sel.groups[0].fd_bias, float))

        def fasa(kern):
            return fasa_attention(q, k, v, k_fd, v_fd, None, OMEGA, heads, selection=sel, kernel=kern)

        k_cat = torch.cat([k, k_fd.index_select(1, idx)], 1)  # (1, N + M, C): the layout ComfyUI's attention gets
        v_cat = torch.cat([v, v_fd.index_select(1, idx)], 1)
        calls = [("floor", "floor: ComfyUI attention_pytorch (SDPA) over the N + M keys",
                  lambda: comfy_attention.attention_pytorch(q, k_cat, v_cat, heads), n + m),
                 ("sdpa_contig", "torch SDPA over the N + M keys, contiguous head-split copies",
                  lambda: F.scaled_dot_product_attention(qh, k_all, v_all), n + m),
                 ("sdpa_n", "torch SDPA over the N PD keys", lambda: F.scaled_dot_product_attention(qh, kh, vh), n),
                 ("default", f"ComfyUI default attention ({attn_name(default)})", lambda: default(q, k, v, heads), n),
                 ("sdpa", "ComfyUI attention_pytorch (SDPA)", lambda: comfy_attention.attention_pytorch(
                     q, k, v, heads), n)]
        if dtype is torch.float32:
            calls.append(("empty", "fasa_attention, empty mask (= plain attention)", lambda: fasa_attention(
                q, k, v, k_fd, v_fd, empty, OMEGA, heads), n))
        calls += [(kern, f"FASA, kernel {kern}" + (f" (= {auto})" if kern == "auto" else ""),
                   lambda kern=kern: fasa(kern), n + m) for kern in FASA_KERNELS]
        fig = {"ms": {}, "vs_floor": {}, "max_diff": {}, "auto": auto, "errors": {}, "keys": n + m}
        try:
            reference = fasa("reference").float()
        except (RuntimeError, NotImplementedError) as e:
            reference = None
            fig["errors"]["reference"] = str(e).splitlines()[0]
        runnable = {}
        for key, text, fn, keys in calls:
            try:
                out = fn()  # the warm-up call, and the output compared with the reference kernel's
            except (RuntimeError, NotImplementedError) as e:  # an SDPA this CPU's torch lacks for the dtype
                fig["errors"][key] = str(e).splitlines()[0][:120]
                continue
            runnable[key] = fn
            if key in FASA_KERNELS and reference is not None:
                fig["max_diff"][key] = float((out.float() - reference).abs().max())
        times = interleaved_medians(runnable, reps)
        for key, text, fn, keys in calls:
            if key not in times:
                rows.append([label, text, "unsupported", "-", str(keys), fig["errors"][key]])
                continue
            fig["ms"][key] = times[key] * 1e3
            floor = fig["ms"].get("floor")
            ratio = fig["ms"][key] / floor if floor else None
            fig["vs_floor"][key] = ratio
            diff = f"{fig['max_diff'][key]:.1e}" if key in fig["max_diff"] else "-"
            rows.append([label, text, f"{fig['ms'][key]:.0f}", f"{ratio:.2f}x" if ratio else "-", str(keys), diff])
        figures[label] = fig
    auto_ratio = {label: figures[label]["vs_floor"].get("auto") for label, _ in LAYER_DTYPES}
    lines = [f"  {label}: {verdict(auto_ratio[label], TARGETS['fasa_layer'])}" if label in LAYER_TARGET_DTYPES else
             f"  {label}: " + (f"{auto_ratio[label]:.2f}x (no CPU target)" if auto_ratio[label] else "not measured")
             for label, _ in LAYER_DTYPES]
    table(f"[3] One FASA attention layer at SD1.5's 64x64 decoder shape: batch 1, N = {n} tokens, {c} ch = {heads} "
          f"heads x {d}, 25% box mask = M = {m} in-mask FD keys, omega {OMEGA}; keys chosen once by select_keys, then "
          f"fasa_attention(..., selection=, kernel=) as the patch calls it; median of {reps} rounds (each round "
          f"times every call in turn) after 1 warm-up",
          ["dtype", "call", "ms", "vs floor", "keys", "max|x - reference|"], rows,
          f"floor = plain attention as a ComfyUI layer computes it (attention_pytorch: SDPA on (batch, tokens, "
          f"heads*dim) tensors viewed per head, the layout FASA's inputs arrive in) over the same N + M keys, same "
          f"dtype; the SDPA row on contiguous head-split copies shows what that layout alone costs. Issue target: the FASA layer (kernel auto, what the patch runs) "
          f"<= {TARGETS['fasa_layer']:g}x the floor on the CPU in fp32 and bf16:\n" + "\n".join(lines))
    return figures


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


def section_traffic(r, args) -> dict:
    """[6]: bytes of the record one replay (stage 3 from the x record) read and copied, per sampling step."""
    n, tr = args.steps, r["traffic"]
    compacted = r["rep_x"].get("compacted_bytes")
    out = {"read_bytes_per_step": per_step(tr, "read_bytes", n), "copied_bytes_per_step": per_step(tr, "copied_bytes", n),
           "compacted_bytes_per_step": None if compacted is None else compacted / n}
    rows = [["record served to FASA (read_bytes)", fmt_traffic(tr.get("read_bytes")),
             fmt_traffic(out["read_bytes_per_step"])],
            ["record copied to another device (copied_bytes)", fmt_traffic(tr.get("copied_bytes")),
             fmt_traffic(out["copied_bytes_per_step"])],
            ["for comparison: the compacted x record the replay holds", fmt_traffic(compacted),
             fmt_traffic(out["compacted_bytes_per_step"])]]
    missing = [name for name in COUNTERS if tr.get(name) is None]
    table(f"[6] Record traffic of one replay (stage 3 from the x record, {n} steps, euler: 1 evaluation per step), "
          f"read from the record's counters",
          ["what", "whole run", "per step"], rows,
          ("n/a: the record has no " + " / ".join(missing) + " counter (fasa/record.py). " if missing else "") +
          "The record lives in CPU RAM (offload): on a GPU, read_bytes is what crosses to the GPU; on this CPU run "
          "nothing needs copying to another device.")
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> dict:
    """Run every section, print them, and return the headline figures (bench/bench_report.py tabulates them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="sampling steps N (default 8; --quick 2)")
    ap.add_argument("--size", type=int, default=None, help="image size in px, square (default 256; --quick 128)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timing rounds of baseline / stage 1 / stage 3, best of them reported (default 3; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny size, few steps, few repeats")
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else 8)
    args.size = args.size or (128 if args.quick else 256)
    args.attn_repeats = 2 if args.quick else 9
    args.rounds = args.rounds or (2 if args.quick else 3)
    if args.size % 8:
        ap.error("--size must be a multiple of 8 (one latent pixel = 8 px)")
    t0 = time.perf_counter()
    comfy.utils.PROGRESS_BAR_ENABLED = False

    exe = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    print("FreeCure engine benchmark" + (" (--quick: smoke sizes, not figures to publish)" if args.quick else ""))
    print(f"command: {exe} {shlex.join(sys.argv)}")
    print(f"machine: {machine_line()}")

    base, build_s = timed(lambda: build_sd15(seed=0))
    probe_sites(base.model, torch.device("cpu"))
    sites, probe_s = timed(lambda: probe_sites(base.model, torch.device("cpu")))
    ref = resolve_layers("reference", sites, "sd1")
    print(f"model:   ComfyUI SD15 unet_config, random init (init_weights_), built in {build_s:.0f} s; "
          f"{len(sites)} attn1 sites, FASA 'reference' layers: {', '.join(s.label() for s in ref)}; "
          f"one site probe (1-row forward, 16x24 latent, run by each FreeCure stage) {probe_s:.2f} s")
    choices = attention_choices()
    names = {key: attn_name(fn) for key, fn in choices}
    print("attention: the pipelines run once per ComfyUI attention: " + ", ".join(
        f"{names[key]}{' (ComfyUI default here)' if key == 'default' else ''}" for key, _ in choices) +
        ("" if len(choices) > 1 else " (the default already is SDPA)"))
    mask = box_mask(args.size, args.size)
    watch = CpuWatch()

    runs = {}
    for i, (key, fn) in enumerate(choices):
        with comfy_attention_set_to(fn):
            runs[key] = run_pipelines(base, args, mask, full=i == 0)
    runs.setdefault("sdpa", runs["default"])
    names.setdefault("sdpa", names["default"])
    r = runs["default"]
    section_rows(r, args.steps)
    tags = {"default": "2a", "sdpa": "2b"} if len(choices) > 1 else {"default": "2"}
    for key in tags:
        section_time(runs[key], args, tags[key], names[key])
    layer = section_fasa_layer(args)
    walls = {}
    for key in tags:
        total = section_apg(runs[key], args, tags[key].replace("2", "4"), names[key],
                            TARGETS["with_apg"] if key == "sdpa" or len(choices) == 1 else None)
        walls[key] = wall_figures(runs[key], total)
    walls.setdefault("sdpa", walls["default"])
    sd15, sdxl = section_store(r, mask, args)
    traffic = section_traffic(r, args)

    n = args.steps
    w, ws = walls["default"], walls["sdpa"]
    fp32 = layer["fp32"]
    auto = {label: layer[label]["vs_floor"].get("auto") for label, _ in LAYER_DTYPES}
    targets = {"replay_sdpa": {"target": TARGETS["replay"], "value": ws["replay"]},
               "with_apg_sdpa": {"target": TARGETS["with_apg"], "value": ws["with_apg"]}}
    targets.update({f"fasa_layer_{label}": {"target": TARGETS["fasa_layer"], "value": auto[label]}
                    for label in LAYER_TARGET_DTYPES})
    for t in targets.values():
        t["met"] = None if t["value"] is None else t["value"] <= t["target"]
    total = time.perf_counter() - t0
    print(f"\ntotal runtime {total:.0f} s; {watch.report()}")
    print("\nSummary (README):")
    print(f"- UNet row-evaluations per image with CFG, N steps: baseline 2N, FreeCure replay 4N, lockstep 6N, "
          f"reference code 8N (counted at N={n}: {r['base_rows']} / {r['s1x_rows'] + r['s3x_rows']} / "
          f"{r['s1x_rows'] + r['lock_pd_rows'] + r['lock_fd_rows']}; 8N analytical).")
    for key in tags:
        ww, rr = walls[key], runs[key]
        print(f"- Wall time vs stock KSampler on {names[key]} attention, SD1.5-size UNet (random weights, fp32, "
              f"{torch.get_num_threads()}-thread CPU, {args.size}², {n} steps): replay {ww['replay']:.2f}x (stage 1 "
              f"{ww['stage1']:.2f}x + stage 3 {ww['stage3']:.2f}x), lockstep {ww['lockstep']:.2f}x; with APG (gamma "
              f"0.5) {ww['with_apg']:.2f}x ({(rr['s1x_rows'] + rr['s3x_rows'] + rr['apg_rows']) / n:.1f}N rows); "
              f"baseline {ww['baseline_s']:.1f} s.")
    print(f"- Issue 19 targets on this CPU (ComfyUI's {names['sdpa']} as the stock KSampler's attention): replay "
          f"{verdict(ws['replay'], TARGETS['replay'])}; with APG {verdict(ws['with_apg'], TARGETS['with_apg'])}; "
          f"FASA layer vs SDPA over the same keys " +
          ", ".join(f"{label} {verdict(auto[label], TARGETS['fasa_layer'])}" for label in LAYER_TARGET_DTYPES) + ".")
    print(f"- One FASA layer at SD1.5 64² (4096 tokens + {fp32['keys'] - 4096} in-mask FD keys, 8x40 heads): "
          + "; ".join(f"{label} kernel auto ({layer[label]['auto']}) "
                      + (f"{layer[label]['ms']['auto']:.0f} ms = {auto[label]:.2f}x the floor"
                         if auto[label] else "not measured") for label, _ in LAYER_DTYPES)
          + f"; fp32 ComfyUI default ({names['default']}) {fp32['ms'].get('default', float('nan')):.0f} ms over "
            f"4096 keys.")
    print(f"- FD record, fp16, 30 steps (analytical): SD1.5 512² naive K/V {fmt_bytes(sd15[0])} -> attn1 inputs "
          f"{fmt_bytes(sd15[1])} -> 25%-mask compacted {fmt_bytes(sd15[3])}; SDXL 1024² {fmt_bytes(sdxl[0])} -> "
          f"{fmt_bytes(sdxl[1])} -> {fmt_bytes(sdxl[3])}.")
    print(f"- Replay record traffic per step ({args.size}², x record in CPU RAM): served to FASA "
          f"{fmt_traffic(traffic['read_bytes_per_step'])}, copied to another device "
          f"{fmt_traffic(traffic['copied_bytes_per_step'])}.")

    def rows_of(rr):
        return {"baseline": rr["base_rows"], "replay": rr["s1x_rows"] + rr["s3x_rows"] + rr["s3x_fd_rows"],
                "lockstep": rr["s1x_rows"] + rr["lock_pd_rows"] + rr["lock_fd_rows"], "reference": 8 * n,
                "apg": rr["apg_rows"], "with_apg": rr["s1x_rows"] + rr["s3x_rows"] + rr["s3x_fd_rows"] + rr["apg_rows"]}

    return {
        "steps": n, "size": args.size, "cfg": CFG, "sampler": SAMPLER, "threads": torch.get_num_threads(),
        "quick": bool(args.quick),
        "rows": rows_of(r),
        "wall": w, "wall_sdpa": ws, "attention_names": {"default": names["default"], "sdpa": names["sdpa"]},
        "replay_vs_lockstep_max_diff": r["checks"]["replay_x_vs_lock"],
        "attention_ms": {"fasa": fp32["ms"].get("auto"), "empty": fp32["ms"].get("empty"),
                         "default": fp32["ms"].get("default"), "sdpa": fp32["ms"].get("sdpa"),
                         "default_name": names["default"]},
        "fasa_layer": layer, "targets": targets, "record_traffic": traffic,
        "store": {"sd15": [fmt_bytes(b) for b in sd15], "sdxl": [fmt_bytes(b) for b in sdxl]},
        "cpu_contention": watch.report(), "total_s": total,
    }


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs nodes
        main()
