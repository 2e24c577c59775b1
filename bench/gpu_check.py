"""FreeCure's GPU check (issue 19 item 5), run by bench/gpu_check.sh: checks and figures that need a GPU, in one run.

  1. The FASA kernel parity tests on the device (FREECURE_TEST_DEVICE=cuda pytest tests/core/test_fasa_kernel.py).
  2. Invariants in fp16 and bf16 on the tiny test models (tests/support/cases.py, built on the device): an empty
     mask gives PD identical to a plain KSampler run; the foundation half of lockstep equals an FD-only run; replay
     equals lockstep within a dtype-appropriate tolerance.
  3. No device-to-host synchronisation inside FreeCure's FASA patches: one replay and one lockstep run with
     torch.cuda.set_sync_debug_mode("error") switched on inside the SD attn1 patch calls only (and the same for the
     FLUX attention override), after a warm-up run.
  4. Timings at real sizes with random weights: an SDXL-size UNet (ComfyUI's SDXL unet_config) at 1024², 20 steps,
     and a FLUX.1-size transformer (hidden 3072, 24 heads, 2 double + 4 single blocks) at 1024², in fp16 and bf16:
     stock KSampler, replay (stage 1 + stage 3) and lockstep, wall seconds, ratios, peak memory and record traffic.
  5. A summary block to paste into the README, naming the card.

`--device cpu --smoke` runs the same code on the CPU at tiny sizes (no sync check), so the script can be tried
where there is no GPU. A benchmark and a check, not a test.

Usage: python bench/gpu_check.py [--device cuda|cpu] [--smoke] [--skip pytest,invariants,sync,sdxl,flux]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import os
import pathlib
import platform
import subprocess
import sys
import time
import traceback
import types
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

from record_traffic import fmt_traffic, per_step  # noqa: E402  (bench/record_traffic.py)

SECTIONS = ("pytest", "invariants", "sync", "sdxl", "flux")
DTYPES = (("fp16", torch.float16), ("bf16", torch.bfloat16))
# the invariants run the bridge tests' settings (tests/support/cases.py: Case.ksampler's defaults)
INV_SEED, INV_STEPS, INV_CFG, INV_BOX, INV_OMEGA = 3, 4, 5.0, (2, 3, 10, 15), 1.0
# replay vs lockstep: max |PD replay - PD lockstep| / max |PD lockstep| allowed (the FD keys of an x record are
# recomputed from the compacted inputs, a GEMM of another shape: a few units in the dtype's last place per key)
REPLAY_TOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-4}
SEED = 42

# ComfyUI's model_detection SDXL unet_config (what a real SDXL base checkpoint is detected as)
SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
SDXL_POOLED = 1280
# FLUX.1's dimensions with fewer blocks (FLUX.1 has 19 double + 38 single; 'reference' FASA = the single blocks)
FLUX_DIMS = {"hidden_size": 3072, "num_heads": 24, "vec_in_dim": 768, "context_in_dim": 4096, "depth": 2,
             "depth_single_blocks": 4}
# sizes per mode: latent side (px / 8), steps, and the smoke run's smaller models
REAL = {"sdxl_latent": 128, "sdxl_steps": 20, "flux_latent": 128, "flux_steps": 8, "flux_text": 512}
SMOKE = {"sdxl_latent": 16, "sdxl_steps": 2, "flux_latent": 16, "flux_steps": 2, "flux_text": 32,
         "sdxl_unet": {"model_channels": 64}, "flux_dims": {"hidden_size": 256, "num_heads": 2, "depth": 1,
                                                            "depth_single_blocks": 2}}


# ------------------------------------------------------------------------------------------ helpers
def say(text: str = "") -> None:
    print(text, flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    """(fn(), seconds, peak bytes allocated on the device during the call or None), synchronised on both ends."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return out, seconds, peak


def gib(n) -> str:
    return "-" if n is None else f"{n / 2 ** 30:.1f} GiB"


def build_model(config_cls, unet_config: dict, *, seed: int, gain, dtype, device):
    """A ModelPatcher around `config_cls`'s model built on `device` in `dtype` with seeded random weights
    (tests/support/tiny_models.init_weights_), loaded there by ComfyUI and offloaded to the CPU."""
    import comfy.model_patcher
    from support.tiny_models import init_weights_

    cfg = config_cls(dict(unet_config, dtype=dtype))
    cfg.set_inference_dtype(dtype, None)
    model = cfg.get_model({}, device=device)
    init_weights_(model.diffusion_model, seed=seed, gain=gain)
    model.diffusion_model.to(dtype).eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=torch.device("cpu"))


