"""Shared pytest setup.

Kept lazy: nothing here imports ComfyUI or torch at collection time.  Tests that
need ComfyUI in-process call ``support.comfy_env.import_comfy()`` (or use the
``comfy_cpu`` fixture); e2e tests use the session-scoped ``comfy_server`` fixture,
which starts a real ``main.py --cpu`` only when first requested.
"""
from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

# Tiny CPU models: one intra-op thread is faster, and with 2 threads a busy CI
# machine slows OpenMP barriers down 20-40x.  Must be set before torch is imported;
# the e2e server inherits it.  Override by exporting OMP_NUM_THREADS.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])

TESTS_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # makes `import support...` work in any import mode
    sys.path.insert(0, str(TESTS_DIR))

SERVER_START_TIMEOUT_S = 180
CKPT_NAME = "tiny_sd15.safetensors"
MARKER_NODE = "FreeCureE2EMarker"  # defined by tests/e2e_pack


class _RepoRootIsNotATestPackage:
    """The repo root is the ComfyUI pack, so it has an ``__init__.py``.  pytest would
    make it a ``Package`` and import that ``__init__.py`` (as a module named after the
    checkout directory) before running any test below it, dragging in ComfyUI.
    Collect the root as a plain directory instead.  Registered as a global plugin
    because a conftest's own hooks do not apply to its parent directory."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path, parent):
        if pathlib.Path(path) == REPO_ROOT:
            return pytest.Dir.from_parent(parent, path=pathlib.Path(path))
        return None


def _guard_the_network() -> None:
    """Issue 7: the suite may reach only this machine.  Installs tests/support/no_network.py's guard in this process
    and, through a sitecustomize on PYTHONPATH, in every Python subprocess the tests start (ComfyUI servers, model
    scripts, the runner CLI); refused attempts are logged with their call stacks to $FREECURE_NO_NETWORK_LOG (a
    fresh file per session unless the variable is set), which pytest_sessionfinish checks."""
    from support import no_network
    work = pathlib.Path(tempfile.mkdtemp(prefix="freecure-no-network-"))
    log = os.environ.get(no_network.LOG_ENV) or str(work / "network.log")
    guarded_env = no_network.server_env(dict(os.environ), no_network.write_site_dir(work / "site"), log)
    os.environ["PYTHONPATH"] = guarded_env["PYTHONPATH"]
    os.environ[no_network.LOG_ENV] = log
    _NETWORK["log"] = log
    _NETWORK["already"] = len(no_network.attempts(log))
    no_network.install(log)


_NETWORK: dict = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: starts a real ComfyUI server (slow); deselect with -m 'not e2e'")
    if not config.pluginmanager.has_plugin("freecure-repo-root-dir"):
        config.pluginmanager.register(_RepoRootIsNotATestPackage(), "freecure-repo-root-dir")
    _guard_the_network()


def pytest_report_header(config):
    """Which ComfyUI this run tests (scripts/test_matrix.sh runs the suite once per version)."""
    from support.comfy_env import comfy_root
    root = comfy_root()
    try:
        text = (root / "comfyui_version.py").read_text()
        version = text.split("__version__", 1)[1].split('"')[1]
    except (OSError, IndexError):
        version = "unknown (no comfyui_version.py)"
    return f"ComfyUI {version} at {root}"


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when anything (this process or a guarded subprocess) tried to reach another machine."""
    from support import no_network
    if not _NETWORK:
        return
    tried = no_network.attempts(_NETWORK["log"])[_NETWORK["already"]:]
    if tried:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"FreeCure no-network guard: {len(tried)} connection attempt(s) to other machines "
                 f"(log: {_NETWORK['log']}):"] + [f"  pid {t['pid']}: {t['what']} {t['target']} at {t['stack']}"
                                                  for t in tried[:20]]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        else:
            print("\n".join(lines), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def comfy_cpu():
    """ComfyUI importable in-process, CPU mode.  Returns the ``comfy`` package."""
    from support.comfy_env import import_comfy
    return import_comfy()


# ----------------------------------------------------------------------------- e2e server

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """Handle on a running ComfyUI server (127.0.0.1 only)."""

    def __init__(self, proc, url, tmp, log_path, output_dir):
        self.proc = proc
        self.url = url
        self.tmp = tmp
        self.log_path = log_path
        self.output_dir = output_dir
        self.checkpoint = CKPT_NAME
        self.client_id = uuid.uuid4().hex
        self.start_seconds = None

    # -- plumbing
    def _get(self, path, timeout=30):
        import requests
        return requests.get(self.url + path, timeout=timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n=80) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- API
    @property
    def version(self) -> str:
        """The server's ComfyUI version (``/system_stats``), e.g. "0.33.0"."""
        if getattr(self, "_version", None) is None:
            self._version = self._get("/system_stats").json()["system"]["comfyui_version"]
        return self._version

    def object_info(self, name=None):
        """``/object_info/<name>`` entry for one node class (None if unknown), or all."""
        if name is None:
            return self._get("/object_info", timeout=60).json()
        r = self._get(f"/object_info/{name}")
        if r.status_code != 200:
            return None
        return r.json().get(name)

    def queue(self, prompt: dict):
        """POST /prompt.  Returns (status_code, json); validation errors (400) are returned, not raised."""
        import requests
        r = requests.post(self.url + "/prompt",
                          json={"prompt": prompt, "client_id": self.client_id}, timeout=60)
        try:
            body = r.json()
        except ValueError:
            body = {"raw": r.text}
        return r.status_code, body

    def wait(self, prompt_id: str, timeout: float = 300):
        """Poll /history/<id> until the prompt finished; returns its history entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self._get(f"/history/{prompt_id}")
            if r.status_code == 200:
                data = r.json()
                if prompt_id in data:
                    entry = data[prompt_id]
                    status = entry.get("status") or {}
                    if status.get("completed") or status.get("status_str") in ("success", "error"):
                        return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI server died while waiting for {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} not finished after {timeout}s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = 300):
        """queue + wait; asserts the prompt was accepted.  Returns the history entry."""
        code, body = self.queue(prompt)
        assert code == 200 and "prompt_id" in body, f"prompt rejected ({code}): {json.dumps(body, indent=1)}"
        return self.wait(body["prompt_id"], timeout=timeout)

    def output_files(self, history_entry, kind="images"):
        """Paths of the files a history entry reports under outputs[*][kind] (type 'output')."""
        paths = []
        for out in (history_entry.get("outputs") or {}).values():
            for item in out.get(kind, []):
                if item.get("type", "output") == "output":
                    paths.append(self.output_dir / item.get("subfolder", "") / item["filename"])
        return paths


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the server runs in its own session/group
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


def _server_env(root: pathlib.Path) -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1",
                COMFYUI_PATH=str(root))


def _launch_server(root: pathlib.Path, base: pathlib.Path, run_dir: pathlib.Path, env: dict,
                   extra_args=()) -> ComfyServer:
    """Start ``main.py --cpu`` (not waiting for it): models, custom nodes and input/ from ``base`` (its
    extra_model_paths.yaml), output/, temp/, user/ and server.log under ``run_dir``."""
    output_dir, temp_dir, user_dir = (run_dir / d for d in ("output", "temp", "user"))
    for d in (output_dir, temp_dir, user_dir):
        d.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch",
           "--output-directory", str(output_dir), "--input-directory", str(base / "input"),
           "--temp-directory", str(temp_dir), "--user-directory", str(user_dir),
           "--database-url", "sqlite:///" + str(user_dir / "comfyui.db"),
           "--extra-model-paths-config", str(base / "extra_model_paths.yaml"), *extra_args]
    log_path = run_dir / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=str(root), env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    server = ComfyServer(proc, f"http://127.0.0.1:{port}", base, log_path, output_dir)
    server.log_file = log
    return server


def _wait_ready(server: ComfyServer, t0: float, timeout: float = SERVER_START_TIMEOUT_S) -> None:
    """Wait until the server lists tests/e2e_pack's marker node; fails the test session otherwise."""
    import requests
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"ComfyUI exited early (rc={server.proc.returncode}):\n{server.log_tail()}")
        try:
            r = requests.get(f"{server.url}/object_info/{MARKER_NODE}", timeout=5)
            if r.status_code == 200 and MARKER_NODE in r.json():
                server.start_seconds = time.monotonic() - t0
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"ComfyUI not ready (no {MARKER_NODE} in /object_info) after "
                f"{timeout:.0f}s:\n{server.log_tail()}")


