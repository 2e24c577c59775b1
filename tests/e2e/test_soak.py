"""Soak: many consecutive FreeCure prompts on one headless ComfyUI server (issue 7, item 1).

A node pack runs inside long-lived servers, so 200 FreeCure prompts are queued at once on the e2e server (tiny SD1.5
checkpoint; every prompt a new seed, so each samples anew): replay (record/replay: FreeCureFoundationSampler's
FREECURE_KV into FreeCureSampler; store auto/x/kv, record cond or cond+uncond with uncond_blend) and lockstep (the
FreeCureSampler alone, and FreeCureGuider with SamplerCustomAdvanced), over four image sizes (32..64 px), 2-4 steps,
eight samplers, five schedulers and moving attribute masks.

Every fifth prompt carries the test-only probe node (tests/e2e_probe_pack, ``FreeCureE2EProbe``), run after that
prompt's images: it collects garbage and reports the server process's resident memory and the FreeCure objects alive.

Asserted:
* every prompt succeeds and saves one PNG of its size; the server stays up;
* the K/V store is bounded: a probe sees exactly the stores ComfyUI's output cache holds for the current prompt
  (1 after a replay prompt, 0 after a lockstep one; never more), each of the same bytes as every other store recorded
  with the same size and settings; no FasaRun, FASA patch closure, per-run guider (except the GUIDER output
  that ComfyUI caches for the current FreeCureGuider prompt), FreeCure patch/wrapper on any ModelPatcher, module hook
  or monkeypatch of ComfyUI is left;
* resident memory does not grow: after a 20-prompt warm-up, the mean RSS of the probes in prompts 160-199 is at most
  RSS_TOLERANCE_MB above the mean of those in prompts 20-59, and no probe after warm-up exceeds the warm-up
  phase's largest by more than that.

The helpers here (prompt builder, probe) are shared by test_interrupts.py and test_concurrency.py.
"""
from __future__ import annotations

import json
import pathlib
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workflow_utils as wu  # noqa: E402

PROBE_NODE = "FreeCureE2EProbe"    # tests/e2e_probe_pack
FAULT_NODE = "FreeCureE2EFaultyModel"
MODE_WORKFLOWS = {"replay": "freecure_replay", "lockstep": "freecure_lockstep", "guider": "freecure_custom_sampler"}

SOAK_PROMPTS = 200
WARMUP = 20
PROBE_EVERY = 5
RSS_TOLERANCE_MB = 48  # of a ~1 GB server: under 5 %
SIZES = ((64, 64), (48, 64), (64, 48), (32, 32))
SAMPLERS = ("euler", "euler_ancestral", "dpmpp_2m", "heun", "ddim", "lms", "dpmpp_2m_sde", "uni_pc")
SCHEDULERS = ("normal", "karras", "simple", "exponential", "sgm_uniform")
MASKS = ((0.25, 0.08, 0.5, 0.44), (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 0.5, 0.5), (0.1, 0.3, 0.8, 0.4),
         (0.0, 0.0, 1.0, 1.0))


# ------------------------------------------------------------------------------------------ prompts
def freecure_prompt(server, mode: str, *, seed: int, size=(64, 64), steps: int = 3, sampler: str = "euler",
                    scheduler: str = "normal", mask=MASKS[0], store: str = "auto", uncond_blend: float = 0.0,
                    prefix: str = "freecure_e2e_soak/p") -> tuple[dict, dict]:
    """A FreeCure prompt from the example workflow of `mode` (replay / lockstep / guider), shrunk for the tiny
    checkpoint, with the FD preview dropped. mask is the attribute box (x, y, w, h) as fractions of the image.
    Returns (prompt, ids): ids["save"] the SaveImage, ids["image"] the link of its images, ids["pd"] the stage-3
    node (FreeCureSampler or SamplerCustomAdvanced), ids["fd"] the FreeCureFoundationSampler (replay only)."""
    w, h = size
    p = wu.shrink(wu.load_api(MODE_WORKFLOWS[mode]), server.checkpoint, w, h, steps, prefix=prefix)
    save = wu.only_node(p, "SaveImage")
    p = wu.keep_only(p, save)
    ids = {"save": save, "image": p[save]["inputs"]["images"]}
    for nid, node in p.items():
        ins, ct = node["inputs"], node["class_type"]
        if "seed" in ins:
            ins["seed"] = seed
        if ct == "RandomNoise":
            ins["noise_seed"] = seed
        if "sampler_name" in ins:
            ins["sampler_name"] = sampler
        if "scheduler" in ins:
            ins["scheduler"] = scheduler
        if ct == "FreeCureFoundationSampler":
            ins["store"], ins["record"] = store, ("cond+uncond" if uncond_blend > 0 else "cond")
            ids["fd"] = nid
        if ct == "FreeCureFASAConfig":
            ins["uncond_blend"] = uncond_blend
            ids["fasa"] = nid
        if ct in ("FreeCureSampler", "SamplerCustomAdvanced"):
            ids["pd"] = nid
    set_mask(p, mask, size)
    return p, ids


