"""FASA for FLUX end to end on the real headless server (issue 10): a tiny FLUX-shaped diffusion model file in
models/diffusion_models (ComfyUI's UNETLoader detects it as FLUX), conditioning from the test pack (the tiny model has
no text encoders), a drawn box mask, and the FreeCure nodes users already have:

* FreeCure Foundation Sampler records the FD image keys/values; its latent equals a core KSampler run on FD's prompt;
* FreeCure Sampler replays them with FASA (omega -1 = FLUX's 2.0) and changes the PD result; with an empty mask it
  returns exactly the core KSampler's PD latent; lockstep (no kv) agrees with replay;
* a replay with another seed is refused with a node error that names the fix, and the server keeps serving.
"""
from __future__ import annotations

import copy
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workflow_utils as wu  # noqa: E402

FLUX_FILE = "tiny_flux.safetensors"
W_PX, H_PX, STEPS, SEED = 96, 64, 3, 7


@pytest.fixture(scope="module")
def flux_file(comfy_server):
    from safetensors.torch import save_file

    from support.comfy_env import import_comfy
    import_comfy()
    from support.tiny_flux import diffusion_model_state_dict
    folder = comfy_server.tmp / "models" / "diffusion_models"
    folder.mkdir(parents=True, exist_ok=True)
    save_file(diffusion_model_state_dict(seed=0), str(folder / FLUX_FILE))
    return FLUX_FILE


def _graph(mask_value_box=1.0, kv=True, fd_seed=SEED):
    ks = dict(seed=SEED, steps=STEPS, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)
    p = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": FLUX_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "FreeCureE2ETinyFluxConditioning", "inputs": {"seed": 1, "guidance": 3.5}},
        "3": {"class_type": "FreeCureE2ETinyFluxConditioning", "inputs": {"seed": 3, "guidance": 3.5}},
        "4": {"class_type": "FreeCureE2ETinyFluxConditioning", "inputs": {"seed": 2, "guidance": 3.5}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": W_PX, "height": H_PX, "batch_size": 1}},
        "6": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W_PX, "height": H_PX}},
        "7": {"class_type": "SolidMask", "inputs": {"value": mask_value_box, "width": 32, "height": 32}},
        "8": {"class_type": "MaskComposite", "inputs": {"destination": ["6", 0], "source": ["7", 0], "x": 0, "y": 0,
                                                         "operation": "add"}},
        "9": {"class_type": "FreeCureFASAConfig", "inputs": {"mask": ["8", 0], "omega": -1.0, "layers": "reference",
                                                             "custom_layers": "", "start_percent": 0.0,
                                                             "end_percent": 1.0, "uncond_blend": 0.0,
                                                             "mask_resample": "nearest"}},
        "10": {"class_type": "FreeCureFoundationSampler", "inputs": {
            "model_fd": ["1", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
            **dict(ks, seed=fd_seed), "record": "cond", "layers": "reference", "custom_layers": "", "store": "auto",
            "offload_kv": True}},
        "11": {"class_type": "FreeCureSampler", "inputs": {
            "model_pd": ["1", 0], "model_fd": ["1", 0], "positive": ["2", 0], "negative": ["4", 0],
            "fd_positive": ["3", 0], "fd_negative": ["4", 0], "latent_image": ["5", 0], **ks, "fasa": ["9", 0]}},
        "12": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["4", 0],
                                                    "latent_image": ["5", 0], **ks}},
        "13": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["3", 0], "negative": ["4", 0],
                                                    "latent_image": ["5", 0], **ks}},
    }
    if kv:
        p["11"]["inputs"]["kv"] = ["10", 1]
    for nid, label in (("11", "pd"), ("12", "plain_pd"), ("10", "fd"), ("13", "plain_fd")):
        p[f"s{nid}"] = {"class_type": "SaveLatent", "inputs": {"samples": [nid, 0],
                                                                "filename_prefix": f"freecure_e2e_flux/{label}"}}
    return p


def _latents(server, entry) -> dict:
    from safetensors.numpy import load_file
    out = {}
    for nid in ("s11", "s12", "s10", "s13"):
        (item,) = entry["outputs"][nid]["latents"]
        out[nid[1:]] = load_file(server.output_dir / item.get("subfolder", "") / item["filename"])["latent_tensor"]
    return out


@pytest.mark.e2e
def test_flux_replay_lockstep_and_empty_mask_on_the_server(comfy_server, flux_file):
    entry = wu.assert_success(comfy_server.run(_graph(), timeout=300))
    lat = _latents(comfy_server, entry)
    assert lat["11"].shape == (1, 16, H_PX // 8, W_PX // 8) and np.isfinite(lat["11"]).all()
    assert np.array_equal(lat["10"], lat["13"]), "recording changed the foundation branch"
    assert not np.array_equal(lat["11"], lat["12"]), "FASA did not change the FLUX PD result"

    empty = wu.assert_success(comfy_server.run(_graph(mask_value_box=0.0), timeout=300))
    lat0 = _latents(comfy_server, empty)
    assert np.array_equal(lat0["11"], lat0["12"]), "an empty mask is not plain FLUX sampling"

    lock = wu.assert_success(comfy_server.run(_graph(kv=False), timeout=300))
    assert np.allclose(_latents(comfy_server, lock)["11"], lat["11"], atol=5e-3)


@pytest.mark.e2e
def test_flux_replay_with_another_seed_is_refused_then_the_server_serves(comfy_server, flux_file):
    p = _graph(fd_seed=SEED + 1)
    code, body = comfy_server.queue(p)
    assert code == 200, body
    entry = comfy_server.wait(body["prompt_id"], timeout=300)
    assert entry["status"]["status_str"] == "error"
    msgs = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert msgs and msgs[0][1]["node_type"] == "FreeCureSampler" and "same seed" in msgs[0][1]["exception_message"]
    wu.assert_success(comfy_server.run(copy.deepcopy(_graph()), timeout=300))