def release_models(device) -> None:
    """Unload every model ComfyUI holds and return the memory (between models and dtypes)."""
    import comfy.model_management
    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def box_mask(h: int, w: int, batch: int = 1) -> torch.Tensor:
    """(batch, h, w) pixel mask, 1 on a centred box covering a quarter of the image."""
    m = torch.zeros(batch, h, w)
    m[:, h // 4: h // 4 + h // 2, w // 4: w // 4 + w // 2] = 1
    return m


def relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (inf when either is not finite)."""
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12))


# ------------------------------------------------------------------------------------------ 1. parity tests
def run_kernel_tests(device, results: dict) -> None:
    say("\n[1] FASA kernel parity tests on the device")
    env = dict(os.environ, FREECURE_TEST_DEVICE=device.type)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_fasa_kernel.py"]
    say(f"$ FREECURE_TEST_DEVICE={device.type} python {' '.join(cmd[1:])}")
    try:
        import pytest  # noqa: F401
    except ImportError:
        results["pytest"] = "skipped: pytest is not installed for this python"
        say(results["pytest"])
        return
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        results["pytest"] = "FAILED: timed out after 240 s"
        say(results["pytest"])
        return
    tail = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    say("\n".join(tail[-15:]))
    if proc.returncode:
        say(proc.stderr.strip()[-2000:])
    results["pytest"] = ("passed: " if proc.returncode == 0 else f"FAILED (exit {proc.returncode}): ") + \
        (tail[-1] if tail else "no output")
    say("tests/core/test_attention.py: not run on the device (it builds its tensors on the CPU; make test runs it)")


# ------------------------------------------------------------------------------------------ 2. invariants
def tiny_case(family: str, dtype, device):
    """The bridge tests' Case (tests/support/cases.py) on a tiny model built on `device` in `dtype`."""
    from support import tiny_models
    from support.cases import Case
    if family == "sd1":
        model = build_model(tiny_models.tiny_sd15_config_class(), tiny_models.TINY_SD15_UNET, seed=0, gain=None,
                            dtype=dtype, device=device)
    else:
        model = build_model(tiny_models.tiny_sdxl_config_class(), tiny_models.TINY_SDXL_UNET, seed=0, gain=0.5,
                            dtype=dtype, device=device)
    return Case(model, family, 16, 24)


def freecure(case, fasa, kv=None, pos=None):
    from freecure_core.comfy_bridge import sampling as S
    pos = case.pos if pos is None else pos
    pd, fd, report = S.sample_freecure(case.model, case.model, pos, case.neg, case.fd_pos, case.fd_neg,
                                       case.latent, INV_SEED, INV_STEPS, INV_CFG, "euler", "normal", 1.0, fasa, kv)
    return pd["samples"], fd["samples"], report


def foundation(case, kind: str):
    from freecure_core.comfy_bridge import sampling as S
    lat, kv = S.sample_foundation(case.model, case.fd_pos, case.fd_neg, case.latent, INV_SEED, INV_STEPS, INV_CFG,
                                  "euler", "normal", 1.0, "cond", "reference", kind)
    return lat["samples"], kv


def check_invariants(device, results: dict) -> None:
    import nodes as comfy_nodes
    from freecure_core.fasa.config import FASAConfig
    say("\n[2] Invariants on the tiny test models (tests/support/cases.py), built on the device: seed "
        f"{INV_SEED}, {INV_STEPS} euler steps, cfg {INV_CFG}, FASA box {INV_BOX} (latent cells), omega {INV_OMEGA}")
    rows = []
    for family in ("sd1", "sdxl"):
        for label, dtype in DTYPES:
            try:
                case = tiny_case(family, dtype, device)
                plain, fd_plain = case.ksampler(case.pos, case.neg), case.ksampler(case.fd_pos, case.fd_neg)
                pd_empty, fd_empty, _ = freecure(case, FASAConfig(mask=case.mask()))
                fasa = FASAConfig(mask=case.mask(INV_BOX), omega=INV_OMEGA)
                pd_lock, fd_lock, lock_report = freecure(case, fasa)
                fd_x, kv_x = foundation(case, "x")
                pd_rx, _, _ = freecure(case, fasa, kv_x)
                fd_kv, kv_kv = foundation(case, "kv")
                pd_rkv, _, _ = freecure(case, fasa, kv_kv)
                pd_replay_empty, _, _ = freecure(case, FASAConfig(mask=case.mask()), kv_x)
                # two PD prompts (ConditioningCombine) read FD's one entry twice per evaluation and site
                two = comfy_nodes.ConditioningCombine().combine(case.pos, case.neg)[0]
                pd_two_lock, _, _ = freecure(case, fasa, pos=two)
                pd_two_rx, _, _ = freecure(case, fasa, kv_x, pos=two)
            except Exception as e:  # noqa: BLE001  (report it and go on with the other checks)
                rows.append((family, label, False, False, f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:160]}"))
                traceback.print_exc()
                continue
            finally:
                case = None
                release_models(device)
            empty_ok = bool(torch.equal(pd_empty, plain) and torch.equal(pd_replay_empty, plain))
            fd_ok = all(bool(torch.equal(t, fd_plain)) for t in (fd_empty, fd_lock, fd_x, fd_kv))
            tol = REPLAY_TOL[dtype]
            dx, dkv = relative_diff(pd_rx, pd_lock), relative_diff(pd_rkv, pd_lock)
            dtwo = relative_diff(pd_two_rx, pd_two_lock)
            acted = lock_report.get("fasa_calls", 0) > 0 and not torch.equal(pd_lock, plain)
            replay_ok = dx <= tol and dkv <= tol and dtwo <= tol and acted
            rows.append((family, label, empty_ok, fd_ok,
                         f"{'ok' if replay_ok else 'FAILED'}: x record {dx:.1e}, kv record {dkv:.1e}, two PD prompts "
                         f"on one FD entry {dtwo:.1e} (tolerance "
                         f"{tol:g}; FASA acted: {acted}, {lock_report.get('fasa_calls', 0)} calls)"))
    say("model  dtype  (i) empty mask PD == KSampler  (ii) lockstep FD == FD-only  (iii) max|PD replay - PD lockstep|"
        " / max|PD lockstep|")
    for family, label, empty_ok, fd_ok, text in rows:
        say(f"{family:<6} {label:<6} {'yes' if empty_ok else 'NO':<30} {'yes' if fd_ok else 'NO':<25} {text}")
    say("(i): lockstep and replay with an empty mask, torch.equal; (ii): FD half of lockstep (empty and box mask) and "
        "stage-1 FD (x and kv record) vs KSampler on fd_positive, torch.equal")
    ok = all(r[2] and r[3] and r[4].startswith("ok") for r in rows)
    results["invariants"] = ("passed" if ok else "FAILED") + f" ({len(rows)} model x dtype cases)"
    results["invariant_rows"] = rows


# ------------------------------------------------------------------------------------------ 3. syncs
class SyncLog:
    """Synchronising ops seen inside the patch calls: (run label, first evaluation of the run?, where, message)."""

    def __init__(self):
        self.seen: list[tuple] = []


def _guarded(fn, mode: str, log: SyncLog, label: str, eval_index):
    """fn with torch.cuda.set_sync_debug_mode(mode) on for the duration of each call from the run's second model
    evaluation on (the first works out the run's key selections and row indices from the CPU mask, once per run and
    token grid, by design); "warn" mode's warnings are collected in `log` with the call's evaluation index."""
    def guarded(*args, **kwargs):
        if eval_index() < 1:
            return fn(*args, **kwargs)
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
                for w in caught:
                    if "synchroniz" in str(w.message):
                        log.seen.append((label, eval_index(), f"{w.filename}:{w.lineno}", str(w.message)))
    return guarded


@contextlib.contextmanager
def sync_debug_in_patches(mode: str, log: SyncLog, label: str):
    """Sync debug mode `mode` inside FreeCure's SD attn1 FASA patches (FasaRun.consume_patch's functions) and FLUX's
    consuming attention override (FluxRun._override(role="consume")), for the block's duration."""
    from freecure_core.comfy_bridge.flux import FluxRun
    from freecure_core.comfy_bridge.patches import FasaRun
    consume_patch, override = FasaRun.consume_patch, FluxRun._override

    def guarded_consume_patch(self, site):
        return _guarded(consume_patch(self, site), mode, log, label, lambda: self.eval_index)

    def guarded_override(self, role, previous):
        fn = override(self, role, previous)
        if role != "consume":
            return fn
        out = _guarded(fn, mode, log, label, lambda: self.eval_index)
        out.freecure_run = fn.freecure_run  # the block hooks recognise the run's override by it
        return out

    FasaRun.consume_patch, FluxRun._override = guarded_consume_patch, guarded_override
    try:
        yield
    finally:
        FasaRun.consume_patch, FluxRun._override = consume_patch, override


def _where(exc: BaseException) -> str:
    """The op that raised (the innermost Python frame) and the innermost FreeCure frame above it."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1]
    mine = [f for f in frames if "freecure_core" in f.filename]
    text = f"{last.filename}:{last.lineno} in {last.name}: {last.line}"
    if mine and mine[-1] is not last:
        text += f" (called from {mine[-1].filename}:{mine[-1].lineno}: {mine[-1].line})"
    return text


def check_syncs(device, results: dict) -> None:
    say("\n[3] Device-to-host synchronisations inside FreeCure's FASA patches (torch.cuda.set_sync_debug_mode)")
    if device.type != "cuda":
        results["sync"] = "skipped: no CUDA"
        say(results["sync"])
        return
    from freecure_core.fasa.config import FASAConfig
    from support import tiny_flux
    import comfy.supported_models

    outcomes = []
    sd = tiny_case("sdxl", torch.float16, device)
    flux_model = build_model(comfy.supported_models.Flux, tiny_flux.unet_config(True), seed=0, gain=0.5,
                             dtype=torch.bfloat16, device=device)
    # the tiny FLUX of tests/bridge/test_flux_fasa.py with what freecure()/foundation() read of a Case
    flux = types.SimpleNamespace(model=flux_model, h=32, w=32, latent={"samples": torch.zeros(1, 16, 32, 32)},
                                 pos=tiny_flux.flux_conditioning(11), neg=tiny_flux.flux_conditioning(12),
                                 fd_pos=tiny_flux.flux_conditioning(13), fd_neg=tiny_flux.flux_conditioning(12))
    for name, case, fasa in (("SDXL-layout UNet fp16", sd, FASAConfig(mask=case_mask(sd), omega=INV_OMEGA)),
                             ("FLUX bf16", flux, FASAConfig(mask=case_mask(flux), omega=INV_OMEGA))):
        runs = {"replay": lambda c=case, f=fasa: freecure(c, f, foundation(c, "auto")[1]),
                "lockstep": lambda c=case, f=fasa: freecure(c, f)}
        for mode_name, run in runs.items():
            run()  # warm-up, unguarded
            label = f"{name}, {mode_name}"
            try:
                with sync_debug_in_patches("error", SyncLog(), label):
                    run()
                outcomes.append((label, "OK: no synchronising op inside the FASA patch calls"))
            except RuntimeError as e:
                if "synchroniz" not in str(e):
                    raise
                log = SyncLog()
                with sync_debug_in_patches("warn", log, label):
                    run()
                sites: dict[str, list] = {}
                for _, ev, where, _ in log.seen:
                    sites.setdefault(where, []).append(ev)
                detail = "; ".join(f"{where} x{len(evs)} (evaluations {sorted(set(evs))[:6]})"
                                   for where, evs in sites.items())
                outcomes.append((label, f"FAILED at {_where(e)}\n      every sync in a rerun in 'warn' mode: "
                                        f"{detail or 'none seen'}"))
    del sd, flux
    release_models(device)
    for label, text in outcomes:
        say(f"  {label}: {text}")
    results["sync"] = "OK" if all(t.startswith("OK") for _, t in outcomes) else "FAILED"
    results["sync_rows"] = outcomes


def case_mask(case) -> torch.Tensor:
    """A box covering the centre quarter of the case's image, in pixels."""
    return box_mask(case.h * 8, case.w * 8)


# ------------------------------------------------------------------------------------------ 4. timings
def time_pipelines(model, pos, neg, fd_pos, latent, mask, steps, cfg, sampler, scheduler, device) -> dict:
    """Warm-up (1 step of every path), then stock KSampler, stage 1 recording, stage 3 replay, stage 1 without a
    record (what lockstep needs) and stage 3 lockstep, each timed with the device synchronised, with its peak
    memory."""
    import nodes as comfy_nodes
    from freecure_core.comfy_bridge import sampling as S
    from freecure_core.fasa.config import FASAConfig
    fasa = FASAConfig(mask=mask)

    def stock(n):
        return comfy_nodes.common_ksampler(model, SEED, n, cfg, sampler, scheduler, pos, neg, latent)[0]

    def stage1(n, record="cond"):
        return S.sample_foundation(model, fd_pos, neg, latent, SEED, n, cfg, sampler, scheduler, 1.0, record=record,
                                   layers="reference")

    def stage3(n, kv):
        return S.sample_freecure(model, model, pos, neg, fd_pos, neg, latent, SEED, n, cfg, sampler, scheduler, 1.0,
                                 fasa, kv=kv)

    t = time.perf_counter()
    stock(1)
    stage3(1, stage1(1)[1])
    stage3(1, None)
    sync(device)
    r = {"warm_s": time.perf_counter() - t, "steps": steps}
    base, r["stock_s"], r["stock_mem"] = timed(lambda: stock(steps), device)
    (fd, kv), r["s1_s"], r["s1_mem"] = timed(lambda: stage1(steps), device)
    (pd_r, _, rep_r), r["s3_s"], r["s3_mem"] = timed(lambda: stage3(steps, kv), device)
    _, r["s1_off_s"], r["s1_off_mem"] = timed(lambda: stage1(steps, "off"), device)
    (pd_l, fd_l, rep_l), r["lock_s"], r["lock_mem"] = timed(lambda: stage3(steps, None), device)
    r.update(traffic=rep_r.get("record_traffic", {}), record_bytes=kv.nbytes(), compacted_bytes=rep_r.get("compacted_bytes"),
             evals=len(kv.eval_sigmas), fasa_calls=(rep_r.get("fasa_calls"), rep_l.get("fasa_calls")),
             finite=all(bool(torch.isfinite(x["samples"]).all()) for x in (base, fd, pd_r, pd_l)),
             replay_vs_lock=relative_diff(pd_r["samples"], pd_l["samples"]),
             fd_equal=bool(torch.equal(fd_l["samples"], fd["samples"])))
    return r


def report_timings(name: str, label: str, r: dict, weights: int, results: dict) -> None:
    base, steps = r["stock_s"], r["steps"]
    replay, lock = r["s1_s"] + r["s3_s"], r["s1_off_s"] + r["lock_s"]
    replay_mem = max(filter(None, (r["s1_mem"], r["s3_mem"])), default=None)
    lock_mem = max(filter(None, (r["s1_off_mem"], r["lock_mem"])), default=None)
    rows = [("stock KSampler", base, r["stock_mem"]),
            ("replay stage 1 (FD, recording)", r["s1_s"], r["s1_mem"]),
            ("replay stage 3 (PD + FASA from the record)", r["s3_s"], r["s3_mem"]),
            ("replay total (stage 1 + 3)", replay, replay_mem),
            ("lockstep stage 1 (FD, record off)", r["s1_off_s"], r["s1_off_mem"]),
            ("lockstep stage 3 ([PD; FD])", r["lock_s"], r["lock_mem"]),
            ("lockstep total (stage 1 + 3)", lock, lock_mem)]
    say(f"\n  {name}, {label}: {steps} steps ({r['evals']} evaluations), warm-up {r['warm_s']:.1f} s, weights "
        f"{gib(weights)}")
    say(f"  {'variant':<44}{'s':>8}{'vs stock':>10}{'peak memory':>14}")
    for text, s, mem in rows:
        say(f"  {text:<44}{s:>8.2f}{s / base:>9.2f}x{gib(mem):>14}")
    tr = r["traffic"]
    say(f"  record: stage 1 stores {fmt_traffic(r['record_bytes'])} ({fmt_traffic(r['record_bytes'] / steps)} per "
        f"step copied out to CPU RAM), replay holds {fmt_traffic(r['compacted_bytes'])} compacted "
        f"({fmt_traffic((r['compacted_bytes'] or 0) / steps)} per step); counters per step: read_bytes "
        f"{fmt_traffic(per_step(tr, 'read_bytes', steps))}, copied_bytes {fmt_traffic(per_step(tr, 'copied_bytes', steps))}")
    say(f"  checks: outputs finite {r['finite']}; lockstep FD == stage-1 FD {r['fd_equal']}; max|PD replay - PD "
        f"lockstep| / max|PD lockstep| {r['replay_vs_lock']:.1e}; FASA calls replay/lockstep {r['fasa_calls']}")
    results.setdefault("timings", []).append({
        "model": name, "dtype": label, "steps": steps, "stock_s": base, "replay": replay / base, "lockstep": lock / base,
        "replay_s": replay, "lockstep_s": lock, "mem": (r["stock_mem"], replay_mem, lock_mem),
        "record_per_step": r["record_bytes"] / steps, "compacted_per_step": (r["compacted_bytes"] or 0) / steps,
        "read_per_step": per_step(tr, "read_bytes", steps), "copied_per_step": per_step(tr, "copied_bytes", steps)})


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.model.diffusion_model.parameters())


