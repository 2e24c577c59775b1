"""The headless runner, ``python -m freecure_core.run``.

* pure (no ComfyUI): ``--set`` by id / title / unique class type / ``*``, value parsing, the errors that list the
  candidates, sweeps and ``--repeat`` seed offsets, format detection, Reroute / PrimitiveNode conversion, the
  WebSocket frame reader; a bad ``--set`` exits 2 before anything starts;
* embedded: the face-parsing UI workflow runs in-process on the tiny models (converted with the embedded ComfyUI's
  node definitions): exit 0, its three images copied out, record.json with the final prompt and the Attribute Mask
  node's text;
* servers: a ``--sweep`` of three seeds spread over two real servers (``comfy_server`` and ``comfy_server_2``), each
  server's images downloaded and its prompts recorded;
* a failing prompt (a parser file that does not exist) is recorded with the node id, type and message, the exit
  code is 1, and the sweep's other prompt still completes.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from freecure_core.runner import cli as runner  # noqa: E402  (main, and the load_workflow it uses)
from freecure_core.runner import workflow_format as wf  # noqa: E402
from freecure_core.runner.server_client import OP_TEXT, WebSocket  # noqa: E402

UI_WORKFLOW = REPO / "workflows" / "freecure_face_parsing.json"
API_WORKFLOW = REPO / "workflows" / "api" / "freecure_face_parsing.json"
SIZE = 64
TINY = ["--set", "CheckpointLoaderSimple.ckpt_name=tiny_sd15.safetensors",
        "--set", "FreeCureFaceParserLoader.device=cpu",
        "--set", f"EmptyLatentImage.width={SIZE}", "--set", f"Empty Latent Image.height={SIZE}",
        "--set", "*.steps=4"]
PARSER = "FreeCureFaceParserLoader.parser=tiny_bisenet.safetensors"


def _api() -> dict:
    return json.loads(API_WORKFLOW.read_text())


# ------------------------------------------------------------------------------------------ pure
def test_sets_find_nodes_by_id_title_class_and_star():
    p = wf.apply_sets(_api(), ["6.width=640", "Empty Latent Image.height=320", "FreeCureFASAConfig.omega=1.5",
                               "*.seed=7", "Load Checkpoint.ckpt_name=x.safetensors"])
    assert (p["6"]["inputs"]["width"], p["6"]["inputs"]["height"]) == (640, 320)
    assert p["17"]["inputs"]["omega"] == 1.5
    assert p["8"]["inputs"]["seed"] == p["19"]["inputs"]["seed"] == 7
    assert p["2"]["inputs"]["ckpt_name"] == "x.safetensors"
    assert _api()["6"]["inputs"]["width"] == 512  # the input prompt is not changed


def test_set_values_are_json_where_they_parse_and_text_inputs_stay_text():
    p = wf.apply_sets(_api(), ["FreeCureFoundationSampler.offload_kv=false", "Negative prompt.text=123",
                               'FreeCureSampler.kv=["8", 1]', "FreeCureAttributeMask.prompt=red hair, no glasses",
                               'FreeCureAttributeMask.attributes="5"'])
    assert p["8"]["inputs"]["offload_kv"] is False
    assert p["5"]["inputs"]["text"] == "123"
    assert p["19"]["inputs"]["kv"] == ["8", 1]
    assert p["15"]["inputs"]["prompt"] == "red hair, no glasses" and p["15"]["inputs"]["attributes"] == "5"
    assert "kv" not in wf.apply_sets(_api(), ["FreeCureSampler.kv=null"])["19"]["inputs"]


@pytest.mark.parametrize("spec, words", [
    ("CLIPTextEncode.text=x", ["3 (CLIPTextEncode", "4 (CLIPTextEncode", "5 (CLIPTextEncode"]),  # ambiguous class
    ("VAE Decode.vae=x", ["is the title of 2 nodes", "9 (VAEDecode", "20 (VAEDecode"]),  # ambiguous title
    ("KSampler.seed=1", ["no node 'KSampler'", "19 (FreeCureSampler"]),  # unknown: lists the nodes
    ("EmptyLatentImage.widht=64", ["no input 'widht'", "batch_size, height, width"]),  # unknown input: lists them
    ("*.nope=1", ["no node has an input 'nope'"]),
    ("EmptyLatentImage=64", ["not NODE.INPUT=VALUE"]),
])
def test_bad_sets_name_the_candidates(spec, words):
    with pytest.raises(wf.WorkflowError) as e:
        wf.apply_sets(_api(), [spec])
    assert str(e.value).startswith("FreeCure:")
    for word in words:
        assert word in str(e.value), str(e.value)


def test_sweeps_make_a_product_and_repeat_offsets_every_seed():
    jobs = wf.expand_sweeps(_api(), ["*.seed=1,2", 'Negative prompt.text=["a, b", "c"]'], repeat=2)
    assert len(jobs) == 8
    seeds = [(p["8"]["inputs"]["seed"], p["19"]["inputs"]["seed"]) for p, _ in jobs]
    assert seeds == [(1, 1), (2, 2), (1, 1), (2, 2), (2, 2), (3, 3), (2, 2), (3, 3)]
    assert [p["5"]["inputs"]["text"] for p, _ in jobs] == ["a, b", "a, b", "c", "c"] * 2
    assert jobs[3][1] == {"sweep": {"*.seed": 1, "Negative prompt.text": "c"}, "repeat": 1}
    with pytest.raises(wf.WorkflowError, match="no node 'Nope'"):
        wf.expand_sweeps(_api(), ["Nope.seed=1,2"])


def test_format_detection_and_loading(tmp_path):
    assert wf.is_api_format(_api()) and not wf.is_ui_format(_api())
    ui = json.loads(UI_WORKFLOW.read_text())
    assert wf.is_ui_format(ui) and not wf.is_api_format(ui) and not wf.is_api_format({})
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"prompt": _api(), "client_id": "x"}))
    assert runner.load_workflow(str(body)) == (_api(), "api")
    assert runner.load_workflow(str(UI_WORKFLOW))[1] == "ui"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(wf.WorkflowError, match="neither a UI-format workflow"):
        runner.load_workflow(str(bad))


def test_reroute_and_primitive_nodes_are_resolved():
    info = {"EmptyLatentImage": {"input": {"required": {"width": ["INT", {}], "height": ["INT", {}]}}},
            "VAEDecode": {"input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}}}}
    ui = {"nodes": [
        {"id": 1, "type": "EmptyLatentImage", "widgets_values": [512, 512],
         "inputs": [{"name": "width", "type": "INT", "widget": {"name": "width"}, "link": 3}]},
        {"id": 2, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 1}]},
        {"id": 3, "type": "VAEDecode", "inputs": [{"name": "samples", "link": 2}, {"name": "vae", "link": None}]},
        {"id": 4, "type": "PrimitiveNode", "widgets_values": [768, "fixed"]},
        {"id": 5, "type": "Note", "widgets_values": ["hi"]}],
        "links": [[1, 1, 0, 2, 0, "LATENT"], [2, 2, 0, 3, 0, "LATENT"], [3, 4, 0, 1, 0, "INT"]]}
    p = wf.ui_to_api(ui, info)
    assert sorted(p) == ["1", "3"]
    assert p["1"]["inputs"] == {"width": 768, "height": 512}
    assert p["3"]["inputs"] == {"samples": ["1", 0]}
    with pytest.raises(wf.WorkflowError, match="not installed"):
        wf.ui_to_api(ui, {"VAEDecode": info["VAEDecode"]})


def test_a_workflow_saved_before_an_optional_widget_was_added_still_converts():
    """FreeCure FASA Config gained omega_mode (optional, last): a workflow saved before it has one value fewer; the
    frontend keeps the widget's default, and so does the runner (the input is left out). A missing required value
    is still an error."""
    info = {"FreeCureFASAConfig": {"input": {"required": {"mask": ["MASK"], "omega": ["FLOAT", {}]},
                                             "optional": {"omega_mode": [["-1 = auto", "auto", "value"], {}]}}}}
    node = {"id": 1, "type": "FreeCureFASAConfig", "inputs": [{"name": "mask", "link": None}]}
    assert wf.ui_to_api({"nodes": [dict(node, widgets_values=[-1.0])], "links": []}, info)["1"]["inputs"] == \
        {"omega": -1.0}
    assert wf.ui_to_api({"nodes": [dict(node, widgets_values=[-1.0, "value"])], "links": []}, info)["1"]["inputs"] \
        == {"omega": -1.0, "omega_mode": "value"}
    with pytest.raises(wf.WorkflowError, match="no value for 'omega'"):
        wf.ui_to_api({"nodes": [dict(node, widgets_values=[])], "links": []}, info)


def test_websocket_reads_split_fragmented_and_ping_frames():
    a, b = socket.socketpair()
    try:
        ws = WebSocket(a)
        text = json.dumps({"type": "executing", "data": {"node": "8"}}).encode()
        frame = bytes([0x81, len(text)]) + text
        b.sendall(frame[:5])
        assert ws.recv(0.05) is None  # half a frame: nothing yet, nothing lost
        b.sendall(frame[5:] + bytes([0x89, 0]) + bytes([0x01, 2]) + b"ab" + bytes([0x80, 1]) + b"c")
        assert ws.recv_json(1.0) == {"type": "executing", "data": {"node": "8"}}
        assert ws.recv(1.0) == (OP_TEXT, b"abc")  # the ping between was answered
        pong = b.recv(100)
        assert pong[0] == 0x8A and pong[1] & 0x80  # masked pong
        big = b"x" * 70000
        b.sendall(bytes([0x82, 127]) + len(big).to_bytes(8, "big") + big)
        assert ws.recv(2.0) == (0x2, big)
    finally:
        a.close()
        b.close()


def test_a_bad_set_exits_2_before_anything_starts(tmp_path, capsys):
    code = runner.main([str(API_WORKFLOW), "--set", "KSampler.seed=1", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "FreeCure: no node 'KSampler'" in capsys.readouterr().out
    assert not (tmp_path / "o").exists()  # nothing written either


# ------------------------------------------------------------------------------------------ ComfyUI
def _run(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "freecure_core.run", *args], cwd=str(REPO), env=env,
                          capture_output=True, text=True, timeout=timeout)


def _size(path: pathlib.Path) -> tuple[int, int]:
    from PIL import Image
    with Image.open(path) as im:
        return im.size


@pytest.mark.e2e
def test_embedded_run_of_the_ui_workflow(comfy_server, tmp_path):
    """In-process ComfyUI on the server fixture's tiny models (its extra_model_paths.yaml), tests/e2e_pack loaded
    with --custom-nodes (it is also in that yaml's custom_nodes: loaded once)."""
    out = tmp_path / "embedded"
    proc = _run([str(UI_WORKFLOW), "--cpu", "--extra-model-paths", str(comfy_server.tmp / "extra_model_paths.yaml"),
                 "--custom-nodes", str(REPO / "tests" / "e2e_pack"), "--out", str(out), *TINY, "--set", PARSER])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "#8 FreeCureFoundationSampler step 4/4" in proc.stdout and "#21 SaveImage done" in proc.stdout
    record = json.loads((out / "record.json").read_text())
    assert record["mode"] == "embedded" and record["status"] == "success" and record["workflow_format"] == "ui"
    assert record["converted_prompt"] == _api()  # converted with the embedded node definitions
    assert len(record["freecure"]["commit"] or "") == 40
    server = record["servers"][0]
    assert server["server"] == "embedded" and server["comfyui_version"]
    loaded = [os.path.realpath(p) for p in server["custom_nodes"]]
    assert loaded.count(os.path.realpath(REPO)) == 1  # this pack, also linked in the yaml's custom_nodes: once
    assert loaded.count(os.path.realpath(REPO / "tests" / "e2e_pack")) == 1
    (entry,) = record["prompts"]
    assert entry["status"] == "success" and entry["errors"] == [] and entry["server"] == "embedded"
    assert entry["prompt"] == wf.apply_sets(_api(), TINY[1::2] + [PARSER])
    assert entry["variation"]["sets"] == TINY[1::2] + [PARSER]
    (text,) = entry["texts"]["15"]
    assert "hair" in text and "glasses" in text
    assert sorted(entry["outputs"]) == ["10", "16", "21"]  # foundation preview, mask preview, result
    for name in entry["files"]:
        assert _size(out / name) == (SIZE, SIZE)
    assert entry["outputs"]["21"][0]["type"] == "output" and entry["outputs"]["10"][0]["type"] == "temp"


@pytest.mark.e2e
def test_a_sweep_is_spread_over_two_servers(comfy_server, comfy_server_2, tmp_path):
    out = tmp_path / "servers"
    proc = _run([str(API_WORKFLOW), "--server", comfy_server.url, "--server", comfy_server_2.url, "--out", str(out),
                 *TINY, "--set", PARSER, "--sweep", "*.seed=[11, 12, 13]", "--quiet"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "record.json").read_text())
    assert record["mode"] == "server" and record["prompt_count"] == 3
    assert [s["server"] for s in record["servers"]] == [comfy_server.url, comfy_server_2.url]
    entries = record["prompts"]
    assert [e["index"] for e in entries] == [0, 1, 2]
    assert {e["server"] for e in entries} == {comfy_server.url, comfy_server_2.url}
    for e, seed in zip(entries, (11, 12, 13)):
        assert e["status"] == "success" and e["variation"]["sweep"] == {"*.seed": seed}
        assert e["prompt"]["8"]["inputs"]["seed"] == e["prompt"]["19"]["inputs"]["seed"] == seed
        assert len(e["files"]) == 3 and e["texts"]["15"]
        for name in e["files"]:
            assert name.startswith(f"{e['index']:03d}_") and _size(out / name) == (SIZE, SIZE)


@pytest.mark.e2e
def test_a_failing_prompt_is_recorded_and_the_others_complete(comfy_server, tmp_path):
    out = tmp_path / "failing"
    proc = _run([str(API_WORKFLOW), "--server", comfy_server.url, "--out", str(out), *TINY,
                 "--sweep", "FreeCureFaceParserLoader.parser=not_there.safetensors,tiny_bisenet.safetensors"])
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((out / "record.json").read_text())
    assert record["status"] == "failed"
    bad, good = record["prompts"]
    assert bad["status"] in ("error", "rejected") and good["status"] == "success"
    (error,) = bad["errors"]
    assert error["node_id"] == "12" and error["node_type"] == "FreeCureFaceParserLoader"
    assert "not_there.safetensors" in error["message"], error
    assert len(good["files"]) == 3 and all((out / name).is_file() for name in good["files"])
    assert "not_there.safetensors" in proc.stdout  # the result line names the error
