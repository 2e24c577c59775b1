"""The APG example workflow (workflows/freecure_apg.json: FreeCure's four stages from one prompt) on a real headless
ComfyUI server.

* static: the file is well formed (links agree with both ends, execution order, linked widget inputs listed after
  the sockets, no overlapping nodes), one prompt drives every stage (FreeCure Expression Split -> the two encoders
  and the Attribute Mask's prompt), stages 1, 3 and 4 share seed, steps, cfg, sampler and scheduler, APG gets the
  foundation MODEL, the stage-3 latent and gamma 0.5 read as the paper's (timestep 0.5T), and each stage's nodes
  sit inside the LiteGraph group of their stage (and touch no other group);
* server: every link and socket (widget sockets included) matches /object_info;
* the workflow runs on the tiny SD1.5 checkpoint with the random test BiSeNet (64x64, 6 steps): APG reports the
  sigma it turned at and the steps it inverted, the split node the expression words, the Attribute Mask the prompt's
  attributes, and the saved image has the latent's size;
* with a prompt without expression words APG passes the stage-3 image through pixel for pixel and says why.

The API copy in workflows/api/ is checked with the other workflows in test_server_freecure.py.
"""
from __future__ import annotations

import itertools
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
import workflow_utils as wu  # noqa: E402

NAME = "freecure_apg"
PROMPT = "a photo of a woman laughing happily, with blonde curly hair, wearing sunglasses"
PLAIN_PROMPT = "a photo of a woman with blonde curly hair, wearing sunglasses"  # no expression words
PARSER = "tiny_bisenet.safetensors"  # written by tests/e2e/make_parsing_models.py
SIZE, STEPS = 64, 6
TITLE_H = 30  # LiteGraph draws a node's title bar above its pos

# the group each node type belongs to (by title prefix)
STAGE_OF = {
    "FreeCureExpressionSplit": "Prompt",
    "FreeCureFoundationSampler": "Stage 1",
    "FreeCureFaceParserLoader": "Stage 2", "FreeCureFaceParse": "Stage 2", "FreeCureAttributeMask": "Stage 2",
    "FreeCureFASAConfig": "Stage 2",
    "FreeCureSampler": "Stage 3",
    "FreeCureAPG": "Stage 4",
}
GROUP_TITLES = ("Prompt (one prompt for all stages)", "Stage 1 \u2014 foundation", "Stage 2 \u2014 attribute mask",
                "Stage 3 \u2014 FASA", "Stage 4 \u2014 APG (expressions)")


# ------------------------------------------------------------------------------------------ helpers
def _nodes(wf: dict) -> dict[int, dict]:
    return {n["id"]: n for n in wf["nodes"]}


def _by_type(wf: dict, ntype: str) -> list[dict]:
    return [n for n in wf["nodes"] if n["type"] == ntype]


def _one(wf: dict, ntype: str) -> dict:
    (node,) = _by_type(wf, ntype)
    return node


def _src(wf: dict, node: dict, inp: str) -> tuple[str, str, int]:
    """(type, output name, id) of what feeds node's input `inp` (a socket or a linked widget)."""
    nodes = _nodes(wf)
    (slot,) = [i for i in node["inputs"] if i["name"] == inp]
    (link,) = [l for l in wf["links"] if l[0] == slot["link"]]
    src = nodes[link[1]]
    return src["type"], src["outputs"][link[2]]["name"], src["id"]


def _box(n: dict) -> tuple[float, float, float, float]:
    return n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]


def _gbox(g: dict) -> tuple[float, float, float, float]:
    x, y, w, h = g["bounding"]
    return x, y, x + w, y + h


def _inside(a, b) -> bool:
    return b[0] <= a[0] and b[1] <= a[1] and a[2] <= b[2] and a[3] <= b[3]


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _notes(wf: dict) -> str:
    return "\n".join(n["widgets_values"][0] for n in _by_type(wf, "Note"))


