"""FreeCure on FLUX with the real PuLID-FLUX ports (issue 17, item 4), each on its own headless ComfyUI (they
register the same node names), with random-weight files in the ports' own layouts and folders
(tests/support/peer_flux_models.py: a 3072-wide FLUX with one double block, the PuLID-FLUX file, EVA02-CLIP-L,
facexlib's RetinaFace and parsing nets, antelopev2 stand-ins, a reference image with the blue "face" square).

lldacing/ComfyUI_PuLID_Flux_ll (pinned snapshot ba90657, April 2025), Apply PuLID Flux on model_pd only (model_fd =
the plain FLUX MODEL):

* the pinned port alone: KSampler on its MODEL; recorded, and where it fails it must be a TypeError calling one of
  the port's functions with an argument it predates (0.3.75: its OUTER_SAMPLE wrapper and ``latent_shapes``; 0.33:
  also its forward_orig and ``timestep_zero_index``);
* the probe: the same with tests/e2e_pulid_flux_pack's adapter after Apply (passes ``latent_shapes`` around the
  port's wrapper, as upstream's later fix does). Where even that cannot sample, the FreeCure tests skip with the
  error, and FreeCure on the port's MODEL must refuse it by name (the argument its loop lacks), not fail with the
  port's TypeError;
* the workflow's port nodes are the real port's (served from its module), and workflows/api/freecure_peer_pulid_flux.json is the
  UI workflow converted with it;
* the port really patched PD: its plain PD latent differs from the plain model's;
* FD (FreeCure Foundation Sampler on model_fd) equals a plain KSampler on model_fd;
* an empty mask: FreeCure Sampler's PD is bit-identical to a plain KSampler on the port's MODEL, and its text says
  FASA did not run;
* a mask: FreeCure Sampler's text says FASA ran at every expected (step, block) place (steps x chosen blocks, one
  attention call each) and the PD latent differs from the empty-mask one.

balazik/ComfyUI-PuLID-Flux (its Apply node replaces forward_orig on the loaded model itself): the port's own plain
sampling after its Apply is recorded (it fails on 0.3.75 and 0.33, also on the plain MODEL it patched in place), and
FreeCure refuses such a model with an error naming the port instead of failing with a TypeError inside it.

Timings (model writing, server start, each prompt) and the recorded outcomes are printed with -s.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
TESTS_DIR = HERE.parent
sys.path.insert(0, str(HERE))
import workflow_utils as wu  # noqa: E402
from support import peer_flux_models as pfm  # noqa: E402

PEERS = wu.REPO_ROOT / ".peers"
LLDACING, BALAZIK = "ComfyUI_PuLID_Flux_ll", "ComfyUI-PuLID-Flux"
W_PX, H_PX, STEPS, SEED = 64, 64, 3, 7
FASA_BLOCKS = "double"  # every block this model has (one double block; 'reference' = single blocks: none here)
pytestmark = pytest.mark.e2e


# ------------------------------------------------------------------------------------------ files and servers
def _conftest_helpers(request) -> dict:
    """tests/conftest.py's server helpers (_launch_server, _wait_ready, _shut_down, _server_env)."""
    for plugin in request.config.pluginmanager.get_plugins():
        if pathlib.Path(getattr(plugin, "__file__", "") or "").resolve() == TESTS_DIR / "conftest.py":
            return vars(plugin)
    raise RuntimeError("tests/conftest.py is not loaded")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Every test file, written once for both servers (tests/support/peer_flux_models.py in a subprocess)."""
    for pack in (LLDACING, BALAZIK):
        if not (PEERS / pack / "__init__.py").is_file():
            pytest.skip(f"{PEERS / pack} missing (scripts/bootstrap.sh unpacks the peer packs into .peers/)")
    from support.comfy_env import comfy_root
    root = tmp_path_factory.mktemp("pulid_flux_files")
    env = dict(os.environ, COMFYUI_PATH=str(comfy_root()), HF_HUB_OFFLINE="1")
    t0 = time.monotonic()
    make = subprocess.run([sys.executable, str(TESTS_DIR / "support" / "peer_flux_models.py"), str(root)],
                          env=env, capture_output=True, text=True, timeout=600)
    if make.returncode != 0:
        pytest.fail(f"peer_flux_models.py failed ({make.returncode}):\n{make.stdout}\n{make.stderr[-4000:]}")
    report = json.loads(make.stdout)
    print(f"\n[pulid-flux] model files written in {time.monotonic() - t0:.1f} s: " + ", ".join(
        f"{k} {v['seconds']} s {v['bytes'] / 1e6:.0f} MB ({v['disk_bytes'] / 1e6:.0f} MB on disk)"
        for k, v in report.items()))
    yield root
    shutil.rmtree(root, ignore_errors=True)  # about 1.8 GB: gone once this module's servers are down


def _start(request, tmp_path_factory, files: pathlib.Path, pack: str):
    """A ComfyUI with FreeCure, the test pack and one port; its --base-directory's models/ and input/ are the test
    files (the ports read models_dir), HF_HOME a hub cache with the EVA file (balazik), and for balazik a facexlib
    overlay whose weights/ folder holds the test files (it reads them from inside the facexlib package)."""
    h = _conftest_helpers(request)
    from support.comfy_env import comfy_root
    root = comfy_root()
    base = tmp_path_factory.mktemp(f"comfy_{pack}")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-freecure").symlink_to(wu.REPO_ROOT, target_is_directory=True)
    (base / "custom_nodes" / "zz_freecure_e2e").symlink_to(TESTS_DIR / "e2e_pack", target_is_directory=True)
    (base / "custom_nodes" / pack).symlink_to(PEERS / pack, target_is_directory=True)
    if pack == LLDACING:
        (base / "custom_nodes" / "zz_freecure_e2e_pulid_flux").symlink_to(TESTS_DIR / "e2e_pulid_flux_pack",
                                                                          target_is_directory=True)
    (base / "models").mkdir()
    for sub in ("diffusion_models", "pulid", "clip", "facexlib", "insightface"):
        (base / "models" / sub).symlink_to(files / "models" / sub, target_is_directory=True)
    (base / "input").symlink_to(files / "input", target_is_directory=True)
    (base / "extra_model_paths.yaml").write_text(
        f"freecure_peer_flux:\n    base_path: {json.dumps(str(base))}\n    custom_nodes: custom_nodes\n")
    env = h["_server_env"](root)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"  # insightface.app imports albumentations, which asks pypi.org otherwise
    hf_home = base / "hf"
    pfm.hf_cache(hf_home, files / "models" / "clip" / pfm.EVA_FILE)
    env["HF_HOME"] = str(hf_home)
    if pack == BALAZIK:
        overlay = pfm.facexlib_overlay(base / "site_overlay", files / "models" / "facexlib")
        env["PYTHONPATH"] = os.pathsep.join([str(overlay)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                               if p])
    t0 = time.monotonic()
    server = h["_launch_server"](root, base, base / "run", env,
                                 extra_args=("--base-directory", str(base), "--disable-api-nodes"))
    try:
        h["_wait_ready"](server, t0, timeout=3 * h["SERVER_START_TIMEOUT_S"])  # the ports import EVA-CLIP, facexlib
    except BaseException:
        h["_shut_down"](server)
        raise
    print(f"\n[pulid-flux] ComfyUI {server.version} with {pack} started in {server.start_seconds:.1f} s")
    failed = [line for line in server.log_text().splitlines()
              if "IMPORT FAILED" in line and ("custom_nodes" in line or pack in line)]
    if failed or server.object_info("ApplyPulidFlux") is None:
        h["_shut_down"](server)
        pytest.fail(f"{pack} did not load: {failed}\n{server.log_tail()}")
    return server, h


@contextlib.contextmanager
def one_big_server_at_a_time():
    """Holds a machine-wide lock while a port's server (6-8 GB: FLUX, PuLID and EVA-CLIP in fp32) runs, so the
    ComfyUI versions that scripts/test_matrix.sh tests side by side never have two of them up at once."""
    import fcntl
    with open(pathlib.Path(tempfile.gettempdir()) / "freecure-pulid-flux-server.lock", "w") as lock:
        t0 = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        waited = time.monotonic() - t0
        if waited > 1:
            print(f"\n[pulid-flux] waited {waited:.0f} s for another test run's port server to finish")
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="class")
def lldacing(request, tmp_path_factory, model_files):
    with one_big_server_at_a_time():
        server, h = _start(request, tmp_path_factory, model_files, LLDACING)
        yield server
        h["_shut_down"](server)


@pytest.fixture(scope="class")
def balazik(request, tmp_path_factory, model_files):
    with one_big_server_at_a_time():
        server, h = _start(request, tmp_path_factory, model_files, BALAZIK)
        yield server
        h["_shut_down"](server)


# ------------------------------------------------------------------------------------------ prompts
KS = dict(seed=SEED, steps=STEPS, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
ADAPTER = "FreeCureE2EOuterSampleLatentShapes"  # tests/e2e_pulid_flux_pack


def _port_nodes(p: dict, adapter: bool = False) -> str:
    """The port's loaders and Apply PuLID Flux ("24") on the plain FLUX MODEL ("1"), and with `adapter` the
    latent_shapes adapter after it ("25"); returns the id of model_pd."""
    p["20"] = {"class_type": "PulidFluxModelLoader", "inputs": {"pulid_file": pfm.PULID_FILE}}
    p["21"] = {"class_type": "PulidFluxEvaClipLoader", "inputs": {}}
    p["22"] = {"class_type": "PulidFluxInsightFaceLoader", "inputs": {"provider": "CPU"}}
    p["23"] = {"class_type": "LoadImage", "inputs": {"image": pfm.REFERENCE_IMAGE}}
    p["24"] = {"class_type": "ApplyPulidFlux", "inputs": {
        "model": ["1", 0], "pulid_flux": ["20", 0], "eva_clip": ["21", 0], "face_analysis": ["22", 0],
        "image": ["23", 0], "weight": 1.0, "start_at": 0.0, "end_at": 1.0}}
    if not adapter:
        return "24"
    p["25"] = {"class_type": ADAPTER, "inputs": {"model": ["24", 0], "key": "PULID_wrappers"}}
    return "25"


def _base() -> dict:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": pfm.FLUX_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "FreeCureE2ETinyFluxConditioning", "inputs": {"seed": 1, "guidance": 3.5}},
        "4": {"class_type": "FreeCureE2ETinyFluxConditioning", "inputs": {"seed": 2, "guidance": 3.5}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": W_PX, "height": H_PX, "batch_size": 1}},
    }


def _save(p: dict, nid: str, label: str, slot: int = 0) -> None:
    p[f"s{nid}"] = {"class_type": "SaveLatent", "inputs": {"samples": [nid, slot],
                                                           "filename_prefix": f"pulid_flux/{label}"}}


def _ksampler(model: str) -> dict:
    return {"class_type": "KSampler", "inputs": {"model": [model, 0], "positive": ["2", 0], "negative": ["4", 0],
                                                 "latent_image": ["5", 0], **KS}}


def _plain_graph(adapter: bool = False, with_fd: bool = True) -> dict:
    """KSampler on the port's MODEL ("12") and (with_fd) on the plain MODEL ("13"), same prompt, seed and latent."""
    p = _base()
    pd = _port_nodes(p, adapter)
    p["12"] = _ksampler(pd)
    _save(p, "12", "plain_pd")
    if with_fd:
        p["13"] = _ksampler("1")
        _save(p, "13", "plain_fd")
    return p


