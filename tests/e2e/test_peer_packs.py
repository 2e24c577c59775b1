"""The peer-pack workflows (workflows/freecure_peer_{instantid,pulid,faceid}.json) on a headless ComfyUI with the
REAL packs installed: cubiq's ComfyUI_InstantID, PuLID_ComfyUI and ComfyUI_IPAdapter_plus, unmodified, from .peers/
(conftest ``comfy_peer_server``; skipped, saying why, without them). Their model files are random, in each pack's
real layout and folder, sized for the tiny SDXL wherever the pack allows (tests/support/peer_models.py,
tests/e2e/make_peer_models.py). The reference photo has the blue square the stand-in face detectors report.

Each workflow runs from its API copy with only the checkpoint (tiny SDXL), size (64²), steps (3), reference photo and
face parser changed; the pack's own nodes keep the workflow's widget values and file names. For each one:

* it runs end to end and saves a 64² PNG; the pack really patched PD: FreeCure Sampler's model_pd carries the
  pack's 70 attn2 replace patches (PuLID returns its model unpatched when it finds no face: this is where that
  would show); the pack-specific evidence (InstantID's keypoint image at the photo's size; FaceID's LoRA loaded
  with every key used; no PuLID "no face" warning) is checked too;
* (a) with an empty FASA mask, PD (replay and lockstep) is bit-identical to a plain KSampler on the pack's model and
  PD conditioning with the same seed, steps, cfg, sampler and scheduler, and FreeCure Sampler says FASA did not run;
  (d) that KSampler differs from one on the MODEL going into the pack's node with the same conditioning (the pack's
  attention patch changes the result);
* (b) FD, from FreeCure Sampler (replay and lockstep) and from the Foundation Sampler, is bit-identical to a plain
  KSampler on model_fd with fd_positive/fd_negative, with an empty and with a full mask: the pack's identity never
  reaches FD rows. model_fd is FreeCure Zero-ID Model on model_pd (the paper's zero-identity FD): it differs from
  the MODEL going into the pack (the adapter's zero-identity tokens are there) and from PD;
* (c) with a full mask FASA ran at every expected (step, layer) place, by FreeCure Sampler's own account (replay and
  lockstep: places acted = steps x layers), PD moved away from the empty-mask PD, and replay and lockstep agree.

(a)-(d) come from one prompt per workflow; all latents are compared as SaveLatent files (exact), not as 8-bit
images.
"""
from __future__ import annotations

import json
import pathlib
import re
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peer_nodes  # noqa: E402
import test_server_freecure as tsf  # noqa: E402
import workflow_utils as wu  # noqa: E402
from make_peer_models import PORTRAIT, SDXL_CKPT  # noqa: E402
from support import peer_models  # noqa: E402

PARSER = "tiny_bisenet.safetensors"
SIZE, STEPS = 64, 3
SAMPLER_KEYS = ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")

pytestmark = pytest.mark.e2e


def _small(name: str, prefix: str) -> dict:
    """The API workflow on the tiny SDXL at 64², 3 steps, the test photo and parser; pack nodes unchanged."""
    p = wu.shrink(wu.load_api(name), SDXL_CKPT, SIZE, SIZE, STEPS, prefix=prefix)
    p[wu.only_node(p, "LoadImage")]["inputs"]["image"] = PORTRAIT
    wu.use_tiny_parser(p, PARSER)
    return p


def _saved_latent(server, entry: dict, node_id: str) -> np.ndarray:
    from safetensors.numpy import load_file
    (item,) = entry["outputs"][node_id]["latents"]
    return load_file(server.output_dir / item.get("subfolder", "") / item["filename"])["latent_tensor"]


def _text(entry: dict, node_id: str) -> dict:
    (text,) = entry["outputs"][node_id]["text"]
    return json.loads(text)


# ------------------------------------------------------------------------------------------ end to end
def _expected_attn2_keys(name: str) -> set[str]:
    """The attn2 replace keys each pack sets on an SDXL UNet (str of (block, id, transformer index)): input blocks
    4, 5, 7, 8 and output blocks 0-5 (60 layers), then 10 in the middle block. PuLID and IP-Adapter key the middle
    block as ("middle", 1, i), which ComfyUI never looks up (its middle block is ("middle", 0)), so their middle
    layers get no identity; InstantID's split patch node uses ("middle", 0, i)."""
    keys = [(kind, block, i) for kind, block, depth in peer_models.SDXL_ADAPTER_BLOCKS if kind != "middle"
            for i in range(depth)]
    middle = 0 if name == "freecure_peer_instantid" else 1
    return {str(k) for k in keys + [("middle", middle, i) for i in range(10)]}