def _small(server, prefix: str, prompt: str | None = None) -> tuple[dict, dict]:
    """The API workflow for the test server (tiny checkpoint and parser, 64x64, 6 steps, CPU parser) with a
    SaveImage added for the stage-3 image. Returns (prompt, node ids)."""
    p = wu.shrink(wu.load_api(NAME), server.checkpoint, SIZE, SIZE, STEPS, prefix=prefix + "/apg")
    wu.use_tiny_parser(p, PARSER)
    ids = {k: wu.only_node(p, t) for k, t in (("split", "FreeCureExpressionSplit"), ("apg", "FreeCureAPG"),
                                                ("pd", "FreeCureSampler"), ("mask", "FreeCureAttributeMask"),
                                                ("save", "SaveImage"))}
    if prompt is not None:
        p[ids["split"]]["inputs"]["prompt"] = prompt
    (pd_decode,) = [i for i in wu.nodes_of(p, "VAEDecode") if p[i]["inputs"]["samples"] == [ids["pd"], 0]]
    ids["stage3"] = wu.add_node(p, "SaveImage", {"images": [pd_decode, 0], "filename_prefix": prefix + "/stage3"})
    return p, ids


_ok = wu.assert_success


def _saved_by(server, entry: dict, node_id: str) -> pathlib.Path:
    (path,) = server.output_files({"outputs": {node_id: entry["outputs"][node_id]}})
    return path


def _text(entry: dict, node_id: str) -> str:
    (text,) = entry["outputs"][node_id]["text"]
    return text


# ------------------------------------------------------------------------------------------ static
def test_ui_workflow_is_well_formed():
    wf = wu.load_ui(NAME)
    wu.assert_well_formed(wf)
    for (i, a), (j, b) in itertools.combinations(enumerate(map(_box, wf["nodes"])), 2):
        assert not _overlap(a, b), f"{wf['nodes'][i]['type']} overlaps {wf['nodes'][j]['type']}"

    assert [n["widgets_values"] for n in _by_type(wf, "CheckpointLoaderSimple")] == [["sd_xl_base_1.0.safetensors"]]
    assert [n["widgets_values"] for n in _by_type(wf, "EmptyLatentImage")] == [[1024, 1024, 1]]
    fd, pd, apg = (_one(wf, t) for t in ("FreeCureFoundationSampler", "FreeCureSampler", "FreeCureAPG"))
    assert fd["widgets_values"][:6] == pd["widgets_values"][:6] == apg["widgets_values"][:6] \
        == [42, "fixed", 30, 5.0, "euler", "normal"], "seed (fixed), steps, cfg, sampler, scheduler shared"
    assert apg["widgets_values"][6:] == [0.5, 1.0, 0, "timestep (paper)"], \
        "gamma 0.5 read as the paper's timestep 0.5T, inversion cfg 1, no refinement"
    assert fd["widgets_values"][7] == "cond", "stage 1 records for replay"
    notes = _notes(wf)
    assert "ComfyUI/models/checkpoints/" in notes and "models/face_parsing/" in notes
    for words in ("Stage 4", "template", "expression words", "passes", "gamma 0.5", "0.5-0.6", "identity",
                  "model_pd", "InstantID"):
        assert words in notes, words