def _freecure_graph(mask_value: float, plain: bool = True, adapter: bool = True) -> dict:
    """FreeCure's stages 1 and 3 (replay), with the plain graph's samplers when `plain`: model_fd = the plain MODEL,
    model_pd = the port's; PuLID changes only the model, so PD and FD share the prompt. The mask: a 32 px box (value
    mask_value) in the top-left corner of the 64 px image."""
    if plain:
        p = _plain_graph(adapter)
        pd = "25" if adapter else "24"
    else:
        p = _base()
        pd = _port_nodes(p, adapter)
    p.update({
        "6": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W_PX, "height": H_PX}},
        "7": {"class_type": "SolidMask", "inputs": {"value": mask_value, "width": 32, "height": 32}},
        "8": {"class_type": "MaskComposite", "inputs": {"destination": ["6", 0], "source": ["7", 0], "x": 0, "y": 0,
                                                        "operation": "add"}},
        "9": {"class_type": "FreeCureFASAConfig", "inputs": {
            "mask": ["8", 0], "omega": -1.0, "layers": "custom", "custom_layers": FASA_BLOCKS, "start_percent": 0.0,
            "end_percent": 1.0, "uncond_blend": 0.0, "mask_resample": "nearest"}},
        "10": {"class_type": "FreeCureFoundationSampler", "inputs": {
            "model_fd": ["1", 0], "positive": ["2", 0], "negative": ["4", 0], "latent_image": ["5", 0], **KS,
            "record": "cond", "layers": "custom", "custom_layers": FASA_BLOCKS, "store": "auto", "offload_kv": True}},
        "11": {"class_type": "FreeCureSampler", "inputs": {
            "model_pd": [pd, 0], "model_fd": ["1", 0], "positive": ["2", 0], "negative": ["4", 0],
            "fd_positive": ["2", 0], "fd_negative": ["4", 0], "latent_image": ["5", 0], **KS, "fasa": ["9", 0],
            "kv": ["10", 1]}},
    })
    _save(p, "10", "fd")
    _save(p, "11", "pd")
    return p