@pytest.fixture(scope="module")
def runs(comfy_peer_server):
    """Each peer workflow run once as shipped (shrunk), with a patch report on FreeCure Sampler's model_pd."""
    cache = {}

    def get(name):
        if name not in cache:
            p = _small(name, f"freecure_e2e_peers/{name}")
            report = wu.add_node(p, "FreeCureE2EModelPatches",
                                 {"model": p[wu.only_node(p, "FreeCureSampler")]["inputs"]["model_pd"], "label": name})
            log_from = len(comfy_peer_server.log_text())
            entry = wu.assert_success(comfy_peer_server.run(p, timeout=600))
            cache[name] = (p, entry, report, comfy_peer_server.log_text()[log_from:])
        return cache[name]
    return get


@pytest.mark.parametrize("name", wu.PEER_WORKFLOW_NAMES)
def test_peer_workflow_runs_with_the_real_pack_patching_pd(comfy_peer_server, runs, name):
    p, entry, report, log = runs(name)
    (png,) = comfy_peer_server.output_files(entry)
    px = tsf._pixels(png)
    assert px.shape == (SIZE, SIZE, 3), px.shape
    patches = _text(entry, report)
    attn2 = patches["patches_replace"].get("attn2", {})
    assert set(attn2) == _expected_attn2_keys(name), sorted(attn2)
    modules = set(attn2.values())
    # one patch class, from the pack (ComfyUI names a custom node's modules by its folder's path)
    assert len(modules) == 1 and peer_nodes.PACKS[name] in modules.pop(), attn2
    assert set(patches["patches_replace"]) == {"attn2"}, patches  # no attn1 replace: nothing FreeCure must refuse
    assert patches["weight_patches"] == (560 if name == "freecure_peer_faceid" else 0), patches
    if name == "freecure_peer_instantid":
        previews = [i for i in tsf._images(comfy_peer_server, entry) if i["type"] == "temp"]
        assert (640, 640, 3) in {tsf._view_pixels(comfy_peer_server, i).shape for i in previews}
    if name == "freecure_peer_pulid":  # pulid.py's messages when insightface finds no face
        assert "pulid warning" not in log and "Warning: No face detected in image" not in log, log[-3000:]
    if name == "freecure_peer_faceid":  # the unified loader's FaceID LoRA: 8 projections x 70 blocks, all used
        assert "lora key not loaded" not in log and "missing clip vision" not in log, log[-3000:]


# ------------------------------------------------------------------------------------------ FreeCure vs plain
MASKS = {"empty": 0.0, "full": 1.0}


def _comparison(name: str) -> tuple[dict, dict]:
    """One prompt: the shrunk workflow's stage 1, then for an empty and a full FASA mask (SolidMask) FreeCure Sampler
    twice, replaying stage 1's kv as the workflow does and in lockstep (no kv), and plain KSamplers with the same
    seed/steps/cfg/sampler/scheduler/denoise and latent: plain_pd (the pack's model_pd, PD conditioning), plain_fd
    (model_fd, FD conditioning) and nopack (model_fd, PD conditioning; only where that is another graph than
    plain_fd). One prompt: PuLID's EVA-CLIP has the pack's own random init (from torch's global RNG) for every
    weight its small checkpoint lacks, so if ComfyUI ran its loader again for another prompt, that prompt could see
    another identity; within one prompt every sampler sees the same patched model.
    Returns (prompt, {label: SaveLatent node id})."""
    p = _small(name, f"freecure_e2e_peers/{name}")
    fc, found = wu.only_node(p, "FreeCureSampler"), wu.only_node(p, "FreeCureFoundationSampler")
    ins, fasa = p[fc]["inputs"], p[wu.only_node(p, "FreeCureFASAConfig")]["inputs"]
    outputs = {"found_fd": [found, 0]}
    samplers = {}
    for tag, value in MASKS.items():
        mask = wu.add_node(p, "SolidMask", {"value": value, "width": SIZE, "height": SIZE})
        config = wu.add_node(p, "FreeCureFASAConfig", dict(fasa, mask=[mask, 0]))
        replay = wu.add_node(p, "FreeCureSampler", dict(ins, fasa=[config, 0]))
        lock = wu.add_node(p, "FreeCureSampler", {k: v for k, v in dict(ins, fasa=[config, 0]).items() if k != "kv"})
        outputs.update({f"{tag}_replay_pd": [replay, 0], f"{tag}_replay_fd": [replay, 1],
                        f"{tag}_lock_pd": [lock, 0], f"{tag}_lock_fd": [lock, 1]})
        samplers.update({f"{tag}_replay": replay, f"{tag}_lock": lock})

    def ksampler(model, positive, negative):
        return [wu.add_node(p, "KSampler", {**{k: ins[k] for k in SAMPLER_KEYS}, "model": model, "positive": positive,
                                            "negative": negative, "latent_image": ins["latent_image"]}), 0]
    zero_id = ins["model_fd"][0]
    assert p[zero_id]["class_type"] == "FreeCureZeroIdentityModel" and p[zero_id]["inputs"]["model_pd"] == \
        ins["model_pd"], "model_fd is FreeCure Zero-ID Model on model_pd"
    unpatched = p[ins["model_pd"][0]]["inputs"]["model"]  # the MODEL going into the pack's node
    outputs["plain_pd"] = ksampler(ins["model_pd"], ins["positive"], ins["negative"])
    outputs["plain_fd"] = ksampler(ins["model_fd"], ins["fd_positive"], ins["fd_negative"])
    outputs["nopack"] = ksampler(unpatched, ins["positive"], ins["negative"])
    outputs["nopack_fd"] = ksampler(unpatched, ins["fd_positive"], ins["fd_negative"])
    saves = {k: wu.add_node(p, "SaveLatent", {"samples": v, "filename_prefix": f"freecure_e2e_peers/{name}_{k}"})
             for k, v in outputs.items()}
    return wu.keep_only(p, *saves.values(), *samplers.values()), saves, samplers