def _shut_down(server: ComfyServer) -> None:
    _stop(server.proc)
    server.log_file.close()


# the e2e servers' custom nodes: FreeCure, the test-only pack (tiny model configs, marker) and the probe pack
BASE_NODES = {"comfyui-freecure": REPO_ROOT, "zz_freecure_e2e": TESTS_DIR / "e2e_pack",
              "zz_freecure_e2e_probe": TESTS_DIR / "e2e_probe_pack"}
MODEL_FOLDERS = ("checkpoints", "face_parsing", "insightface", "controlnet", "instantid", "photomaker",
                 "diffusion_models")


def _comfy_root_or_fail() -> pathlib.Path:
    from support.comfy_env import comfy_root
    root = comfy_root()
    if not (root / "main.py").is_file():
        pytest.fail(f"ComfyUI not found at {root} (set COMFYUI_PATH or run scripts/bootstrap.sh)")
    return root


def _server_base(tmp_path_factory, name: str, nodes: dict, folders=MODEL_FOLDERS) -> pathlib.Path:
    """A fresh folder for a server: custom_nodes/ holding a symlink per ``nodes`` entry (name -> folder),
    models/checkpoints/, input/ and an extra_model_paths.yaml naming custom_nodes and models/<folder> for each of
    ``folders``."""
    tmp = tmp_path_factory.mktemp(name)
    for d in (tmp / "custom_nodes", tmp / "models" / "checkpoints", tmp / "input"):
        d.mkdir(parents=True, exist_ok=True)
    for link, target in nodes.items():
        (tmp / "custom_nodes" / link).symlink_to(target, target_is_directory=True)
    (tmp / "extra_model_paths.yaml").write_text(
        "freecure_e2e:\n"
        f"    base_path: {json.dumps(str(tmp))}\n"
        "    custom_nodes: custom_nodes\n" + "".join(f"    {f}: models/{f}\n" for f in folders))
    return tmp


