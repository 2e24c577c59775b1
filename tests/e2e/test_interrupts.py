"""Interrupts and faults on the headless server (issue 7, item 2).

* POST /interrupt in the middle of stage 1 (FreeCureFoundationSampler recording), stage 3 (FreeCureSampler,
  replay and lockstep) and APG (FreeCureAPG, in its inversion and in its regeneration): the test listens on the
  server's websocket as the prompt's client and interrupts (targeting that prompt id) as soon as the target node
  reports sampling progress INTERRUPT_AT; a long schedule (LONG_STEPS) leaves it well inside the node. The history
  then says the prompt was interrupted *in that node* (execution_interrupted with its node id), so the interrupt
  provably landed mid-stage.
* An exception raised inside FreeCure's FASA patch (simulated by the test-only FreeCureE2EFaultyModel: an attention
  override that raises when called from the ``fasa_attn1`` closure), in replay and lockstep: the prompt fails with
  that error, and its traceback runs through ``fasa_attn1``.

After each, the prompt queued behind it succeeds: the reference prompt (replay, 64x64, 3 steps), sampled anew (not
from the cache: each case first asks the server to empty its cache with POST /free, which ComfyUI does between two
prompts; without it, 0.33's default RAM-pressure cache may still hold the reference's stage-1 output when the
interrupted prompt executed no node before its interrupt, and the recovery would take it from there), gives exactly the pixels it gave before any interrupt; and the probe run after it finds no FreeCure
state but the one KVStore of that prompt, of the reference's size: no FasaRun, FASA patch closure or guider, no
FreeCure patch, wrapper or callback on any ModelPatcher, no module hook, no monkeypatched ComfyUI function.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import pathlib
import sys
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_soak as soak  # noqa: E402
import workflow_utils as wu  # noqa: E402

LONG_STEPS = 40    # stage 1 / stage 3 schedule of an interrupted prompt: ~0.9 s per stage on the tiny model
APG_STEPS = 60     # APG's schedule ('normal'; gamma 0.5)
APG_INVERTED = 31  # its steps each way: 30 of the 60 below the paper's turn (timestep 0.5T) + 1 up to the turn
INTERRUPT_AT = 3   # interrupt when the target node reports this step (of LONG_STEPS / APG_STEPS)
FAULT_MESSAGE = "FreeCureE2E: simulated fault inside the FASA patch"  # tests/e2e_probe_pack
REFERENCE = {"mode": "replay", "seed": 777, "size": (64, 64), "steps": 3, "mask": soak.MASKS[0]}
_seeds = itertools.count(9100)


# ------------------------------------------------------------------------------------------ helpers
def _recovery_prompt(server):
    p, ids = soak.freecure_prompt(server, prefix="freecure_e2e_interrupts/recovery", **REFERENCE)
    return p, ids, soak.add_probe(p, ids["image"], "after")


def _check_recovery(server, entry, ids, probe, reference) -> None:
    soak.ok(entry)
    assert ids["fd"] not in soak.cached_nodes(entry) and ids["pd"] not in soak.cached_nodes(entry), \
        "the recovery prompt must sample anew"
    assert (soak.pixels(server, entry, ids["save"]) == reference["pixels"]).all(), \
        "the prompt after the interrupt/fault gives other pixels than the same prompt before"
    report = soak.probe_of(entry, probe)
    soak.assert_nothing_left(report, kv_stores=1)
    assert report["kv_bytes"] == reference["kv_bytes"], (report["kv_bytes"], reference["kv_bytes"])


def add_apg(p: dict, ids: dict, steps: int, seed: int) -> str:
    """Stage 4 on a replay/lockstep prompt: FreeCureAPG on the stage-3 latent, decoded and saved. Returns its id."""
    (ckpt,) = wu.nodes_of(p, "CheckpointLoaderSimple")
    pd = p[ids["pd"]]["inputs"]
    template = wu.add_node(p, "CLIPTextEncode", {"text": "close-up portrait photo of a woman", "clip": [ckpt, 1]})
    apg = wu.add_node(p, "FreeCureAPG", {
        "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "gamma": 0.5,
        "inversion_cfg": 1.0, "inversion_refine": 0, "model": [ckpt, 0], "samples": [ids["pd"], 0],
        "template": [template, 0], "attributes": pd["fd_positive"], "negative": pd["negative"]})
    decode = wu.add_node(p, "VAEDecode", {"samples": [apg, 0], "vae": [ckpt, 2]})
    wu.add_node(p, "SaveImage", {"images": [decode, 0], "filename_prefix": "freecure_e2e_interrupts/apg"})
    return apg


def queue_and_interrupt(server, prompt: dict, node_id: str, at_step: int, then: dict) -> tuple[str, str, int]:
    """Queue `prompt` and then `then` as one websocket client; POST /interrupt (for the first prompt's id) when
    node_id reports progress >= at_step. Returns (prompt id, next prompt id, the step it was interrupted at)."""
    import aiohttp

    client_id = uuid.uuid4().hex
    ws_url = server.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"

    async def go():
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.ws_connect(ws_url) as ws:
            ids = []
            for p in (prompt, then):
                async with session.post(server.url + "/prompt", json={"prompt": p, "client_id": client_id}) as r:
                    body = await r.json()
                    assert r.status == 200 and "prompt_id" in body, (r.status, body)
                    ids.append(body["prompt_id"])
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                m = json.loads(msg.data)
                data = m.get("data") or {}
                if data.get("prompt_id") != ids[0]:
                    continue
                if m["type"] == "progress" and data.get("node") == node_id and data["value"] >= at_step:
                    async with session.post(server.url + "/interrupt", json={"prompt_id": ids[0]}) as r:
                        assert r.status == 200
                    return ids[0], ids[1], data["value"]
                if m["type"] in ("execution_success", "execution_error", "execution_interrupted"):
                    raise AssertionError(f"{m['type']} before node {node_id} reached step {at_step}: {data}")
            raise AssertionError("websocket closed")
    return asyncio.run(asyncio.wait_for(go(), 150))


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def reference(comfy_server):
    """The reference prompt's pixels and KVStore size, run on a server whose cache was emptied first."""
    server = comfy_server
    if server.object_info(soak.PROBE_NODE) is None:
        pytest.fail(f"{soak.PROBE_NODE} is not registered: the comfy_server fixture must link tests/e2e_probe_pack")
    soak.run_probe(server, "flush")
    p, ids, probe = _recovery_prompt(server)
    entry = soak.ok(server.run(p, timeout=180))
    assert ids["fd"] not in soak.cached_nodes(entry)
    report = soak.probe_of(entry, probe)
    soak.assert_nothing_left(report, kv_stores=1)
    return {"pixels": soak.pixels(server, entry, ids["save"]), "kv_bytes": report["kv_bytes"]}


# ------------------------------------------------------------------------------------------ tests
INTERRUPT_CASES = {  # case: (mode, target node, step to interrupt at)
    "stage1_record": ("replay", "fd", INTERRUPT_AT),
    "stage3_replay": ("replay", "pd", INTERRUPT_AT),
    "stage3_lockstep": ("lockstep", "pd", INTERRUPT_AT),
    "apg_inversion": ("replay", "apg", INTERRUPT_AT),
    "apg_regeneration": ("replay", "apg", APG_INVERTED + INTERRUPT_AT),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(INTERRUPT_CASES))
def test_interrupt_mid_stage_leaves_nothing_behind(comfy_server, reference, case):
    server = comfy_server
    mode, target, at_step = INTERRUPT_CASES[case]
    seed = next(_seeds)
    long_steps = 3 if target == "apg" else LONG_STEPS
    p, ids = soak.freecure_prompt(server, mode, seed=seed, steps=long_steps,
                                  prefix=f"freecure_e2e_interrupts/{case}")
    if target == "apg":
        ids["apg"] = add_apg(p, ids, APG_STEPS, seed)
    node = ids[target]
    recovery, rids, probe = _recovery_prompt(server)
    soak.empty_cache(server)
    prompt_id, next_id, step = queue_and_interrupt(server, p, node, at_step, then=recovery)
    entry = server.wait(prompt_id, timeout=120)
    assert entry["status"]["status_str"] == "error", entry["status"]
    assert not soak.messages(entry, "execution_error"), soak.messages(entry, "execution_error")
    (interrupted,) = soak.messages(entry, "execution_interrupted")
    assert interrupted["node_id"] == node and interrupted["node_type"] == p[node]["class_type"], \
        f"interrupt requested at step {step} of {p[node]['class_type']} landed elsewhere: {interrupted}"
    assert node not in interrupted["executed"]
    print(f"\n{case}: interrupted {p[node]['class_type']} at step {step}")

    assert server.alive()
    _check_recovery(server, server.wait(next_id, timeout=120), rids, probe, reference)


@pytest.mark.e2e
@pytest.mark.parametrize("mode", ["replay", "lockstep"])
def test_exception_inside_the_fasa_patch_leaves_the_server_serving(comfy_server, reference, mode):
    server = comfy_server
    p, ids = soak.freecure_prompt(server, mode, seed=next(_seeds), steps=4, prefix="freecure_e2e_interrupts/fault")
    (ckpt,) = wu.nodes_of(p, "CheckpointLoaderSimple")
    fault = wu.add_node(p, soak.FAULT_NODE, {"model": [ckpt, 0], "after_calls": 3})
    p[ids["pd"]]["inputs"]["model_pd"] = [fault, 0]

    entry = server.run(p, timeout=120)
    assert entry["status"]["status_str"] == "error", entry["status"]
    (error,) = soak.messages(entry, "execution_error")
    assert error["node_id"] == ids["pd"] and error["node_type"] == "FreeCureSampler", error
    assert FAULT_MESSAGE in error["exception_message"] and error["exception_type"] == "RuntimeError", error
    assert any("fasa_attn1" in frame for frame in error["traceback"]), "the fault must come from inside the patch"
    assert server.alive()

    recovery, rids, probe = _recovery_prompt(server)
    _check_recovery(server, server.run(recovery, timeout=120), rids, probe, reference)