def test_one_prompt_drives_all_four_stages():
    from freecure_core.apg.expressions import split_prompt
    wf = wu.load_ui(NAME)
    split, mask = _one(wf, "FreeCureExpressionSplit"), _one(wf, "FreeCureAttributeMask")
    assert split["widgets_values"] == [PROMPT, True]
    encoders = {n["title"]: n for n in _by_type(wf, "CLIPTextEncode")}
    template, attributes = encoders["Template prompt (APG inversion)"], encoders["Prompt (stages 1-3, APG attributes)"]
    assert _src(wf, template, "text")[:2] == ("FreeCureExpressionSplit", "template")
    assert _src(wf, attributes, "text")[:2] == ("FreeCureExpressionSplit", "attributes")
    assert _src(wf, mask, "prompt")[:2] == ("FreeCureExpressionSplit", "attributes")
    # the linked widgets' idle values are what the split gives (shown if a user unplugs the links)
    split_result = split_prompt(PROMPT)
    assert split_result.expression_words == ("laughing happily",)
    assert template["widgets_values"] == [split_result.template]
    assert attributes["widgets_values"] == [split_result.attributes] == [mask["widgets_values"][0]]

    fd, pd, apg = (_one(wf, t) for t in ("FreeCureFoundationSampler", "FreeCureSampler", "FreeCureAPG"))
    ckpt = _one(wf, "CheckpointLoaderSimple")
    neg = _src(wf, fd, "negative")
    for node, inp in ((fd, "positive"), (pd, "positive"), (pd, "fd_positive"), (apg, "attributes")):
        assert _src(wf, node, inp) == ("CLIPTextEncode", "CONDITIONING", attributes["id"]), inp
    for node, inp in ((pd, "negative"), (pd, "fd_negative"), (apg, "negative")):
        assert _src(wf, node, inp) == neg, inp
    assert _src(wf, apg, "template") == ("CLIPTextEncode", "CONDITIONING", template["id"])
    for node, inp in ((fd, "model_fd"), (pd, "model_fd"), (pd, "model_pd"), (apg, "model")):
        assert _src(wf, node, inp) == ("CheckpointLoaderSimple", "MODEL", ckpt["id"]), inp
    assert _src(wf, apg, "model") == _src(wf, pd, "model_fd"), "APG runs on the foundation MODEL"
    assert _src(wf, apg, "samples") == ("FreeCureSampler", "pd_latent", pd["id"])
    assert _src(wf, pd, "kv") == ("FreeCureFoundationSampler", "kv", fd["id"])
    assert _src(wf, pd, "latent_image") == _src(wf, fd, "latent_image")
    assert _src(wf, _one(wf, "FreeCureFASAConfig"), "mask")[:2] == ("FreeCureAttributeMask", "mask")
    # stage 4 is saved; stage 3 previewed for comparison
    (save,) = _by_type(wf, "SaveImage")
    decode_of = {n["id"]: _src(wf, n, "samples")[:2] for n in _by_type(wf, "VAEDecode")}
    assert decode_of[_src(wf, save, "images")[2]] == ("FreeCureAPG", "latent")
    previewed = {decode_of.get(_src(wf, n, "images")[2]) for n in _by_type(wf, "PreviewImage")}
    assert ("FreeCureSampler", "pd_latent") in previewed and ("FreeCureFoundationSampler", "fd_latent") in previewed


def test_groups_hold_the_nodes_of_their_stage():
    wf = wu.load_ui(NAME)
    groups = wf["groups"]
    assert [g["title"] for g in groups] == list(GROUP_TITLES)
    assert all(len(g["bounding"]) == 4 and g["bounding"][2] > 0 and g["bounding"][3] > 0 for g in groups)
    for a, b in itertools.combinations(groups, 2):
        assert not _overlap(_gbox(a), _gbox(b)), (a["title"], b["title"])
    for ntype, stage in STAGE_OF.items():
        for n in _by_type(wf, ntype):
            home = [g for g in groups if g["title"].startswith(stage)]
            assert len(home) == 1 and _inside(_box(n), _gbox(home[0])), f"{ntype} is outside {stage}'s group"
    # every node is wholly inside one group or touches none (moving a group moves exactly its nodes)
    for n in wf["nodes"]:
        touched = [g["title"] for g in groups if _overlap(_box(n), _gbox(g))]
        assert len(touched) <= 1 and all(_inside(_box(n), _gbox(g)) for g in groups if g["title"] in touched), \
            (n["id"], n["type"], touched)
    # the stage-3 preview and the APG result sit in their stages too
    nodes_in = {g["title"]: {n["type"] for n in wf["nodes"] if _inside(_box(n), _gbox(g))} for g in groups}
    assert {"PreviewImage", "VAEDecode", "Note"} <= nodes_in[GROUP_TITLES[3]]
    assert {"SaveImage", "VAEDecode", "Note"} <= nodes_in[GROUP_TITLES[4]]
    assert nodes_in[GROUP_TITLES[0]] == {"FreeCureExpressionSplit", "CLIPTextEncode", "Note"}