def _latents(server, entry) -> dict:
    from safetensors.numpy import load_file
    out = {}
    for nid, node in entry["outputs"].items():
        if nid.startswith("s") and node.get("latents"):
            (item,) = node["latents"]
            out[nid[1:]] = load_file(server.output_dir / item.get("subfolder", "") / item["filename"])["latent_tensor"]
    return out


def _error(entry) -> dict | None:
    msgs = [m[1] for m in entry["status"].get("messages", []) if m[0] == "execution_error"]
    return msgs[0] if msgs else None


def _run(server, prompt, timeout=900):
    code, body = server.queue(prompt)
    assert code == 200, json.dumps(body, indent=1)
    return server.wait(body["prompt_id"], timeout=timeout)


def _describe_error(err: dict) -> str:
    return f"{err['node_type']} ({err['node_id']}): {err['exception_type']}: {err['exception_message'].strip()}"


# ------------------------------------------------------------------------------------------ lldacing
def _sampling_failure(server, entry, what: str) -> str | None:
    """None when `entry` succeeded; the error when its KSampler failed (the port cannot sample here); a test failure
    for any other error (the files, the face detection: a problem of this test's setup)."""
    err = _error(entry)
    if err is None:
        wu.assert_success(entry)
        return None
    if err["node_type"] != "KSampler":
        pytest.fail(f"{what} failed before sampling on ComfyUI {server.version}: {_describe_error(err)}")
    return _describe_error(err)


