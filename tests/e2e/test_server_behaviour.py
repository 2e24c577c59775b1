"""What the example workflows really do, on the headless server with the tiny models (issue 18, behaviour (b)).

* FreeCure Guider's output is the pair [PD; FD]: through FreeCure Split Pair its halves are exactly FreeCure Sampler's
  pd_latent and fd_latent for the same graph (lockstep, same seed, steps, cfg, sampler and scheduler), and the two
  halves differ, so a swapped order could not pass. Latents are compared exactly (SaveLatent files), not as images.
* The face-parsing workflow's mask reaches FASA: FreeCure Sampler's node text reports FASA at every expected place and
  a mask coverage per layer grid that is not zero and equals the Attribute Mask output's share of each FASA layer's
  token grid (computed here from that mask, saved losslessly as a PNG of a 0/1 mask). The parsed image is the test
  portrait, parsed whole, and the image is sampled at 256x256 (see the test for why).
"""
from __future__ import annotations

import itertools
import pathlib
import re
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
import test_server_parsing as tsp  # noqa: E402
import workflow_utils as wu  # noqa: E402

_seeds = itertools.count(3000)
SAMPLED = 256  # image size of the face-parsing run


def _latent(server, entry: dict, node_id: str):
    """The tensor one SaveLatent node wrote."""
    import safetensors.torch
    (path,) = server.output_files({"outputs": {node_id: entry["outputs"][node_id]}}, kind="latents")
    return safetensors.torch.load_file(str(path))["latent_tensor"]


def _save_latent(prompt: dict, source: list, prefix: str) -> str:
    return wu.add_node(prompt, "SaveLatent", {"samples": source, "filename_prefix": prefix})


@pytest.mark.e2e
def test_guider_pair_order_through_split_pair_equals_freecure_sampler(comfy_server):
    p = tsf._small("freecure_custom_sampler", comfy_server, "freecure_e2e_behaviour/custom")
    guider, noise = wu.only_node(p, "FreeCureGuider"), wu.only_node(p, "RandomNoise")
    split, sched = wu.only_node(p, "FreeCureSplitPair"), wu.only_node(p, "BasicScheduler")
    seed = next(_seeds)
    p[noise]["inputs"]["noise_seed"] = seed
    g = p[guider]["inputs"]
    sampler = wu.add_node(p, "FreeCureSampler", {
        "seed": seed, "steps": p[sched]["inputs"]["steps"], "cfg": g["cfg"],
        "sampler_name": p[wu.only_node(p, "KSamplerSelect")]["inputs"]["sampler_name"],
        "scheduler": p[sched]["inputs"]["scheduler"], "denoise": p[sched]["inputs"]["denoise"],
        "model_pd": g["model_pd"], "model_fd": g["model_fd"], "positive": g["positive"], "negative": g["negative"],
        "fd_positive": g["fd_positive"], "fd_negative": g["fd_negative"],
        "latent_image": p[wu.only_node(p, "SamplerCustomAdvanced")]["inputs"]["latent_image"], "fasa": g["fasa"]})
    outs = {name: _save_latent(p, src, f"freecure_e2e_behaviour/{name}") for name, src in {
        "split_pd": [split, 0], "split_fd": [split, 1], "sampler_pd": [sampler, 0], "sampler_fd": [sampler, 1]}.items()}
    p = wu.keep_only(p, *outs.values())
    entry = wu.assert_success(comfy_server.run(p, timeout=180))
    got = {name: _latent(comfy_server, entry, nid) for name, nid in outs.items()}
    assert got["split_pd"].shape == got["sampler_pd"].shape == (1, 4, tsf.HEIGHT // 8, tsf.WIDTH // 8)
    pd_diff = (got["split_pd"] - got["sampler_pd"]).abs().max().item()
    fd_diff = (got["split_fd"] - got["sampler_fd"]).abs().max().item()
    halves = (got["sampler_pd"] - got["sampler_fd"]).abs().max().item()
    assert pd_diff == 0 and fd_diff == 0, (pd_diff, fd_diff)
    assert halves > 1e-2, f"PD and FD are alike ({halves}): the order check would be vacuous"
    (text,) = entry["outputs"][sampler]["text"]
    assert text.startswith("FASA ran at every expected place"), text


def _coverage_range(text: str) -> tuple[float, float]:
    m = re.search(r"mask coverage per layer grid ([\d.]+)(?:-([\d.]+))?%", text)
    assert m, text
    return float(m.group(1)), float(m.group(2) or m.group(1))


@pytest.mark.e2e
def test_face_parsing_mask_reaches_fasa_with_its_coverage(comfy_server):
    """The face-parsing workflow with the test portrait as the parsed image (test_server_parsing's prompt), parsed
    whole, with the workflow's prompt, sampled at 256x256. (At 64x64 the 8x8 token grid samples none of the random
    parser's speckled hair/glasses pixels, on the tiny model's noise image or on the portrait, and FreeCure rightly
    reports an empty mask on every layer grid.)"""
    import numpy as np
    import torch
    from PIL import Image

    from freecure_core.fasa.masks import downsampled_grid, resample_mask

    p, ids = tsp._portrait_prompt(comfy_server, "freecure_e2e_behaviour/parsing", prompt_text=tsp.FD_PROMPT)
    p[wu.only_node(p, "FreeCureFaceParse")]["inputs"]["mode"] = "whole image"  # the random parser's regions are large
    latent = p[wu.only_node(p, "EmptyLatentImage")]["inputs"]
    latent["width"] = latent["height"] = SAMPLED  # a 32x32 token grid samples the speckled random-parser mask
    sampler, fasa = wu.only_node(p, "FreeCureSampler"), wu.only_node(p, "FreeCureFASAConfig")
    assert p[fasa]["inputs"]["mask"] == [ids["mask"], 0] and p[sampler]["inputs"]["fasa"] == [fasa, 0]
    assert p[ids["mask"]]["inputs"]["feather"] == 0.0  # a 0/1 mask: its PNG is exact
    as_image = wu.add_node(p, "MaskToImage", {"mask": [ids["mask"], 0]})
    saved_mask = wu.add_node(p, "SaveImage", {"images": [as_image, 0],
                                              "filename_prefix": "freecure_e2e_behaviour/mask"})
    p = wu.keep_only(p, ids["result"], saved_mask)
    entry = wu.assert_success(comfy_server.run(p, timeout=240))

    (png,) = tsp._saved_by(comfy_server, entry, saved_mask)
    with Image.open(png) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    assert set(np.unique(pixels)) <= {0.0, 1.0}, "the mask is not binary"
    mask = torch.from_numpy(pixels)[None]
    assert mask.shape[-2:] == (tsp.PORTRAIT_SIZE, tsp.PORTRAIT_SIZE) and mask.sum() > 0, "no hair/glasses"

    (text,) = entry["outputs"][sampler]["text"]
    assert text.startswith("FASA ran at every expected place") and "mode lockstep" in text, text
    m = re.search(r"places (\d+)/(\d+)", text)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) > 0, text
    # the tiny SD1.5's reference layers are its decoder at both levels: the latent grid and half of it
    latent_hw = (SAMPLED // 8, SAMPLED // 8)
    shares = [100 * float(resample_mask(mask, downsampled_grid(latent_hw, level)).mean()) for level in (0, 1)]
    lo, hi = _coverage_range(text)
    assert lo > 0, text
    assert (lo, hi) == (round(min(shares), 1), round(max(shares), 1)), (text, shares)