def _make_models(env: dict, script: str, *args) -> str:
    """Run tests/e2e/<script> with args (a model writer); fails the test session when it fails. Returns its stdout."""
    make = subprocess.run([sys.executable, str(TESTS_DIR / "e2e" / script), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=600)
    if make.returncode != 0:
        pytest.fail(f"{script} failed ({make.returncode}):\n{make.stdout}\n{make.stderr}")
    return make.stdout


def _serve(root: pathlib.Path, tmp: pathlib.Path, env: dict, makers, extra_args=()):
    """Start a server on ``tmp`` (not waiting), run the model writers ``makers`` ((script, *args) each) while it
    boots (it lists model files per request, not at start-up), wait until it is ready, yield it, shut it down.
    Each writer's stdout is kept in ``server.made``."""
    t0 = time.monotonic()
    server = _launch_server(root, tmp, tmp, env, extra_args=extra_args)
    try:
        server.made = {m[0]: _make_models(env, *m) for m in makers}
        # the boot gets its own full allowance after the writers (they share the machine's cores with it)
        _wait_ready(server, t0, timeout=SERVER_START_TIMEOUT_S + (time.monotonic() - t0))
        yield server
    finally:
        _shut_down(server)


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory):
    """Start ``main.py --cpu`` with this repo and tests/e2e_pack as custom nodes."""
    pytest.importorskip("requests")
    root = _comfy_root_or_fail()
    tmp = _server_base(tmp_path_factory, "comfy_e2e", BASE_NODES)
    yield from _serve(root, tmp, _server_env(root), [
        ("make_ckpt.py", tmp / "models" / "checkpoints" / CKPT_NAME),
        ("make_parsing_models.py", tmp), ("make_identity_models.py", tmp)])


