"""The face-parsing example workflow (FreeCure with stage 2 automated) against a real headless ComfyUI server.

* static: workflows/freecure_face_parsing.json passes the same well-formedness checks as the other examples, and
  its stage 2 is wired as documented (parser -> parse -> attribute mask from the foundation prompt -> FASA);
* its API copy equals the UI workflow converted with /object_info (regenerate with FREECURE_WRITE_API_WORKFLOWS=1),
  and the template browser lists it;
* the API workflow runs on the tiny checkpoint with the random test BiSeNet (64x64, 4 steps);
* the real-size test portrait (astronaut_640.png, with the square the stand-in detector finds) is parsed, masked from
  "blonde curly hair, no glasses" and used for FASA: the preview keeps 640x640, the result is 64x64, and the Attribute
  Mask node's UI text names hair and the negated glasses;
* a parser that is not on disk is refused naming the node and input (validation 400 where ComfyUI checks V3 combo
  values, else an execution error of the loader naming the file and folder); the server then still runs.
"""
from __future__ import annotations

import itertools
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
import workflow_utils as wu  # noqa: E402

NAME = "freecure_face_parsing"
FD_PROMPT = "close-up portrait photo of a woman with blonde curly hair, wearing sunglasses"
PARSER = "tiny_bisenet.safetensors"  # written by tests/e2e/make_parsing_models.py
PORTRAIT = "astronaut_640.png"
PORTRAIT_SIZE = 640
SIZE, STEPS = 64, 4
_seeds = itertools.count(2000)


# ------------------------------------------------------------------------------------------ helpers
def _small(server, prefix: str) -> dict:
    """The API workflow for the test server: tiny checkpoint and parser, 64x64, 4 steps, CPU parser."""
    p = wu.shrink(wu.load_api(NAME), server.checkpoint, SIZE, SIZE, STEPS, prefix=prefix)
    wu.use_tiny_parser(p, PARSER)
    return p


_ok = wu.assert_success


def _size(path: pathlib.Path) -> tuple[int, int]:
    from PIL import Image
    with Image.open(path) as im:
        return im.size


def _saved_by(server, entry: dict, node_id: str) -> list[pathlib.Path]:
    """Files one SaveImage node wrote (type 'output')."""
    return server.output_files({"outputs": {node_id: entry["outputs"][node_id]}})


def _portrait_prompt(server, prefix: str, prompt_text: str = "blonde curly hair, no glasses", grow: int = 0,
                     with_sampler: bool = True) -> tuple[dict, dict]:
    """LoadImage(astronaut) -> parser loader -> Face Parse (face crop) -> Attribute Mask (image connected) ->
    SaveImage(preview); with_sampler: mask -> FASA Config -> FreeCure Sampler (lockstep, tiny ckpt) -> VAE Decode
    -> SaveImage.  Built from the example workflow so both stay in step.  Returns (prompt, ids)."""
    p = _small(server, prefix + "/result")
    sampler = wu.only_node(p, "FreeCureSampler")
    del p[sampler]["inputs"]["kv"]  # lockstep: the recorded kv belongs to the (noise) foundation image, not this one
    seed = next(_seeds)
    p[sampler]["inputs"]["seed"] = seed
    parse, mask = wu.only_node(p, "FreeCureFaceParse"), wu.only_node(p, "FreeCureAttributeMask")
    result = wu.only_node(p, "SaveImage")
    image = wu.add_node(p, "LoadImage", {"image": PORTRAIT})
    p[parse]["inputs"].update(image=[image, 0], mode="face crop")
    p[mask]["inputs"].update(image=[image, 0], prompt=prompt_text, attributes="", grow=grow, feather=0.0)
    preview = wu.add_node(p, "SaveImage", {"images": [mask, 1], "filename_prefix": prefix + "/mask_preview"})
    p = wu.keep_only(p, preview, result) if with_sampler else wu.keep_only(p, preview)
    assert wu.nodes_of(p, "FreeCureFoundationSampler") == [] and wu.nodes_of(p, "PreviewImage") == []
    return p, {"mask": mask, "preview": preview, "result": result, "loader": wu.only_node(p, "FreeCureFaceParserLoader")}


# ------------------------------------------------------------------------------------------ static
def test_ui_workflow_is_well_formed():
    tsf.test_ui_workflow_is_well_formed(NAME)


