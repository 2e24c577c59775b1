"""Concurrent clients on one headless server (issue 7, item 3): no state shared between prompts.

Two clients (own client_id and HTTP session, one thread each) queue their FreeCure prompts interleaved, A0 B0 A1 B1
..., and then wait for their results. The prompts pair up so that ComfyUI's output cache carries FreeCure objects
from one client's prompt into the other's:
* replay prompts with the same stage-1 inputs (seed, size, steps) but other attribute masks follow each other, so
  the second takes the first's FreeCureFoundationSampler output (its FREECURE_KV store) from the cache and replays it
  with its own mask;
* FreeCureGuider prompts with the same guider inputs but other noise seeds follow each other, so the second samples
  with the first's (cached) GUIDER object;
* lockstep prompts with the same seed and other masks, and unrelated prompts, in between.

Each prompt is also run alone, after a prompt that empties the cache of everything but the checkpoint. Asserted: every
concurrent output is bit-identical to the same prompt's output alone; the cache sharing did happen (the stage-1 node,
or the guider, came from the cache in the concurrent run and not in the alone run); masks matter (same seed, other
mask: other pixels), so the comparison can see shared state; and afterwards the probe finds no FreeCure state left.
"""
from __future__ import annotations

import pathlib
import sys
import threading
import uuid

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_soak as soak  # noqa: E402

M = soak.MASKS
# (label, mode, seed, size, mask, node that the concurrent run must take from the cache: "fd" / "guider" / None)
CLIENT_A = [
    ("A0", "replay", 31, (64, 64), M[0], None),
    ("A1", "replay", 32, (64, 64), M[3], None),
    ("A2", "lockstep", 31, (64, 64), M[1], None),
    ("A3", "guider", 41, (64, 64), M[0], None),
    ("A4", "replay", 31, (64, 64), M[2], None),
    ("A5", "guider", 42, (64, 64), M[0], None),
]
CLIENT_B = [
    ("B0", "replay", 31, (64, 64), M[1], "fd"),       # A0's record, another mask
    ("B1", "replay", 32, (64, 64), M[1], "fd"),       # A1's record, another mask
    ("B2", "lockstep", 31, (64, 64), M[2], None),     # A2's seed, another mask
    ("B3", "guider", 41, (64, 64), M[2], None),       # A3's seed, another mask (another guider)
    ("B4", "replay", 33, (48, 64), M[4], None),
    ("B5", "guider", 43, (64, 64), M[0], "guider"),   # A5's guider object, another noise seed
]
MASK_PAIRS = (("A0", "B0"), ("A1", "B1"), ("A2", "B2"))  # same seed and stage 1, other mask: other pixels


def _prompt(server, label, mode, seed, size, mask):
    p, ids = soak.freecure_prompt(server, mode, seed=seed, size=size, steps=3, mask=mask,
                                  prefix=f"freecure_e2e_concurrency/{label}")
    if mode == "guider":
        (ids["guider"],) = [n for n, v in p.items() if v["class_type"] == "FreeCureGuider"]
    return p, ids


def _flush_prompt(server) -> dict:
    """A prompt sharing only the checkpoint loader with the FreeCure prompts: ComfyUI's cache then holds nothing
    else (decodes a 16x16 empty latent).  The probe node always executes: 0.33's default RAM-pressure cache drops
    older prompts' outputs only after a node of the current prompt has run (0.3.75's classic cache before)."""
    return {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": server.checkpoint}},
            "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 16, "height": 16, "batch_size": 1}},
            "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
            "5": {"class_type": soak.PROBE_NODE, "inputs": {"label": "flush"}}}


class _Client:
    """One client: its own client_id and HTTP session."""

    def __init__(self, server):
        import requests
        self.server, self.client_id, self.session = server, uuid.uuid4().hex, requests.Session()

    def queue(self, prompt: dict) -> str:
        r = self.session.post(self.server.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id},
                              timeout=60)
        body = r.json()
        assert r.status_code == 200 and "prompt_id" in body, (r.status_code, body)
        return body["prompt_id"]


@pytest.mark.e2e
def test_two_clients_interleaved_get_the_outputs_of_each_prompt_alone(comfy_server):
    server = comfy_server
    if server.object_info(soak.PROBE_NODE) is None:
        pytest.fail(f"{soak.PROBE_NODE} is not registered: the comfy_server fixture must link tests/e2e_probe_pack")
    prompts = {spec[0]: (spec, *_prompt(server, *spec[:5])) for spec in CLIENT_A + CLIENT_B}

    # each prompt alone: after a prompt that leaves nothing of the FreeCure prompts in the cache
    alone = {}
    for label, (spec, p, ids) in prompts.items():
        soak.ok(server.run(_flush_prompt(server), timeout=120))
        entry = soak.ok(server.run(p, timeout=120))
        assert not ({ids.get("fd"), ids["pd"], ids.get("guider")} - {None}) & soak.cached_nodes(entry), label
        alone[label] = soak.pixels(server, entry, ids["save"])
    for a, b in MASK_PAIRS:
        assert (alone[a] != alone[b]).any(), f"{a} and {b} differ only in the mask, yet give the same image"
    soak.ok(server.run(_flush_prompt(server), timeout=120))

    # both clients at once, strictly interleaved: A0 B0 A1 B1 ...
    turn, cond, errors, entries = [0], threading.Condition(), [], {}

    def client(specs, parity):
        try:
            c = _Client(server)
            mine = []
            for i, spec in enumerate(specs):
                with cond:
                    assert cond.wait_for(lambda: turn[0] == 2 * i + parity, timeout=60), "turn never came"
                    mine.append((spec[0], c.queue(prompts[spec[0]][1])))
                    turn[0] += 1
                    cond.notify_all()
            for label, prompt_id in mine:
                entries[label] = server.wait(prompt_id, timeout=180)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            with cond:
                turn[0] = -10_000  # release the other client
                cond.notify_all()

    threads = [threading.Thread(target=client, args=(specs, parity)) for parity, specs in enumerate((CLIENT_A,
                                                                                                     CLIENT_B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(entries) == len(prompts)

    for label, (spec, p, ids) in prompts.items():
        entry = soak.ok(entries[label], f"{label} ({spec[1]}, seed {spec[2]}, concurrent)")
        shared = spec[5]
        if shared is not None:
            assert ids[shared] in soak.cached_nodes(entry), f"{label}: {shared} was meant to come from the cache"
        got = soak.pixels(server, entry, ids["save"])
        assert got.shape == alone[label].shape and (got == alone[label]).all(), \
            f"{label} ({spec[1]}, seed {spec[2]}) differs from the same prompt run alone"

    soak.assert_nothing_left(soak.run_probe(server, "after concurrency"), kv_stores=0)