def time_sdxl(device, sizes: dict, results: dict, smoke: bool) -> None:
    import comfy.supported_models
    side, steps = sizes["sdxl_latent"], sizes["sdxl_steps"]
    unet = dict(SDXL_UNET, **(SMOKE["sdxl_unet"] if smoke else {}))
    name = f"SDXL-size UNet{' (smoke: ' + str(unet['model_channels']) + ' channels)' if smoke else ''}, " \
           f"{side * 8}² px, euler, CFG 6, 25% box mask"
    say(f"\n[4a] {name}: random weights (init_weights_, gain 0.5), ComfyUI's SDXL unet_config")
    px = side * 8
    g = torch.Generator().manual_seed(0)

    def cond():
        extra = {"pooled_output": torch.randn(1, SDXL_POOLED, generator=g), "width": px, "height": px, "crop_w": 0,
                 "crop_h": 0, "target_width": px, "target_height": px}
        return [[torch.randn(1, 77, unet["context_dim"], generator=g), extra]]

    pos, neg, fd_pos = cond(), cond(), cond()
    time_per_dtype("SDXL-size UNet", "SDXL", comfy.supported_models.SDXL, unet, (pos, neg, fd_pos), 4, side, steps,
                   (6.0, "euler", "normal"), device, results, smoke)