def set_mask(p: dict, mask, size) -> None:
    """Move the attribute box (fractions x, y, w, h of the image) of a drawn-mask prompt."""
    w, h = size
    (box,) = [i for i in wu.nodes_of(p, "SolidMask") if p[i]["inputs"]["value"] == 1.0]
    (comp,) = wu.nodes_of(p, "MaskComposite")
    p[box]["inputs"]["width"], p[box]["inputs"]["height"] = max(1, round(mask[2] * w)), max(1, round(mask[3] * h))
    p[comp]["inputs"]["x"], p[comp]["inputs"]["y"] = round(mask[0] * w), round(mask[1] * h)


def add_probe(p: dict, after: list | None, label: str) -> str:
    """Add the probe node, run after the output `after` (a [node, slot] link) when given; returns its id."""
    inputs = {"label": label}
    if after is not None:
        inputs["after"] = list(after)
    return wu.add_node(p, PROBE_NODE, inputs)


def probe_of(entry: dict, probe_id: str) -> dict:
    (text,) = entry["outputs"][probe_id]["text"]
    return json.loads(text)


def run_probe(server, label: str = "alone") -> dict:
    """A prompt holding only the probe, run twice; the second report is returned.  ComfyUI's output cache then holds
    no other prompt's outputs whatever its policy: 0.3.75's classic cache drops them before the probe prompt runs,
    0.33's default RAM-pressure cache only after that prompt's first executed node (the probe always executes)."""
    p = {"1": {"class_type": PROBE_NODE, "inputs": {"label": label}}}
    ok(server.run(p, timeout=120))
    return probe_of(ok(server.run(p, timeout=120)), "1")


def empty_cache(server) -> None:
    """Ask the server to drop every cached output and unload models (POST /free, a public route of both versions).
    ComfyUI acts on it between two prompts, so the next prompt queued after the running one starts from nothing."""
    import requests
    r = requests.post(server.url + "/free", json={"unload_models": True, "free_memory": True}, timeout=30)
    assert r.status_code == 200, r.text


def ok(entry: dict, what: str = "") -> dict:
    """The entry of a prompt that succeeded; else fails naming the node, the exception and where it was raised."""
    status = entry["status"]
    if status.get("status_str") != "success":
        errors = [{k: e.get(k) for k in ("node_id", "node_type", "exception_type", "exception_message")}
                  | {"traceback_tail": "".join(e.get("traceback", [])[-3:])} for e in messages(entry, "execution_error")]
        interrupted = messages(entry, "execution_interrupted")
        pytest.fail(f"prompt {what} failed: {json.dumps(errors or interrupted or status, indent=1)[-4000:]}")
    return entry


def messages(entry: dict, event: str) -> list[dict]:
    return [data for ev, data in entry["status"].get("messages", []) if ev == event]


def cached_nodes(entry: dict) -> set[str]:
    """Nodes of the prompt that ComfyUI took from its output cache."""
    return {n for data in messages(entry, "execution_cached") for n in data.get("nodes", [])}


def pixels(server, entry: dict, node_id: str):
    import numpy as np
    from PIL import Image
    (path,) = server.output_files({"outputs": {node_id: entry["outputs"][node_id]}})
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def assert_nothing_left(report: dict, *, kv_stores: int = 0, guiders=()) -> None:
    """No FreeCure state beyond what ComfyUI's output cache holds for the current prompt (kv_stores KVStores,
    the given cached GUIDER objects)."""
    where = f"probe {report['label']!r}"
    assert report["kv_store_modules"], (where, "the probe does not recognise FreeCure's modules")
    assert report["kv_stores"] == kv_stores, (where, report["kv_stores"], kv_stores)
    assert report["fasa_runs"] == 0, (where, "FasaRun objects alive", report["fasa_runs"])
    assert report["fasa_closures"] == [], (where, "FASA patch closures alive", report["fasa_closures"])
    assert report["guiders"] == sorted(guiders), (where, "FreeCure guiders alive", report["guiders"])
    assert report["patcher_freecure"] == [], (where, "FreeCure callables on a ModelPatcher", report["patcher_freecure"])
    assert report["patcher_attn1_replace"] == [] and report["patcher_attn2_replace"] == [], (where, report)
    assert report["module_hooks"] == [], (where, "module hooks / forward overrides", report["module_hooks"])
    assert report["comfy_monkeypatches"] == [], (where, "ComfyUI functions replaced", report["comfy_monkeypatches"])
    for lm in report["loaded_models"]:
        assert not lm.get("freecure") and not lm.get("attn1_replace") and "error" not in lm, (where, lm)