def test_stage_two_is_wired_from_the_foundation_image():
    wf = wu.load_ui(NAME)
    nodes = {n["id"]: n for n in wf["nodes"]}
    (mask,) = [n for n in wf["nodes"] if n["type"] == "FreeCureAttributeMask"]
    (loader,) = [n for n in wf["nodes"] if n["type"] == "FreeCureFaceParserLoader"]
    assert loader["widgets_values"][:2] == ["79999_iter.pth", "auto"]
    assert mask["widgets_values"][0] == FD_PROMPT
    fd_texts = [n["widgets_values"][0] for n in wf["nodes"]
                if n["type"] == "CLIPTextEncode" and "Foundation" in n.get("title", "")]
    assert fd_texts == [FD_PROMPT]
    src = {(l[3], nodes[l[3]]["inputs"][l[4]]["name"]): nodes[l[1]]["type"] for l in wf["links"]}
    assert src[(mask["id"], "image")] == "VAEDecode" and src[(mask["id"], "face_parse")] == "FreeCureFaceParse"
    (fasa,) = [n for n in wf["nodes"] if n["type"] == "FreeCureFASAConfig"]
    assert src[(fasa["id"], "mask")] == "FreeCureAttributeMask"
    (sampler,) = [n for n in wf["nodes"] if n["type"] == "FreeCureSampler"]
    assert src[(sampler["id"], "kv")] == "FreeCureFoundationSampler"
    notes = " ".join(n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "Note")
    assert "models/face_parsing/" in notes and "models/insightface/models/antelopev2/" in notes


# ------------------------------------------------------------------------------------------ server
@pytest.mark.e2e
def test_template_browser_lists_the_workflow(comfy_server):
    import requests
    templates = requests.get(comfy_server.url + "/workflow_templates", timeout=30).json()
    assert NAME in templates.get("comfyui-freecure", []), templates
    r = requests.get(f"{comfy_server.url}/api/workflow_templates/comfyui-freecure/{NAME}.json", timeout=30)
    assert r.status_code == 200 and r.json() == wu.load_ui(NAME)


@pytest.mark.e2e
def test_example_workflow_runs_on_tiny_models(comfy_server):
    p = _small(comfy_server, "freecure_e2e_parsing/workflow")
    entry = _ok(comfy_server.run(p, timeout=240))
    (png,) = comfy_server.output_files(entry)
    assert png.name.startswith("workflow") and _size(png) == (SIZE, SIZE)
    images = tsf._images(comfy_server, entry)  # result + foundation preview + mask preview
    assert sorted(i["type"] for i in images) == ["output", "temp", "temp"], images
    for item in images:
        assert tsf._view_pixels(comfy_server, item).shape == (SIZE, SIZE, 3), item
    (text,) = entry["outputs"][wu.only_node(p, "FreeCureAttributeMask")]["text"]
    assert text.startswith("from prompt:") and "hair" in text and "glasses ('sunglasses')" in text, text


@pytest.mark.e2e
def test_portrait_is_parsed_masked_and_used_for_fasa(comfy_server):
    p, ids = _portrait_prompt(comfy_server, "freecure_e2e_parsing/portrait")
    entry = _ok(comfy_server.run(p, timeout=240))
    (preview,) = _saved_by(comfy_server, entry, ids["preview"])
    (result,) = _saved_by(comfy_server, entry, ids["result"])
    assert _size(preview) == (PORTRAIT_SIZE, PORTRAIT_SIZE)
    assert _size(result) == (SIZE, SIZE)
    (text,) = entry["outputs"][ids["mask"]]["text"]
    chosen, _, ignored = text.partition("; ignored (negated):")
    assert "hair" in chosen and "glasses" not in chosen, text
    assert "glasses" in ignored, text


@pytest.mark.e2e
def test_missing_parser_is_refused_naming_node_and_input_then_server_recovers(comfy_server):
    """A parser not on disk.  ComfyUI refuses it at validation (400, value_not_in_list) where it checks COMBO values;
    this ComfyUI checks only V1 list-typed combos, not V3 io.Combo ones (which the pack registers when it can), so
    there the prompt is queued and the loader fails at execution naming the file and its folder.  Either way the
    error names the node and the missing file, and the server then still runs a good prompt."""
    p, ids = _portrait_prompt(comfy_server, "freecure_e2e_parsing/missing", with_sampler=False)
    p[ids["loader"]]["inputs"]["parser"] = "79999_iter.pth"
    code, body = comfy_server.queue(p)
    if code == 400:
        assert body["error"]["type"] == "prompt_outputs_failed_validation", body
        errors = body["node_errors"][ids["loader"]]
        assert errors["class_type"] == "FreeCureFaceParserLoader", errors
        (err,) = errors["errors"]
        assert err["type"] == "value_not_in_list" and err["extra_info"]["input_name"] == "parser", err
        assert "79999_iter.pth" in err["details"], err
    else:
        assert code == 200 and not body.get("node_errors"), (code, body)
        err = tsf._execution_error(comfy_server.wait(body["prompt_id"], timeout=120))
        assert err["node_type"] == "FreeCureFaceParserLoader" and err["node_id"] == ids["loader"], err
        assert err["current_inputs"]["parser"] == ["79999_iter.pth"], err
        msg = err["exception_message"]
        assert "79999_iter.pth" in msg and "models/face_parsing" in msg, msg

    good, ids = _portrait_prompt(comfy_server, "freecure_e2e_parsing/recovery", grow=2, with_sampler=False)
    entry = _ok(comfy_server.run(good, timeout=120))
    (preview,) = _saved_by(comfy_server, entry, ids["preview"])
    assert _size(preview) == (PORTRAIT_SIZE, PORTRAIT_SIZE)