def time_flux(device, sizes: dict, results: dict, smoke: bool) -> None:
    import comfy.supported_models
    from support import tiny_flux
    side, steps, text = sizes["flux_latent"], sizes["flux_steps"], sizes["flux_text"]
    dims = dict(FLUX_DIMS, **(SMOKE["flux_dims"] if smoke else {}))
    config = dict(tiny_flux.unet_config(True), **dims)
    say(f"\n[4b] FLUX-size transformer: hidden {dims['hidden_size']}, {dims['num_heads']} heads, {dims['depth']} double"
        f" + {dims['depth_single_blocks']} single blocks (FLUX.1: 19 + 38), random weights, {side * 8}² px, "
        f"{text} text tokens, euler/simple, cfg 1 (guidance 3.5), 25% box mask; FASA on the single blocks ('reference')")
    g = torch.Generator().manual_seed(0)

    def cond():
        return [[torch.randn(1, text, dims["context_in_dim"], generator=g),
                 {"pooled_output": torch.randn(1, dims["vec_in_dim"], generator=g), "guidance": 3.5}]]

    pos, neg, fd_pos = cond(), cond(), cond()
    time_per_dtype("FLUX-size", "FLUX", comfy.supported_models.Flux, config, (pos, neg, fd_pos), 16, side, steps,
                   (1.0, "euler", "simple"), device, results, smoke)


