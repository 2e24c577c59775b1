"""The example workflows in workflows/ against a real headless ComfyUI server.

* static (no server): the UI workflows are well-formed (links agree with both ends, seeds fixed, SD1.5 defaults,
  Notes present, nodes do not overlap);
* the API copies in workflows/api/ equal the UI workflows converted with the server's /object_info, and every node
  type used exists there; the template browser lists the three workflows;
* each API workflow runs on the tiny checkpoint (64x96, 4 steps) and saves PNGs of that size;
* replay and lockstep give the same PD image for the same seed;
* FreeCure Sampler's node text and FreeCure Guider's node (its progress text, over the websocket) show the FASA
  account of the run: every expected (step, layer) place reached, in the run's mode;
* refused inputs (mask batch 3 vs latent batch 2; a kv recorded with record 'off') fail with an execution error
  naming the problem, and the server then still runs a good prompt.
"""
from __future__ import annotations

import itertools
import json
import os
import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workflow_utils as wu  # noqa: E402

WIDTH, HEIGHT, STEPS = 64, 96, 4
_seeds = itertools.count(1000)


# ------------------------------------------------------------------------------------------ helpers
def _execution_error(entry: dict) -> dict:
    """The execution_error message of a failed /history entry."""
    status = entry["status"]
    assert status["status_str"] == "error", f"expected an error, got {status}"
    errors = [data for event, data in status.get("messages", []) if event == "execution_error"]
    assert len(errors) == 1, status
    return errors[0]


def _images(server, entry: dict) -> list[dict]:
    """Every image (saved and preview) a history entry reports: its outputs[*].images items."""
    return [item for out in (entry.get("outputs") or {}).values() for item in out.get("images", [])]


def _view_pixels(server, item: dict):
    """An image's pixels as the frontend gets them, through /view."""
    import io
    import numpy as np
    import requests
    from PIL import Image
    params = {k: item.get(k, "") for k in ("filename", "subfolder", "type")}
    r = requests.get(server.url + "/view", params=params, timeout=30)
    assert r.status_code == 200, (r.status_code, item)
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.format == "PNG", im.format
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _pixels(path: pathlib.Path):
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def _small(name: str, server, prefix: str) -> dict:
    return wu.shrink(wu.load_api(name), server.checkpoint, WIDTH, HEIGHT, STEPS, prefix=prefix)


def _pd_pixels(server, prompt: dict):
    entry = server.run(prompt, timeout=120)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-3000:]
    (png,) = server.output_files(entry)
    return _pixels(png)


def _max_diff(a, b) -> int:
    import numpy as np
    return int(np.abs(a - b).max())


def _assert_good_prompt_runs(server) -> None:
    """The server still executes a FreeCure prompt (a new seed, so nothing comes from the cache)."""
    p = _small("freecure_lockstep", server, "freecure_e2e/recovery")
    p = wu.keep_only(p, wu.only_node(p, "SaveImage"))
    seed = next(_seeds)
    for nid in wu.nodes_of(p, "FreeCureSampler") + wu.nodes_of(p, "FreeCureFoundationSampler"):
        p[nid]["inputs"]["seed"] = seed
    assert _pd_pixels(server, p).shape == (HEIGHT, WIDTH, 3)