# ------------------------------------------------------------------------------------------ server
@pytest.mark.e2e
def test_links_and_sockets_match_object_info(comfy_server):
    info = comfy_server.object_info()
    wf = wu.load_ui(NAME)
    nodes = _nodes(wf)
    for lid, src, src_slot, dst, dst_slot, typ in wf["links"]:
        src_info = info[nodes[src]["type"]]
        assert src_info["output"][src_slot] == typ and \
            src_info["output_name"][src_slot] == nodes[src]["outputs"][src_slot]["name"], (lid, src_info["name"])
        inp = nodes[dst]["inputs"][dst_slot]["name"]
        specs = dict(wu._input_specs(info[nodes[dst]["type"]]))
        assert inp in specs and specs[inp][0] == typ, (lid, nodes[dst]["type"], inp, specs.get(inp))
    for n in wf["nodes"]:
        if n["type"] in wu.FRONTEND_ONLY:
            continue
        node_info = info[n["type"]]
        specs = wu._input_specs(node_info)
        sockets = [(k, s) for k, s in specs if not wu._is_widget(s)]
        optional = set((node_info.get("input_order") or {}).get("optional", node_info["input"].get("optional", {})))
        plain = [i for i in n["inputs"] if "widget" not in i]
        assert [(i["name"], i["type"], i.get("shape") == 7) for i in plain] == \
            [(k, s[0], k in optional) for k, s in sockets], n["type"]
        widgets = dict((k, s) for k, s in specs if wu._is_widget(s))
        for i in n["inputs"]:
            if "widget" in i:
                assert i["name"] in widgets and widgets[i["name"]][0] == i["type"], (n["type"], i)
        assert not wu.output_problems(n, node_info), wu.output_problems(n, node_info)


@pytest.mark.e2e
def test_workflow_runs_all_four_stages_on_tiny_models(comfy_server):
    p, ids = _small(comfy_server, "freecure_e2e_apg/expression")
    entry = _ok(comfy_server.run(p, timeout=300))
    result, stage3 = _saved_by(comfy_server, entry, ids["save"]), _saved_by(comfy_server, entry, ids["stage3"])
    assert result.name.startswith("apg")
    assert tsf._pixels(result).shape == tsf._pixels(stage3).shape == (SIZE, SIZE, 3)
    images = tsf._images(comfy_server, entry)  # APG result, stage-3 copy; FD, mask and stage-3 previews
    assert sorted(i["type"] for i in images) == ["output", "output", "temp", "temp", "temp"], images
    for item in images:
        assert tsf._view_pixels(comfy_server, item).shape == (SIZE, SIZE, 3), item

    assert _text(entry, ids["split"]) == "expression words: 'laughing happily'"
    apg = _text(entry, ids["apg"])
    # 'normal' at 6 steps has no step at the paper's turn (sigma 1.616, timestep 0.5T): 3 steps + 1 up to it
    assert apg.startswith(f"APG: inverted {STEPS // 2 + 1} steps ({STEPS // 2} of the {STEPS} scheduled + 1 to the "
                          f"turn) up to sigma 1.616, the model's sigma at timestep 0.5T (gamma 0.5, as the paper)") \
        and "template" in apg, apg
    mask = _text(entry, ids["mask"])  # the mask read the split's prompt through the link
    assert mask.startswith("from prompt:") and "hair" in mask and "glasses ('sunglasses')" in mask, mask
    assert tsf._max_diff(tsf._pixels(result), tsf._pixels(stage3)) > 0, "APG ran, so the image changed"


@pytest.mark.e2e
def test_prompt_without_expression_words_passes_the_stage_three_image_through(comfy_server):
    p, ids = _small(comfy_server, "freecure_e2e_apg/plain", prompt=PLAIN_PROMPT)
    entry = _ok(comfy_server.run(p, timeout=300))
    result, stage3 = _saved_by(comfy_server, entry, ids["save"]), _saved_by(comfy_server, entry, ids["stage3"])
    assert result != stage3
    assert tsf._pixels(result).shape == (SIZE, SIZE, 3)
    assert (tsf._pixels(result) == tsf._pixels(stage3)).all(), "APG must pass the stage-3 image through"
    assert _text(entry, ids["split"]) == "no expression words: APG will pass the image through"
    apg = _text(entry, ids["apg"])
    assert apg.startswith("APG skipped") and "identical (no expression words)" in apg, apg