def time_per_dtype(title: str, tag: str, model_class, config: dict, conds: tuple, channels: int, side: int, steps: int,
                   sampling: tuple, device, results: dict, smoke: bool) -> None:
    """For each dtype: build the random-weight model, time_pipelines at a (1, channels, side, side) latent with a box
    mask, report the timings (an error is reported and recorded, and the next dtype runs), free the model."""
    px = side * 8
    cfg, sampler, scheduler = sampling
    for label, dtype in DTYPES:
        try:
            model, build_s, _ = timed(lambda: build_model(model_class, config, seed=0, gain=0.5, dtype=dtype,
                                                          device=device), device)
            r = time_pipelines(model, *conds, {"samples": torch.zeros(1, channels, side, side)}, box_mask(px, px),
                               steps, cfg, sampler, scheduler, device)
            report_timings(title + (" (smoke)" if smoke else ""), label, r, weight_bytes(model), results)
            say(f"  (model built in {build_s:.1f} s)")
        except Exception as e:  # noqa: BLE001
            say(f"  {label}: ERROR {type(e).__name__}: {e}")
            traceback.print_exc()
            results.setdefault("errors", []).append(f"{tag} {label}: {type(e).__name__}: {e}")
        model = None
        release_models(device)


# ------------------------------------------------------------------------------------------ 5. summary
def card_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores), no GPU"