# ----------------------------------------------------------------------------- e2e server with the peer packs
PEERS_DIR = REPO_ROOT / ".peers"  # unmodified snapshots of the packs, unpacked by scripts/bootstrap.sh
PEER_PACKS = ("ComfyUI_InstantID", "PuLID_ComfyUI", "ComfyUI_IPAdapter_plus")
# top-level names only: find_spec of a submodule imports its package (insightface.app imports albumentations, which
# asks pypi.org for its latest version at import unless NO_ALBUMENTATIONS_UPDATE=1)
PEER_IMPORTS = ("insightface", "albumentations", "facexlib", "ftfy", "timm", "onnxruntime")
PEER_FOLDERS = MODEL_FOLDERS + ("pulid", "ipadapter", "clip_vision", "loras")


def peer_packs_missing() -> str | None:
    """Why the peer packs cannot be installed into a test server (None when they can)."""
    import importlib.util
    missing = [p for p in PEER_PACKS if not (PEERS_DIR / p / "__init__.py").is_file()]
    if missing:
        return f"peer packs not unpacked in {PEERS_DIR}: {', '.join(missing)} (scripts/bootstrap.sh unpacks them)"
    absent = []
    for name in PEER_IMPORTS:
        try:
            if importlib.util.find_spec(name) is None:
                absent.append(name)
        except ImportError:
            absent.append(name)
    if absent:
        return f"the peer packs' imports are not installed: {', '.join(absent)} (requirements-peers.txt)"
    return None


@pytest.fixture(scope="session")
def comfy_peer_server(tmp_path_factory):
    """A server like ``comfy_server`` with cubiq's ComfyUI_InstantID, PuLID_ComfyUI and ComfyUI_IPAdapter_plus
    installed for real (symlinked from .peers/) and random model files in their layouts (tests/e2e/
    make_peer_models.py, written once per session). The packs read ``folder_paths.models_dir`` directly
    (insightface), so the server's --base-directory is the temp folder; HF_HOME (EVA-CLIP in the hub cache layout)
    and facexlib's weight folder (tests/e2e_pack) point into it too. NO_ALBUMENTATIONS_UPDATE=1: importing
    insightface.app imports albumentations, which otherwise asks pypi.org for its latest version. Skipped, saying why, without .peers/ or the
    packs' imports; fails when a pack does not import."""
    pytest.importorskip("requests")
    reason = peer_packs_missing()
    if reason:
        pytest.skip(reason)
    root = _comfy_root_or_fail()
    tmp = _server_base(tmp_path_factory, "comfy_peers", {**BASE_NODES, **{p: PEERS_DIR / p for p in PEER_PACKS}},
                       PEER_FOLDERS)
    env = dict(_server_env(root), HF_HOME=str(tmp / "hf_home"), HF_HUB_CACHE=str(tmp / "hf_home" / "hub"),
               FREECURE_E2E_FACEXLIB_ROOT=str(tmp / "facexlib_root"), NO_ALBUMENTATIONS_UPDATE="1")
    serving = _serve(root, tmp, env, [("make_peer_models.py", tmp)], extra_args=("--base-directory", str(tmp)))
    server = next(serving)
    try:
        info = server.object_info()
        absent = [n for n in ("InstantIDAttentionPatch", "ApplyPulid", "IPAdapterFaceID") if n not in info]
        if absent:
            pytest.fail(f"peer packs did not load (no {absent} in /object_info):\n{server.log_tail(120)}")
        server.checkpoint = "tiny_sdxl.safetensors"
        yield server
    finally:
        serving.close()


@pytest.fixture(scope="session")
def comfy_server_2(comfy_server, tmp_path_factory):
    """A second server like ``comfy_server``, sharing its models, custom nodes and input/ (own output/, temp/,
    user/); without API nodes, which the tests never use, so it starts faster.  For spreading prompts over two."""
    from support.comfy_env import comfy_root
    root = comfy_root()
    run_dir = tmp_path_factory.mktemp("comfy_e2e_2")
    t0 = time.monotonic()
    server = _launch_server(root, comfy_server.tmp, run_dir, _server_env(root), extra_args=("--disable-api-nodes",))
    try:
        _wait_ready(server, t0)
        yield server
    finally:
        _shut_down(server)