@pytest.fixture(scope="module")
def latents(comfy_peer_server):
    """latents(name) -> {label: latent} of the comparison prompt, run once per workflow."""
    cache = {}

    def get(name):
        if name not in cache:
            p, saves, samplers = _comparison(name)
            entry = wu.assert_success(comfy_peer_server.run(p, timeout=600))
            cache[name] = {k: _saved_latent(comfy_peer_server, entry, nid) for k, nid in saves.items()}
            cache[name]["text"] = {k: entry["outputs"][nid]["text"][0] for k, nid in samplers.items()}
        return cache[name]
    return get


@pytest.mark.parametrize("name", wu.PEER_WORKFLOW_NAMES)
def test_empty_mask_pd_is_the_packs_plain_ksampler(latents, name):
    lat = latents(name)
    assert lat["plain_pd"].shape == (1, 4, SIZE // 8, SIZE // 8) and np.isfinite(lat["plain_pd"]).all()
    for label in ("empty_replay_pd", "empty_lock_pd"):
        assert np.array_equal(lat[label], lat["plain_pd"]), f"{label}: PD with an empty mask is not plain sampling"
    for label in ("empty_replay", "empty_lock"):
        assert lat["text"][label].startswith("FASA did not run: the mask is empty"), lat["text"][label]
    # (d) the pack's patch changes the result: the same conditioning on the MODEL going into the pack samples otherwise
    assert not np.array_equal(lat["plain_pd"], lat["nopack"]), "the pack's model samples like the unpatched one"


@pytest.mark.parametrize("name", wu.PEER_WORKFLOW_NAMES)
def test_fd_is_plain_sampling_of_model_fd(latents, name):
    lat = latents(name)
    for label in ("found_fd",) + tuple(f"{tag}_{mode}_fd" for tag in MASKS for mode in ("replay", "lock")):
        assert np.array_equal(lat[label], lat["plain_fd"]), f"{label} differs from a plain KSampler on model_fd"
    # model_fd = FreeCure Zero-ID Model: the adapter's zero-identity tokens act (FD is not the model without the
    # adapter) and carry no identity (FD is not PD)
    assert not np.array_equal(lat["plain_fd"], lat["nopack_fd"]), "Zero-ID FD equals the model without the pack"
    assert not np.array_equal(lat["plain_fd"], lat["plain_pd"]), "Zero-ID FD equals PD"


@pytest.mark.parametrize("name", wu.PEER_WORKFLOW_NAMES)
def test_full_mask_fasa_runs_everywhere_and_changes_pd(latents, name):
    lat = latents(name)
    for mode in ("replay", "lock"):  # FreeCure Sampler's account: every (step, layer) place of the window
        text = lat["text"][f"full_{mode}"]
        m = re.search(r"layers hit (\d+)/(\d+); \(step, layer\) places (\d+)/(\d+)", text)
        assert text.startswith("FASA ran at every expected place") and m, text
        hit, layers, acted, expected = map(int, m.groups())
        assert hit == layers > 0 and acted == expected == STEPS * layers, text
    for mode in ("replay", "lock"):
        change = float(np.abs(lat[f"full_{mode}_pd"] - lat[f"empty_{mode}_pd"]).max())
        assert change > 1e-3 * float(np.abs(lat["plain_pd"]).max()), f"{mode}: a full mask moved PD by {change} only"
    # replay (stage 1's record) and lockstep (FD sampled alongside) give the same PD on the pack's model
    assert np.allclose(lat["full_replay_pd"], lat["full_lock_pd"], rtol=0, atol=5e-3), \
        float(np.abs(lat["full_replay_pd"] - lat["full_lock_pd"]).max())