def server_rss_bytes(server) -> int:
    with open(f"/proc/{server.proc.pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


# ------------------------------------------------------------------------------------------ soak
def _variant(i: int) -> dict:
    """The i-th soak prompt's settings: modes alternate; sizes, samplers, schedulers and masks cycle at other periods
    so that all combinations mix; every prompt has its own seed."""
    mode = ("replay", "lockstep", "replay", "guider")[i % 4]
    v = {"mode": mode, "seed": 5000 + i, "size": SIZES[(i // 4) % len(SIZES)], "steps": 2 + i % 3,
         "sampler": SAMPLERS[i % len(SAMPLERS)], "scheduler": SCHEDULERS[i % len(SCHEDULERS)],
         "mask": MASKS[i % len(MASKS)]}
    if mode == "replay":
        v["store"] = ("auto", "x", "kv")[(i // 2) % 3]
        v["uncond_blend"] = 0.5 if i % 7 == 0 else 0.0
    return v


def _drop_queued(server) -> None:
    import requests
    requests.post(server.url + "/queue", json={"clear": True}, timeout=30)
    requests.post(server.url + "/interrupt", json={}, timeout=30)


def _check_soak_prompts(server, queued):
    """Waits for each soak prompt in turn and checks it; returns (probes [(index, RSS bytes)], kv bytes by setting)."""
    probes, kv_bytes_by_setting = [], {}
    for i, v, prompt_id, ids, probe in queued:
        entry = server.wait(prompt_id, timeout=300)
        ok(entry, f"{i} {v}")
        w, h = v["size"]
        assert pixels(server, entry, ids["save"]).shape == (h, w, 3), (i, v)
        if probe is None:
            continue
        report = probe_of(entry, probe)
        assert report["pid"] == server.proc.pid, "the probe runs in the server process"
        expect_kv = 1 if v["mode"] == "replay" else 0
        assert_nothing_left(report, kv_stores=expect_kv, guiders=["LockstepGuider"] if v["mode"] == "guider" else [])
        if expect_kv:
            setting = (v["size"], v["steps"], v["sampler"], v["store"], v["uncond_blend"] > 0)
            kv_bytes_by_setting.setdefault(setting, set()).add(report["kv_bytes"])
            assert report["kv_bytes"] > 0 and report["kv_compacted"] == 0, (i, report)
        probes.append((i, report["rss_bytes"]))
    return probes, kv_bytes_by_setting


@pytest.mark.e2e
def test_soak_200_prompts_bounded_memory_and_store(comfy_server):
    server = comfy_server
    if server.object_info(PROBE_NODE) is None:
        pytest.fail(f"{PROBE_NODE} is not registered: the comfy_server fixture must link tests/e2e_probe_pack")
    # a small warm-up prompt first, so model loading is not in the per-prompt time
    ok(server.run(freecure_prompt(server, "replay", seed=4999)[0], timeout=180))

    queued = []  # (index, variant, prompt_id, ids, probe id or None)
    t0 = time.monotonic()
    try:
        for i in range(SOAK_PROMPTS):
            v = _variant(i)
            p, ids = freecure_prompt(server, prefix=f"freecure_e2e_soak/{i:03d}", **v)
            probe = add_probe(p, ids["image"], f"soak {i}") if i % PROBE_EVERY == PROBE_EVERY - 1 else None
            code, body = server.queue(p)
            assert code == 200 and "prompt_id" in body, (i, code, body)
            queued.append((i, v, body["prompt_id"], ids, probe))
        t_queued = time.monotonic() - t0
        probes, kv_bytes_by_setting = _check_soak_prompts(server, queued)
    except BaseException:
        _drop_queued(server)  # do not leave the later tests a queue of soak prompts
        raise
    elapsed = time.monotonic() - t0
    assert server.alive()

    # the same size and settings record the same number of bytes, however many prompts ran before
    assert kv_bytes_by_setting and all(len(b) == 1 for b in kv_bytes_by_setting.values()), kv_bytes_by_setting

    mb = 1024 * 1024
    warm = [r for i, r in probes if i < WARMUP]
    early = [r for i, r in probes if WARMUP <= i < 60]
    late = [r for i, r in probes if SOAK_PROMPTS - 40 <= i]
    after = [r for i, r in probes if i >= WARMUP]
    early_mb, late_mb = sum(early) / len(early) / mb, sum(late) / len(late) / mb
    print(f"\nsoak: {SOAK_PROMPTS} prompts in {elapsed:.1f}s ({elapsed / SOAK_PROMPTS * 1000:.0f} ms/prompt incl. "
          f"{len(probes)} probes; queued in {t_queued:.1f}s); RSS warm-up max {max(warm) / mb:.1f} MB, "
          f"prompts 20-59 mean {early_mb:.1f} MB, 160-199 mean {late_mb:.1f} MB (growth {late_mb - early_mb:+.1f} MB, "
          f"tolerance {RSS_TOLERANCE_MB} MB), max after warm-up {max(after) / mb:.1f} MB; server RSS now "
          f"{server_rss_bytes(server) / mb:.1f} MB; kv bytes by (size, steps, sampler, store, uncond) "
          f"{ {k: next(iter(b)) for k, b in sorted(kv_bytes_by_setting.items())} }")
    print("RSS per probe (MB): " + " ".join(f"{i}:{r / mb:.0f}" for i, r in probes))
    assert late_mb - early_mb <= RSS_TOLERANCE_MB, f"resident memory grew {late_mb - early_mb:.1f} MB"
    assert max(after) / mb <= max(warm) / mb + RSS_TOLERANCE_MB, "resident memory peaked after warm-up"