# ------------------------------------------------------------------------------------------ static
@pytest.mark.parametrize("name", wu.WORKFLOW_NAMES)
def test_ui_workflow_is_well_formed(name):
    wf = wu.load_ui(name)
    wu.assert_well_formed(wf)

    by_type = lambda t: [n for n in wf["nodes"] if n["type"] == t]  # noqa: E731
    assert [n["widgets_values"] for n in by_type("CheckpointLoaderSimple")] == [["v1-5-pruned-emaonly.safetensors"]]
    assert [n["widgets_values"][:2] for n in by_type("EmptyLatentImage")] == [[512, 512]]
    seeded = by_type("FreeCureFoundationSampler") + by_type("FreeCureSampler") + by_type("RandomNoise")
    assert seeded and all(n["widgets_values"][1] == "fixed" for n in seeded)
    assert len({n["widgets_values"][0] for n in seeded}) == 1, "all samplers share one seed"
    steps = [n["widgets_values"][2] for n in seeded if n["type"] != "RandomNoise"]
    steps += [n["widgets_values"][1] for n in by_type("BasicScheduler")]
    assert steps and set(steps) == {20}
    assert len(by_type("Note")) >= 2

    # readable layout: no two nodes (with their ~30 px title bars) overlap
    boxes = [(n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
             for n in wf["nodes"]]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
        assert not overlap, f"{wf['nodes'][i]['type']} overlaps {wf['nodes'][j]['type']}"


def test_replay_and_lockstep_differ_only_in_kv():
    replay, lockstep = wu.load_ui("freecure_replay"), wu.load_ui("freecure_lockstep")
    kv_links = [l for l in replay["links"] if l[5] == "FREECURE_KV"]
    assert len(kv_links) == 1 and not [l for l in lockstep["links"] if l[5] == "FREECURE_KV"]
    assert wu.node_types(replay) == wu.node_types(lockstep)


# ------------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


@pytest.fixture(scope="module")
def runs(comfy_server):
    """Each example workflow run once (shrunk), shared by the tests below: get(name) -> history entry."""
    cache = {}

    def get(name):
        if name not in cache:
            entry = comfy_server.run(_small(name, comfy_server, f"freecure_e2e/{name}"), timeout=180)
            cache[name] = entry
        return cache[name]
    return get


@pytest.mark.e2e
@pytest.mark.parametrize("name", wu.SERVER_WORKFLOW_NAMES)
def test_api_copy_equals_converted_ui_workflow(object_info, name):
    ui = wu.load_ui(name)
    missing = {t for t in wu.node_types(ui) - wu.FRONTEND_ONLY if t not in object_info}
    assert not missing, f"node types not in /object_info: {missing}"
    converted = wu.ui_to_api(ui, object_info)
    if os.environ.get("FREECURE_WRITE_API_WORKFLOWS") == "1":
        wu.write_api(name, converted)
    # a node without its own title is named by the server's display name, which ComfyUI versions change (0.33 named
    # PhotoMakerLoader "Load PhotoMaker Model"): compared as the server names it, the rest of the copy exactly
    untitled = {str(n["id"]) for n in ui["nodes"] if not n.get("title") and n["type"] not in wu.FRONTEND_ONLY}
    for nid in untitled:
        info = object_info[converted[nid]["class_type"]]
        assert converted[nid]["_meta"]["title"] == (info.get("display_name") or converted[nid]["class_type"]), nid
    strip = lambda prompt: {k: {**v, "_meta": None} if k in untitled else v for k, v in prompt.items()}  # noqa: E731
    assert strip(converted) == strip(wu.load_api(name)), (
        f"workflows/api/{name}.json differs from workflows/{name}.json; regenerate it with "
        f"FREECURE_WRITE_API_WORKFLOWS=1 (see tests/e2e/workflow_utils.py)")
    assert all(v["class_type"] in object_info for v in converted.values())


@pytest.mark.e2e
def test_template_browser_lists_the_workflows(comfy_server):
    import requests
    templates = requests.get(comfy_server.url + "/workflow_templates", timeout=30).json()
    assert sorted(templates.get("comfyui-freecure", [])) == sorted(wu.ALL_WORKFLOW_NAMES), templates
    r = requests.get(f"{comfy_server.url}/api/workflow_templates/comfyui-freecure/freecure_replay.json", timeout=30)
    assert r.status_code == 200 and r.json() == wu.load_ui("freecure_replay")


@pytest.mark.e2e
@pytest.mark.parametrize("name", wu.WORKFLOW_NAMES)
def test_example_workflow_runs_on_tiny_checkpoint(comfy_server, runs, name):
    entry = runs(name)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-3000:]
    saved = comfy_server.output_files(entry)
    assert len(saved) == 1 and saved[0].suffix == ".png" and saved[0].is_file(), saved
    assert saved[0].parent.name == "freecure_e2e" and saved[0].name.startswith(name)
    images = _images(comfy_server, entry)
    assert sorted(i["type"] for i in images) == ["output", "temp"], images  # FreeCure result + foundation preview
    for item in images:
        px = _view_pixels(comfy_server, item)
        assert px.shape == (HEIGHT, WIDTH, 3), (item, px.shape)
        assert px.std() > 0, f"{item} is a flat image"
    assert (_view_pixels(comfy_server, next(i for i in images if i["type"] == "output")) == _pixels(saved[0])).all()


def _progress_texts(server, prompt: dict) -> tuple[dict, dict]:
    """Run `prompt` as a websocket client; (history entry, {node id: [progress texts]}) from the server's binary
    TEXT messages (4-byte event 3, 4-byte node-id length, node id, UTF-8 text)."""
    import asyncio
    import struct
    import uuid

    import aiohttp
    client_id = uuid.uuid4().hex
    ws_url = server.url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"
    texts: dict[str, list[str]] = {}

    async def go():
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=170)) as session, \
                session.ws_connect(ws_url) as ws:
            async with session.post(server.url + "/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                pid = (await r.json())["prompt_id"]
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.BINARY and struct.unpack(">I", msg.data[:4])[0] == 3:
                    n = struct.unpack(">I", msg.data[4:8])[0]
                    texts.setdefault(msg.data[8:8 + n].decode(), []).append(msg.data[8 + n:].decode())
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    m = json.loads(msg.data)
                    if m.get("type") in ("execution_success", "execution_error") and \
                            m["data"].get("prompt_id") == pid:
                        return pid
            raise AssertionError("websocket closed")
    pid = asyncio.run(asyncio.wait_for(go(), 180))
    return server.wait(pid, timeout=60), texts


@pytest.mark.e2e
@pytest.mark.parametrize("name,mode", [("freecure_replay", "replay"), ("freecure_lockstep", "lockstep")])
def test_sampler_node_shows_the_fasa_account(runs, name, mode):
    entry = runs(name)
    nid = wu.only_node(wu.load_api(name), "FreeCureSampler")
    (text,) = entry["outputs"][nid]["text"]
    assert text.startswith("FASA ran at every expected place") and f"mode {mode}" in text, text
    m = re.search(r"places (\d+)/(\d+)", text)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) > 0, text