@pytest.fixture(scope="class")
def plain(lldacing):
    """The plain-sampler probe with the latent_shapes adapter after the port (tests/e2e_pulid_flux_pack):
    (latents, None) when KSampler samples the port's MODEL on this ComfyUI, else (None, the error)."""
    t0 = time.monotonic()
    entry = _run(lldacing, _plain_graph(adapter=True))
    why = _sampling_failure(lldacing, entry, "the plain probe")
    print(f"\n[pulid-flux] lldacing (+ latent_shapes adapter) plain probe on ComfyUI {lldacing.version}: "
          f"{time.monotonic() - t0:.1f} s, " + (why or "samples"))
    return (None, why) if why else (_latents(lldacing, entry), None)


@pytest.fixture(scope="class")
def freecure_runs(lldacing, plain):
    """get("empty" | "mask") -> (history entry, latents) of the FreeCure graph (adapter on), run once each."""
    if plain[0] is None:
        pytest.skip(f"the lldacing port does not sample on ComfyUI {lldacing.version}, even with the latent_shapes "
                    f"adapter (plain KSampler on its MODEL: {plain[1]})")
    cache = {}

    def get(kind):
        if kind not in cache:
            t0 = time.monotonic()
            entry = wu.assert_success(_run(lldacing, _freecure_graph(0.0 if kind == "empty" else 1.0)))
            print(f"\n[pulid-flux] FreeCure + lldacing, {kind} mask: {time.monotonic() - t0:.1f} s")
            cache[kind] = (entry, _latents(lldacing, entry))
        return cache[kind]
    return get


def _sampler_text(entry) -> str:
    (text,) = entry["outputs"]["11"]["text"]
    return text


WORKFLOW = "freecure_peer_pulid_flux"


