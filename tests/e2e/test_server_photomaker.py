"""The PhotoMaker example workflow on a real headless ComfyUI, through core PhotoMakerLoader and the stock
CheckpointLoaderSimple.

PhotoMaker v1 fuses 2048-wide SDXL text embeddings, so the server has a second tiny SDXL checkpoint with SDXL's real
tokenizers and text encoders (3-layer towers at the real widths 768 + 1280) and a UNet with context 2048, and a
PhotoMaker file in the real id-encoder layout with a 1-layer vision tower (tests/e2e/make_identity_models.py; the
test-only pack tests/e2e_pack registers the checkpoint's model config and shrinks core PhotoMakerLoader's vision
config, so a loader that built the full ViT-L would fail its strict load_state_dict).

* the API workflow runs end to end: PhotoMakerLoader -> FreeCure PhotoMaker Encode Pair -> foundation sampler -> face
  parsing -> attribute mask -> FASA -> FreeCure Sampler -> SaveImage, writing a 64x64 image;
* the pair's two conditionings really differ in the server: sampled alone, FD gives the image of a plain text encode
  of the trigger-free prompt and PD a different one;
* a prompt without the trigger word fails in the pair node with FreeCure's trigger message.
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
import workflow_utils as wu  # noqa: E402
from make_identity_models import PHOTOMAKER, SDXL_2048_CKPT  # noqa: E402

PARSER = "tiny_bisenet.safetensors"
PORTRAIT = "astronaut_640.png"
SIZE, STEPS = 64, 3
NAME = "freecure_photomaker"
TRIGGER_ERROR = "needs the trigger word 'photomaker' right after the class word"


def _small(prefix: str) -> dict:
    """The API workflow with the tiny SDXL-2048 checkpoint and PhotoMaker, 64x64 and 3 steps, everything on CPU."""
    p = wu.shrink(wu.load_api(NAME), SDXL_2048_CKPT, SIZE, SIZE, STEPS, prefix=prefix)
    p[wu.only_node(p, "PhotoMakerLoader")]["inputs"]["photomaker_model_name"] = PHOTOMAKER
    p[wu.only_node(p, "LoadImage")]["inputs"]["image"] = PORTRAIT
    wu.use_tiny_parser(p, PARSER)
    return p


_ok = wu.assert_success


def _saved_latent(server, entry: dict, node_id: str):
    """The latent a SaveLatent node wrote (numpy, (B, 4, h, w))."""
    from safetensors.numpy import load_file
    (item,) = entry["outputs"][node_id]["latents"]
    assert item["type"] == "output", item
    return load_file(server.output_dir / item.get("subfolder", "") / item["filename"])["latent_tensor"]


@pytest.mark.e2e
def test_photomaker_workflow_runs_on_tiny_models(comfy_server):
    p = _small("freecure_e2e_photomaker/run")
    entry = _ok(comfy_server.run(p, timeout=300))
    (png,) = comfy_server.output_files(entry)
    assert png.is_file() and png.suffix == ".png", png
    px = tsf._pixels(png)
    assert px.shape == (SIZE, SIZE, 3) and px.std() > 0, px.shape
    previews = [i for i in tsf._images(comfy_server, entry) if i["type"] == "temp"]
    assert len(previews) == 2, previews  # the foundation image and the attribute mask over it
    assert {tsf._view_pixels(comfy_server, i).shape for i in previews} == {(SIZE, SIZE, 3)}


@pytest.mark.e2e
def test_pd_and_fd_conditionings_differ_in_the_server(comfy_server):
    """Stage 1 of the workflow sampled with PD, with FD, and with a plain CLIP Text Encode of the prompt without
    the trigger word (one photo: the class word once), same seed: FD == plain, PD != FD. Compared as saved latents:
    the random TAESD of the tiny checkpoint decodes them to nearly black images, where 8-bit rounding hides the
    difference."""
    p = _small("freecure_e2e_photomaker/conds")
    pair, neg = wu.only_node(p, "FreeCurePhotoMakerEncodePair"), wu.only_node(p, "CLIPTextEncode")
    ckpt, latent = wu.only_node(p, "CheckpointLoaderSimple"), wu.only_node(p, "EmptyLatentImage")
    text = p[pair]["inputs"]["text"]
    if isinstance(text, list):  # linked from the workflow's Prompt node, where the prompt is typed
        text = p[text[0]]["inputs"]["value"]
    plain = wu.add_node(p, "CLIPTextEncode", {"text": text.replace(" photomaker", ""), "clip": [ckpt, 1]})
    found = p[wu.only_node(p, "FreeCureFoundationSampler")]["inputs"]
    saves = {}
    for label, positive in (("pd", [pair, 0]), ("fd", [pair, 1]), ("plain", [plain, 0])):
        sampler = wu.add_node(p, "KSampler", {
            "seed": found["seed"], "steps": STEPS, "cfg": found["cfg"], "sampler_name": found["sampler_name"],
            "scheduler": found["scheduler"], "denoise": 1.0, "model": [ckpt, 0], "positive": positive,
            "negative": [neg, 0], "latent_image": [latent, 0]})
        saves[label] = wu.add_node(p, "SaveLatent", {"filename_prefix": f"freecure_e2e_photomaker/{label}",
                                                     "samples": [sampler, 0]})
    p = wu.keep_only(p, *saves.values())
    entry = _ok(comfy_server.run(p, timeout=300))
    lat = {label: _saved_latent(comfy_server, entry, nid) for label, nid in saves.items()}
    assert lat["pd"].shape == (1, 4, SIZE // 8, SIZE // 8) and np.isfinite(lat["pd"]).all()
    assert np.array_equal(lat["fd"], lat["plain"]), "FD is not the trigger-free prompt's plain encoding"
    # sampling is bit-exact (FD == plain above), so any difference comes from the fused class token; on the random
    # tiny UNet one changed token of 77 moves the latent little (max ~0.003 of values up to ~300)
    assert not np.array_equal(lat["pd"], lat["fd"]), "PD and FD sampled alike: no identity was fused"


@pytest.mark.e2e
def test_prompt_without_trigger_word_fails_with_the_trigger_error(comfy_server):
    p = _small("freecure_e2e_photomaker/no_trigger")
    pair = wu.only_node(p, "FreeCurePhotoMakerEncodePair")
    p[pair]["inputs"]["text"] = "a photo of a woman with blonde curly hair, wearing sunglasses"
    code, body = comfy_server.queue(p)
    assert code == 200 and "prompt_id" in body, body
    err = tsf._execution_error(comfy_server.wait(body["prompt_id"], timeout=300))
    assert err["node_type"] == "FreeCurePhotoMakerEncodePair" and err["node_id"] == pair, err
    assert TRIGGER_ERROR in err["exception_message"], err["exception_message"]
