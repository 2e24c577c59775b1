"""The InstantID example workflows (built-in pair, official and CrossFaceID weights) on a real headless ComfyUI.

The server has a tiny SDXL checkpoint, a ControlNet for it as the IdentityNet, an InstantID adapter in the real
flat .safetensors layout and the stand-in antelopev2 pack (SCRFD-format detector + ArcFace-format recognizer),
written by tests/e2e/make_identity_models.py. The reference photo is the astronaut with the square the stand-in
detector reports as a face.

* each workflow runs end to end: loader -> face analysis -> IdentityNet -> FreeCure InstantID Pair -> foundation
  sampler -> face parsing -> attribute mask -> FASA -> FreeCure Sampler -> SaveImage; the pair node reports the 70
  adapter layers and the onnxruntime provider that ran, and the keypoint image is previewed at the photo's size;
* an adapter file that is not on disk is refused naming the file and models/instantid; a ControlNet file given
  as the adapter is refused saying where it belongs; the server then still runs.
"""
from __future__ import annotations

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
import workflow_utils as wu  # noqa: E402
from make_identity_models import ADAPTER, IDENTITYNET, SDXL_CKPT  # noqa: E402

PARSER = "tiny_bisenet.safetensors"
PORTRAIT = "astronaut_640.png"
SIZE, STEPS = 64, 3


def _small(name: str, prefix: str) -> dict:
    """The API workflow with the tiny SDXL files, 64x64 and 3 steps, everything on CPU."""
    p = wu.shrink(wu.load_api(name), SDXL_CKPT, SIZE, SIZE, STEPS, prefix=prefix)
    p[wu.only_node(p, "FreeCureInstantIDLoader")]["inputs"]["instantid_file"] = ADAPTER
    p[wu.only_node(p, "FreeCureInstantIDFaceAnalysis")]["inputs"]["provider"] = "CPU"
    p[wu.only_node(p, "ControlNetLoader")]["inputs"]["control_net_name"] = IDENTITYNET
    p[wu.only_node(p, "LoadImage")]["inputs"]["image"] = PORTRAIT
    wu.use_tiny_parser(p, PARSER)
    return p


_ok = wu.assert_success


@pytest.mark.e2e
@pytest.mark.parametrize("name", ["freecure_instantid", "freecure_crossfaceid"])
def test_instantid_workflow_runs_on_tiny_models(comfy_server, name):
    p = _small(name, f"freecure_e2e_instantid/{name}")
    entry = _ok(comfy_server.run(p, timeout=300))
    (png,) = comfy_server.output_files(entry)
    from PIL import Image
    with Image.open(png) as im:
        assert im.size == (SIZE, SIZE)
    pair = wu.only_node(p, "FreeCureInstantIDPair")
    (text,) = entry["outputs"][pair]["text"]
    assert "70 attention layers" in text and "CPUExecutionProvider" in text, text
    previews = [i for i in tsf._images(comfy_server, entry) if i["type"] == "temp"]
    shapes = {tsf._view_pixels(comfy_server, i).shape for i in previews}
    assert (640, 640, 3) in shapes, shapes  # the keypoint image, at the reference photo's size


@pytest.mark.e2e
def test_bad_adapter_files_are_refused_then_server_recovers(comfy_server, tmp_path):
    p = _small("freecure_instantid", "freecure_e2e_instantid/missing")
    loader = wu.only_node(p, "FreeCureInstantIDLoader")
    p[loader]["inputs"]["instantid_file"] = "ip-adapter.bin"
    code, body = comfy_server.queue(p)
    if code == 400:  # a ComfyUI that validates V3 combo values
        assert "ip-adapter.bin" in json.dumps(body["node_errors"][loader]), body
    else:
        err = tsf._execution_error(comfy_server.wait(body["prompt_id"], timeout=120))
        assert err["node_type"] == "FreeCureInstantIDLoader", err
        assert "ip-adapter.bin" in err["exception_message"] and "models/instantid" in err["exception_message"], err

    # a ControlNet saved into models/instantid by mistake
    wrong = comfy_server.tmp / "models" / "instantid" / "identitynet_by_mistake.safetensors"
    wrong.write_bytes((comfy_server.tmp / "models" / "controlnet" / IDENTITYNET).read_bytes())
    try:
        p[loader]["inputs"]["instantid_file"] = wrong.name
        err = tsf._execution_error(comfy_server.wait(comfy_server.queue(p)[1]["prompt_id"], timeout=120))
        assert err["node_type"] == "FreeCureInstantIDLoader", err
        assert "models/controlnet" in err["exception_message"], err
    finally:
        wrong.unlink()

    _ok(comfy_server.run(_small("freecure_instantid", "freecure_e2e_instantid/recovery"), timeout=300))