class TestLldacing:
    def test_the_workflows_port_nodes_are_the_ports_own(self, lldacing):
        """The port's nodes in the workflow are exactly the ones tests/e2e/peer_nodes.py reads from its source, and
        this server (the real port installed) serves them from the port's module."""
        import peer_nodes
        types = wu.node_types(wu.load_ui(WORKFLOW)) - wu.FRONTEND_ONLY
        pack = peer_nodes.workflow_pack_nodes(WORKFLOW, types)
        assert pack, "the workflow uses the port's nodes"
        module = peer_nodes.python_module(peer_nodes.PACKS[WORKFLOW])
        info = lldacing.object_info()
        assert {t for t in types if info[t]["python_module"] == module} == pack, module

    def test_workflow_api_copy_with_the_real_port(self, lldacing):
        """workflows/api/freecure_peer_pulid_flux.json is the UI workflow converted with the real port's and this
        ComfyUI's /object_info (untitled nodes' titles: as the server names them). FREECURE_WRITE_API_WORKFLOWS=1
        writes it."""
        info = lldacing.object_info()
        ui = wu.load_ui(WORKFLOW)
        assert not {t for t in wu.node_types(ui) - wu.FRONTEND_ONLY if t not in info}
        converted = wu.ui_to_api(ui, info)
        if os.environ.get("FREECURE_WRITE_API_WORKFLOWS") == "1":
            wu.write_api(WORKFLOW, converted)
        untitled = {str(n["id"]) for n in ui["nodes"] if not n.get("title") and n["type"] not in wu.FRONTEND_ONLY}
        strip = lambda prompt: {k: {**v, "_meta": None} if k in untitled else v for k, v in prompt.items()}  # noqa
        assert strip(converted) == strip(wu.load_api(WORKFLOW))

    def test_the_pinned_port_alone(self, lldacing):
        """Recorded (printed): KSampler on the pinned port's MODEL without the adapter. Where it fails, it must be
        a TypeError calling one of the port's functions with an argument it predates (its OUTER_SAMPLE wrapper:
        latent_shapes; its forward_orig: 0.33's timestep_zero_index)."""
        entry = _run(lldacing, _plain_graph(adapter=False, with_fd=False))
        why = _sampling_failure(lldacing, entry, "Apply PuLID Flux")
        print(f"\n[pulid-flux] pinned lldacing port alone, KSampler on ComfyUI {lldacing.version}: "
              + (why or "samples"))
        if why is not None:
            err = _error(entry)
            assert err["exception_type"] == "TypeError", why
            assert re.search(r"pulid_\w+\(\) got an unexpected keyword argument", err["exception_message"]), why

    def test_where_the_port_cannot_sample_freecure_fails_too(self, lldacing, plain):
        """Recorded (printed) where even the adapted port cannot sample: FreeCure on its MODEL fails as well (it
        neither samples without the port nor silently without FASA)."""
        if plain[0] is not None:
            pytest.skip(f"the lldacing port (+ adapter) samples on ComfyUI {lldacing.version}")
        entry = _run(lldacing, _freecure_graph(1.0, plain=False))
        err = _error(entry)
        print(f"\n[pulid-flux] FreeCure + lldacing (+ adapter) on ComfyUI {lldacing.version}: "
              + (_describe_error(err) if err else entry["status"]["status_str"]))
        assert err is not None and err["node_type"] in ("FreeCureFoundationSampler", "FreeCureSampler"), \
            entry["status"]
        # not the port's TypeError from inside FreeCure's sampling: refused by name, with the argument it lacks
        assert err["exception_type"] != "TypeError", _describe_error(err)
        assert "lldacing/ComfyUI_PuLID_Flux_ll" in err["exception_message"], _describe_error(err)
        assert "does not accept" in err["exception_message"], _describe_error(err)

    def test_the_port_really_patches_pd(self, lldacing, plain):
        lat, why = plain
        if lat is None:
            pytest.skip(f"the lldacing port does not sample on ComfyUI {lldacing.version}: {why}")
        assert lat["12"].shape == (1, 16, H_PX // 8, W_PX // 8) and np.isfinite(lat["12"]).all()
        assert not np.array_equal(lat["12"], lat["13"]), "Apply PuLID Flux did not change PD (no face found?)"
        assert "No face" not in lldacing.log_text()

    def test_the_eva_file_holds_every_visual_weight(self, lldacing, plain):
        """The EVA-CLIP checkpoint is loaded with strict=False: the port's log of missing keys may name only the
        text tower, logit_scale and the RoPE tables (computed), so no visual weight keeps an unseeded init."""
        import ast
        marker = "incompatible_keys.missing_keys:"  # 0.33 prefixes its log lines with a coloured [INFO]
        lines = [line for line in lldacing.log_text().splitlines() if marker in line]
        assert lines, "the port did not log the EVA-CLIP load"
        missing = ast.literal_eval(lines[0].split(marker, 1)[1].strip())
        stray = [k for k in missing if not (k.startswith("text.") or k == "logit_scale" or ".freqs_" in k)]
        assert not stray, stray

    def test_fd_is_a_plain_sampler_on_model_fd(self, freecure_runs):
        for kind in ("empty", "mask"):
            _, lat = freecure_runs(kind)
            assert np.array_equal(lat["10"], lat["13"]), f"{kind}: FreeCure Foundation Sampler != KSampler on model_fd"

    def test_empty_mask_pd_is_the_plain_port_sampler(self, freecure_runs):
        entry, lat = freecure_runs("empty")
        assert np.array_equal(lat["11"], lat["12"]), "an empty mask is not the plain PuLID-FLUX PD"
        assert _sampler_text(entry).startswith("FASA did not run"), _sampler_text(entry)

    def test_mask_runs_fasa_at_every_block_and_step(self, freecure_runs):
        entry, lat = freecure_runs("mask")
        text = _sampler_text(entry)
        # the chosen blocks, "double": double block 0, the model's only block (and the one the port patches)
        assert (pfm.N_DOUBLE, pfm.N_SINGLE) == (1, 0) and pfm.used_pulid_ca() == [0]
        expected = STEPS * pfm.N_DOUBLE  # cfg 1: one cond row, one attention call per block and step
        assert text.startswith("FASA ran at every expected place") and "mode replay" in text, text
        assert f"places {expected}/{expected}" in text and f"layers hit {pfm.N_DOUBLE}/{pfm.N_DOUBLE}" in text, text
        calls = re.search(r"attention calls (\d+)", text)
        assert calls and int(calls.group(1)) == expected, text
        _, lat_empty = freecure_runs("empty")
        assert np.isfinite(lat["11"]).all()
        assert not np.array_equal(lat["11"], lat_empty["11"]), "FASA did not change the PuLID-FLUX PD"
        assert not np.array_equal(lat["11"], lat["12"])


# ------------------------------------------------------------------------------------------ balazik
class TestBalazik:
    def test_the_ports_own_sampling_after_apply(self, balazik):
        """Recorded per ComfyUI version (printed): KSampler on the port's MODEL, then KSampler on the plain MODEL
        (the same loaded model, which the port patched in place). On 0.3.75 and 0.33 both fail with a TypeError from
        calling the port's forward_orig (8 arguments) with ComfyUI's newer ones."""
        for label, model in (("the port's MODEL", "24"), ("the plain MODEL after Apply", "1")):
            p = _base()
            _port_nodes(p)
            p["12"] = {"class_type": "KSampler", "inputs": {"model": [model, 0], "positive": ["2", 0],
                                                            "negative": ["4", 0], "latent_image": ["5", 0], **KS}}
            _save(p, "12", "balazik_plain")
            entry = _run(balazik, p)
            err = _error(entry)
            print(f"\n[pulid-flux] balazik: KSampler on {label}, ComfyUI {balazik.version}: "
                  f"{entry['status']['status_str']}" + (f" - {_describe_error(err)}" if err else ""))
            assert "No face" not in balazik.log_text(), "the balazik Apply found no face: nothing was patched"
            assert err is not None and err["node_type"] == "KSampler", entry["status"]
            assert err["exception_type"] == "TypeError", _describe_error(err)
            assert "forward_orig() got an unexpected keyword argument" in err["exception_message"], _describe_error(err)

    def test_freecure_refuses_the_port_by_name(self, balazik):
        entry = _run(balazik, _freecure_graph(1.0, plain=False, adapter=False))
        err = _error(entry)
        assert err is not None, entry["status"]
        print(f"\n[pulid-flux] FreeCure after balazik's Apply on ComfyUI {balazik.version}: {_describe_error(err)}")
        assert err["node_type"] in ("FreeCureFoundationSampler", "FreeCureSampler"), _describe_error(err)
        assert err["exception_type"] != "TypeError", _describe_error(err)
        assert "balazik/ComfyUI-PuLID-Flux" in err["exception_message"], _describe_error(err)
        assert "lldacing/ComfyUI_PuLID_Flux_ll" in err["exception_message"], _describe_error(err)
        # the server keeps serving
        ok = _run(balazik, {"5": _base()["5"], "s5": {"class_type": "SaveLatent", "inputs": {
            "samples": ["5", 0], "filename_prefix": "pulid_flux/after"}}})
        wu.assert_success(ok)