@pytest.mark.e2e
def test_guider_node_shows_the_fasa_account(comfy_server):
    prompt = _small("freecure_custom_sampler", comfy_server, "freecure_e2e/guider_account")
    seed = next(_seeds)  # a new seed: sampling runs, not a cached result of the runs fixture's prompt
    for nid in wu.nodes_of(prompt, "RandomNoise"):
        prompt[nid]["inputs"]["noise_seed"] = seed
    assert wu.nodes_of(prompt, "RandomNoise")
    entry, texts = _progress_texts(comfy_server, prompt)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-3000:]
    guider = wu.only_node(prompt, "FreeCureGuider")
    shown = texts.get(guider, [])
    assert len(shown) == 1 and shown[0].startswith("FASA ran at every expected place"), texts
    assert "mode lockstep" in shown[0]


@pytest.mark.e2e
def test_replay_and_lockstep_give_the_same_pd_image(comfy_server, runs):
    pd = {}
    for name in wu.WORKFLOW_NAMES:
        entry = runs(name)
        assert entry["status"]["status_str"] == "success", entry["status"]
        (png,) = comfy_server.output_files(entry)
        pd[name] = _pixels(png)
    assert _max_diff(pd["freecure_replay"], pd["freecure_lockstep"]) <= 1
    # FreeCure Guider + SamplerCustomAdvanced (same seed, euler, normal) is lockstep too
    assert _max_diff(pd["freecure_custom_sampler"], pd["freecure_lockstep"]) <= 1

    # The tiny model's images are faint, so FASA moves pixels only a little at the default omega; with a strong
    # omega, check the equality again and that FASA does change the image (so the equality is not vacuous).
    strong = {}
    for name in ("freecure_replay", "freecure_lockstep", "no_mask"):
        p = _small("freecure_lockstep" if name == "no_mask" else name, comfy_server, f"freecure_e2e/omega5_{name}")
        p = wu.keep_only(p, wu.only_node(p, "SaveImage"))
        p[wu.only_node(p, "FreeCureFASAConfig")]["inputs"]["omega"] = 5.0
        if name == "no_mask":  # the white box made black: FASA has nothing to act on
            for nid in wu.nodes_of(p, "SolidMask"):
                p[nid]["inputs"]["value"] = 0.0
        strong[name] = _pd_pixels(comfy_server, p)
    assert _max_diff(strong["freecure_replay"], strong["freecure_lockstep"]) <= 1
    assert _max_diff(strong["no_mask"], strong["freecure_lockstep"]) > 1, "FASA had no visible effect"


@pytest.mark.e2e
def test_mask_batch_mismatch_fails_with_batch_sizes_then_server_recovers(comfy_server):
    p = _small("freecure_lockstep", comfy_server, "freecure_e2e/bad_mask")
    p = wu.keep_only(p, wu.only_node(p, "SaveImage"))
    p[wu.only_node(p, "EmptyLatentImage")]["inputs"]["batch_size"] = 2
    fasa = wu.only_node(p, "FreeCureFASAConfig")
    mask_src = p[fasa]["inputs"]["mask"]
    img = wu.add_node(p, "MaskToImage", {"mask": mask_src})
    rep = wu.add_node(p, "RepeatImageBatch", {"image": [img, 0], "amount": 3})
    p[fasa]["inputs"]["mask"] = [wu.add_node(p, "ImageToMask", {"image": [rep, 0], "channel": "red"}), 0]

    err = _execution_error(comfy_server.run(p, timeout=120))
    assert err["node_type"] == "FreeCureSampler", err["node_type"]
    msg = err["exception_message"]
    assert "batch" in msg and re.search(r"\b3\b", msg) and re.search(r"\b2\b", msg), msg
    _assert_good_prompt_runs(comfy_server)


@pytest.mark.e2e
def test_kv_recorded_with_record_off_fails_naming_record_then_server_recovers(comfy_server):
    p = _small("freecure_replay", comfy_server, "freecure_e2e/record_off")
    p = wu.keep_only(p, wu.only_node(p, "SaveImage"))
    p[wu.only_node(p, "FreeCureFoundationSampler")]["inputs"]["record"] = "off"
    assert p[wu.only_node(p, "FreeCureSampler")]["inputs"]["kv"][0] == wu.only_node(p, "FreeCureFoundationSampler")

    err = _execution_error(comfy_server.run(p, timeout=120))
    assert err["node_type"] == "FreeCureSampler", err["node_type"]
    assert "record" in err["exception_message"], err["exception_message"]
    _assert_good_prompt_runs(comfy_server)
