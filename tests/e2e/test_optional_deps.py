"""Optional dependencies absent, and no network (issue 7, items 6 and 7).

A second ComfyUI server (the e2e models, custom nodes and input of ``comfy_server``) starts with a sitecustomize
(tests/support/no_network.py) that makes ``segment_anything``, ``insightface`` and ``onnxruntime`` unimportable, as
if they were not installed, and blocks every socket connection or name lookup except to 127.0.0.1 / ::1 /
localhost, logging each refused attempt with its call stack. On it:

* ComfyUI starts, the pack imports without error and registers exactly the nodes the normal server has;
* FreeCure prompts that need none of those packages run: the replay workflow, and the face-parsing workflow whose
  loader's 'auto' detector falls back to whole images without onnxruntime;
* each affected node fails with an error naming what to install: SAM Refine (`pip install segment-anything`), the
  InstantID face analysis and an explicitly chosen face detector (`pip install onnxruntime`); the server keeps
  serving afterwards;
* nothing (ComfyUI, the pack, the test pack) tried to open a connection to another machine, at import or while
  running those prompts: the guard's log stays empty.

In this process, the guard itself is checked: a connection to 10.255.255.1:80 (and a lookup of example.com, a
urllib request) is refused with NetworkBlocked and logged, while 127.0.0.1 and unix sockets still work.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
import test_server_instantid as tsi  # noqa: E402
import test_server_parsing as tsp  # noqa: E402
import workflow_utils as wu  # noqa: E402
from support import no_network  # noqa: E402

HIDDEN = ("segment_anything", "insightface", "onnxruntime")
PACK_MODULE = "custom_nodes.comfyui-freecure"


# ------------------------------------------------------------------------------------------ the guard itself
def test_the_guard_refuses_other_machines_and_allows_this_one(tmp_path):
    import urllib.error
    import urllib.request
    log = tmp_path / "network.log"
    with no_network.guarded(log):
        for attempt in (lambda s: s.connect(("10.255.255.1", 80)), lambda s: s.connect_ex(("10.255.255.1", 80))):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(no_network.NetworkBlocked):
                attempt(s)
        with pytest.raises(no_network.NetworkBlocked):
            socket.getaddrinfo("example.com", 80)
        with pytest.raises(no_network.NetworkBlocked):
            socket.create_connection(("10.255.255.1", 80), timeout=1)
        with pytest.raises(urllib.error.URLError) as info:
            urllib.request.urlopen("http://example.com/", timeout=1)
        assert isinstance(info.value.reason, no_network.NetworkBlocked)

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:  # this machine is reachable
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with socket.create_connection(server.getsockname(), timeout=5):
                pass
            with socket.create_connection(("localhost", server.getsockname()[1]), timeout=5):
                pass
        a, b = socket.socketpair()  # unix sockets (asyncio's self-pipe) are local by nature
        a.close(), b.close()

    tried = no_network.attempts(log)
    assert [t["what"] for t in tried] == ["connect", "connect_ex", "getaddrinfo", "create_connection",
                                          "create_connection"], tried  # the last one: urllib's
    assert all("test_optional_deps.py" in t["stack"] for t in tried), tried
    assert "10.255.255.1" in tried[0]["target"]


def test_the_test_process_itself_is_guarded(tmp_path):
    """tests/conftest.py installs the guard for the whole pytest process (and its servers)."""
    if not no_network.installed():
        pytest.skip("the pytest process runs without the network guard: tests/conftest.py should call "
                    "support.no_network.install() (see tests/support/no_network.py)")
    with no_network.guarded(tmp_path / "network.log"):  # this deliberate attempt is not logged with the suite's
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(no_network.NetworkBlocked):
            s.connect(("10.255.255.1", 80))
    assert no_network.installed()  # guarded() leaves a guard it did not install in place


@pytest.mark.e2e
def test_the_main_server_runs_guarded_and_reached_no_other_machine(comfy_server):
    """With the guard in the environment tests/conftest.py gives its subprocesses (log: $FREECURE_NO_NETWORK_LOG,
    else <server base>/network.log), the shared e2e server and every guarded subprocess so far made no outside
    connection."""
    log = os.environ.get(no_network.LOG_ENV) or comfy_server.tmp / "network.log"
    if comfy_server.proc.pid not in no_network.guarded_pids(log):
        pytest.skip("comfy_server runs without the network guard: tests/conftest.py should put "
                    "support.no_network.server_env(...) into the environment of the processes it starts")
    assert no_network.attempts(log) == [], json.dumps(no_network.attempts(log), indent=1)


# ------------------------------------------------------------------------------------------ restricted server
@pytest.fixture(scope="module")
def restricted(comfy_server, tmp_path_factory):
    """A second server, without segment-anything / insightface / onnxruntime and with the network guard."""
    helpers = type(comfy_server).__init__.__globals__  # tests/conftest.py's launch helpers
    from support.comfy_env import comfy_root
    root = comfy_root()
    run_dir = tmp_path_factory.mktemp("comfy_restricted")
    log = run_dir / "network.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", COMFYUI_PATH=str(root))
    env = no_network.server_env(env, run_dir / "site", log, hide=HIDDEN)
    t0 = time.monotonic()
    server = helpers["_launch_server"](root, comfy_server.tmp, run_dir, env, extra_args=("--disable-api-nodes",))
    try:
        helpers["_wait_ready"](server, t0)
        server.network_log = log
        yield server
    finally:
        helpers["_shut_down"](server)


def _freecure_nodes(info: dict) -> dict:
    return {k: v for k, v in info.items() if v.get("python_module") == PACK_MODULE}


@pytest.mark.e2e
def test_comfyui_starts_and_registers_every_node_without_the_packages(restricted, comfy_server):
    log = restricted.log_text()
    assert not [line for line in log.splitlines() if "IMPORT FAILED" in line and "freecure" in line.lower()], log
    nodes = _freecure_nodes(restricted.object_info())
    assert set(nodes) == set(_freecure_nodes(comfy_server.object_info())) and len(nodes) >= 16, sorted(nodes)


@pytest.mark.e2e
def test_freecure_prompts_run_without_the_packages(restricted):
    replay = tsf._small("freecure_replay", restricted, "freecure_e2e_nodeps/replay")
    replay = wu.keep_only(replay, wu.only_node(replay, "SaveImage"))
    assert tsf._pd_pixels(restricted, replay).shape == (tsf.HEIGHT, tsf.WIDTH, 3)
    parsing = tsp._small(restricted, "freecure_e2e_nodeps/parsing")
    loader = wu.only_node(parsing, "FreeCureFaceParserLoader")
    assert parsing[loader]["inputs"]["face_detector"] == "auto"
    done = restricted.run(parsing, timeout=240)
    assert done["status"]["status_str"] == "success", json.dumps(done["status"], indent=1)[-3000:]
    assert "pip install onnxruntime" in restricted.log_text()  # the loader's warning: whole images, and why


def _sam_prompt() -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": tsp.PORTRAIT}},
            "2": {"class_type": "FreeCureSAMRefine", "inputs": {
                "image": ["1", 0], "sam_model": "sam_vit_b_01ec64.pth", "combine": "replace", "device": "cpu",
                "box": "10,10,100,100", "points": ""}},
            "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}


def _detector_prompt() -> dict:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": tsp.PORTRAIT}},
            "2": {"class_type": "FreeCureFaceParserLoader", "inputs": {
                "parser": tsp.PARSER, "face_detector": "antelopev2", "device": "cpu"}},
            "3": {"class_type": "FreeCureFaceParse", "inputs": {
                "face_parser": ["2", 0], "image": ["1", 0], "mode": "face crop", "crop_margin": 0.5}},
            "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}}}


def _face_analysis_prompt() -> dict:
    p = tsi._small("freecure_instantid", "freecure_e2e_nodeps/instantid")
    return wu.keep_only(p, wu.nodes_of(p, "PreviewImage")[0])  # the keypoint preview: stops at the pair


@pytest.mark.e2e
@pytest.mark.parametrize("build,node_type,install", [
    (_sam_prompt, "FreeCureSAMRefine", "pip install segment-anything"),
    (_detector_prompt, "FreeCureFaceParserLoader", "pip install onnxruntime"),
    (_face_analysis_prompt, "FreeCureInstantIDFaceAnalysis", "pip install onnxruntime"),
], ids=["sam", "face detector", "instantid face analysis"])
def test_affected_nodes_say_what_to_install(restricted, build, node_type, install):
    prompt = build()
    if node_type == "FreeCureInstantIDFaceAnalysis":
        assert wu.nodes_of(prompt, "FreeCureInstantIDPair"), prompt
    err = tsf._execution_error(restricted.run(prompt, timeout=180))
    assert err["node_type"] == node_type, err
    msg = err["exception_message"]
    assert msg.startswith("FreeCure") and install in msg and "Traceback" not in msg, msg
    assert restricted.alive()


@pytest.mark.e2e
def test_nothing_tried_to_reach_another_machine(restricted):
    """Runs after the prompts above: ComfyUI's start, the pack's import and every prompt made no outside
    connection (each one would have been refused and logged by the guard)."""
    assert restricted.alive()
    assert restricted.proc.pid in no_network.guarded_pids(restricted.network_log)  # the guard was in place
    tried = no_network.attempts(restricted.network_log)
    assert tried == [], json.dumps(tried, indent=1)