def summary(device, results: dict, smoke: bool, total_s: float) -> bool:
    import comfy.ldm.modules.attention as comfy_attention
    ok = not results.get("errors") and all(
        not str(results.get(k, "")).startswith("FAILED") for k in ("pytest", "invariants", "sync"))
    say("\n" + "=" * 100)
    say("FreeCure GPU check: summary" + (" -- SMOKE RUN, NOT FIGURES TO PUBLISH" if smoke else " (for the README)"))
    say("=" * 100)
    cuda = torch.version.cuda or "none"
    say(f"Card: {card_name(device)}; torch {torch.__version__}, CUDA {cuda}; ComfyUI attention "
        f"{comfy_attention.optimized_attention.__name__}; python {platform.python_version()}; {time.strftime('%Y-%m-%d')}"
        f"; this check ran {total_s:.0f} s.")
    say(f"- FASA kernel parity tests on the device: {results.get('pytest', 'not run')}")
    say(f"- invariants fp16/bf16 (empty mask PD == KSampler; lockstep FD == FD-only; replay ~ lockstep): "
        f"{results.get('invariants', 'not run')}")
    say(f"- device-to-host syncs inside the FASA patches: {results.get('sync', 'not run')}")
    timings = results.get("timings", [])
    if timings:
        say("\n| model (random weights) | dtype | steps | stock KSampler | replay (stage 1 + 3) | lockstep (stage 1 + 3) "
            "| peak memory stock / replay / lockstep | record per step: out to CPU / replayed in (read_bytes) |")
        say("|---|---|---|---|---|---|---|---|")
        for t in timings:
            mem = " / ".join(gib(m) for m in t["mem"])
            say(f"| {t['model']} | {t['dtype']} | {t['steps']} | {t['stock_s']:.2f} s | {t['replay_s']:.2f} s "
                f"(**{t['replay']:.2f}×**) | {t['lockstep_s']:.2f} s ({t['lockstep']:.2f}×) | {mem} | "
                f"{fmt_traffic(t['record_per_step'])} / {fmt_traffic(t['compacted_per_step'])} "
                f"({fmt_traffic(t['read_per_step'])}) |")
    for e in results.get("errors", []):
        say(f"- ERROR: {e}")
    say(f"\nResult: {'all checks passed' if ok else 'SOME CHECKS FAILED (see above)'}")
    return ok


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: a check that the script runs, not figures")
    ap.add_argument("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    args = ap.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(SECTIONS):
        ap.error(f"unknown sections {sorted(skip - set(SECTIONS))}; use {SECTIONS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("torch sees no CUDA device here; use --device cpu --smoke for a CPU smoke run")
    t0 = time.perf_counter()
    from support.comfy_env import comfy_root, import_comfy
    import_comfy(cpu=args.device == "cpu")  # without --cpu ComfyUI takes the GPU
    sys.path.insert(1, str(ROOT))  # for freecure_core, after ComfyUI's root (its `nodes` must win over nodes/)
    import logging
    logging.getLogger().setLevel(logging.ERROR)
    import comfy.model_management
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    device = comfy.model_management.get_torch_device()
    if device.type != args.device:
        ap.error(f"ComfyUI chose {device}, not {args.device}")
    say(f"FreeCure GPU check{' (--smoke)' if args.smoke else ''}: {sys.executable} {' '.join(sys.argv[1:])}")
    say(f"device: {card_name(device)}; torch {torch.__version__}; ComfyUI at {comfy_root()}")
    sizes = SMOKE if args.smoke else REAL
    results: dict = {}
    with torch.inference_mode():
        if "pytest" not in skip:
            run_kernel_tests(device, results)
        if "invariants" not in skip:
            check_invariants(device, results)
        if "sync" not in skip:
            check_syncs(device, results)
        if "sdxl" not in skip:
            time_sdxl(device, sizes, results, args.smoke)
        if "flux" not in skip:
            time_flux(device, sizes, results, args.smoke)
    ok = summary(device, results, args.smoke, time.perf_counter() - t0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
