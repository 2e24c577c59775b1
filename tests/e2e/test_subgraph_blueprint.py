"""The "FreeCure" subgraph blueprint (subgraphs/FreeCure.json, written by scripts/workflow_builder.py): the
face-parsing workflow's stages 1-3 as one node (foundation sampler -> face parse -> attribute mask -> FASA Config ->
FreeCure Sampler replaying stage 1), with the prompt, the models, conditionings, latent, VAE and face parser as its
inputs, and seed/steps/cfg/sampler/scheduler/denoise as inputs that feed both samplers.

* static: the file is what the builder writes; its subgraph is well formed (links agree with both ends and with the
  subgraph's input/output lists, the instance node mirrors the inputs and outputs, widget inputs promoted), and it
  is wired like workflows/freecure_face_parsing.json (the prompt input is the Attribute Mask's only prompt);
* server: ComfyUI lists it under /global_subgraphs as this pack's (custom_nodes.comfyui-freecure) and serves the
  file at /global_subgraphs/{id} (skipped, naming the version, on a ComfyUI without that route); every node type in
  it is registered in /object_info, every link's type is what its ends produce and accept, every widget value fits
  its input;
* server, both ComfyUI versions: the subgraph flattened to an API prompt, its inputs wired to the face-parsing
  workflow's own sources (same seed), gives the face-parsing workflow's image bit for bit. The flattened prompt
  loads the checkpoint under a second file name (a link to the same file) so that ComfyUI's cache cannot hand it
  the workflow's results: every node of the subgraph really runs.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import pathlib
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import test_server_freecure as tsf  # noqa: E402
import test_server_parsing as tsp  # noqa: E402
import workflow_utils as wu  # noqa: E402

PACK_FOLDER = "comfyui-freecure"  # the folder name tests/conftest.py gives this pack under custom_nodes/
BLUEPRINT = wu.REPO_ROOT / "subgraphs" / "FreeCure.json"
INPUT_ID, OUTPUT_ID = -10, -20
CKPT_ALIAS = "tiny_sd15_blueprint_alias.safetensors"
FILE_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".png", ".jpg", ".jpeg", ".webp")


def _load() -> dict:
    return json.loads(BLUEPRINT.read_text())


def _subgraph(bp: dict) -> dict:
    (sg,) = bp["definitions"]["subgraphs"]
    return sg


def _builder():
    path = wu.REPO_ROOT / "scripts" / "workflow_builder.py"
    spec = importlib.util.spec_from_file_location("freecure_workflow_builder_bp", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _targets(sg: dict) -> dict[str, list[tuple[dict, str]]]:
    """Subgraph input name -> the (inner node, input name) pairs it feeds."""
    nodes = {n["id"]: n for n in sg["nodes"]}
    out = {i["name"]: [] for i in sg["inputs"]}
    for l in sg["links"]:
        if l["origin_id"] == INPUT_ID:
            node = nodes[l["target_id"]]
            out[sg["inputs"][l["origin_slot"]]["name"]].append((node, node["inputs"][l["target_slot"]]["name"]))
    return out


def flatten(bp: dict, info: dict, sources: dict, id_base: int) -> tuple[dict, dict]:
    """The blueprint's inner graph as API-format nodes (ids id_base + inner id), each subgraph input replaced by
    sources[name] (a link [node id, slot] or a value). Returns (nodes, {output name: [node id, slot]})."""
    sg = _subgraph(bp)
    names = [i["name"] for i in sg["inputs"]]
    fed = {}  # (inner node id, input name) -> subgraph input name
    nodes = copy.deepcopy(sg["nodes"])
    by_id = {n["id"]: n for n in nodes}
    for l in sg["links"]:
        if l["origin_id"] == INPUT_ID:
            slot = by_id[l["target_id"]]["inputs"][l["target_slot"]]
            fed[(l["target_id"], slot.get("widget", {}).get("name", slot["name"]))] = names[l["origin_slot"]]
            slot["link"] = None
    inner = {"nodes": nodes, "links": [l for l in sg["links"] if INPUT_ID != l["origin_id"] and
                                       OUTPUT_ID != l["target_id"]]}
    api = wu.ui_to_api(inner, info)
    key = lambda nid: str(id_base + int(nid))  # noqa: E731
    out = {}
    for nid, node in api.items():
        for k, v in node["inputs"].items():
            if isinstance(v, list):
                node["inputs"][k] = [key(v[0]), v[1]]
        out[key(nid)] = node
    for (nid, inp), name in fed.items():
        out[key(nid)]["inputs"][inp] = copy.deepcopy(sources[name])
    outputs = {sg["outputs"][l["target_slot"]]["name"]: [key(l["origin_id"]), l["origin_slot"]]
               for l in sg["links"] if l["target_id"] == OUTPUT_ID}
    return out, outputs


def _cached_nodes(entry: dict) -> set[str]:
    """Nodes ComfyUI took from its output cache for a history entry."""
    return {n for event, data in entry["status"].get("messages", []) if event == "execution_cached"
            for n in data.get("nodes", [])}


def _face_parsing_sources(bp: dict, p: dict) -> dict:
    """What the face-parsing prompt p feeds the nodes that the blueprint's inputs feed (same node types): for each
    subgraph input, the one value or link all those inputs have in the workflow."""
    sources = {}
    for name, targets in _targets(_subgraph(bp)).items():
        values = [p[nid]["inputs"][inp] for node, inp in targets for nid in wu.nodes_of(p, node["type"])]
        assert values and all(v == values[0] for v in values), (name, values)
        sources[name] = values[0]
    return sources


# ------------------------------------------------------------------------------------------ static
def test_builder_writes_the_committed_blueprint():
    builder = _builder()
    assert set(builder.SUBGRAPHS) == {"FreeCure"}
    assert builder.render(builder.SUBGRAPHS["FreeCure"]()) == BLUEPRINT.read_text(), (
        "subgraphs/FreeCure.json differs from scripts/workflow_builder.py; run python scripts/workflow_builder.py")
    assert sorted(p.name for p in BLUEPRINT.parent.iterdir()) == ["FreeCure.json"]


def test_blueprint_is_well_formed():
    bp = _load()
    sg = _subgraph(bp)
    assert bp["version"] == 0.4 and bp["links"] == []
    (instance,) = bp["nodes"]
    assert instance["type"] == sg["id"] and instance["title"] == sg["name"] == "FreeCure"
    assert sg["category"] == "FreeCure" and sg["description"]
    assert sg["inputNode"]["id"] == INPUT_ID and sg["outputNode"]["id"] == OUTPUT_ID
    nodes = {n["id"]: n for n in sg["nodes"]}
    assert len(nodes) == len(sg["nodes"]) and sg["state"]["lastNodeId"] == max(nodes)
    links = {l["id"]: l for l in sg["links"]}
    assert len(links) == len(sg["links"]) and sg["state"]["lastLinkId"] == max(links)
    assert sorted(n["order"] for n in sg["nodes"]) == list(range(len(nodes)))
    for l in sg["links"]:
        src, dst = l["origin_id"], l["target_id"]
        if src == INPUT_ID:
            assert l["id"] in sg["inputs"][l["origin_slot"]]["linkIds"]
            assert sg["inputs"][l["origin_slot"]]["type"] == l["type"]
        else:
            out = nodes[src]["outputs"][l["origin_slot"]]
            assert l["id"] in (out["links"] or []) and out["type"] == l["type"], l
        if dst == OUTPUT_ID:
            assert sg["outputs"][l["target_slot"]]["linkIds"] == [l["id"]]
            assert sg["outputs"][l["target_slot"]]["type"] == l["type"]
        else:
            inp = nodes[dst]["inputs"][l["target_slot"]]
            assert inp["link"] == l["id"] and inp["type"] == l["type"], l
        if src != INPUT_ID and dst != OUTPUT_ID:
            assert nodes[src]["order"] < nodes[dst]["order"]
    for io, kind in ((sg["inputs"], "origin_id"), (sg["outputs"], "target_id")):
        for item in io:
            assert item["linkIds"] and all(links[i][kind] in (INPUT_ID, OUTPUT_ID) for i in item["linkIds"])
    for n in sg["nodes"]:  # linked widgets listed after the sockets, as the frontend saves them
        widget_inputs = [i for i in n.get("inputs", []) if "widget" in i]
        assert all(i["widget"] == {"name": i["name"]} and i["link"] is not None for i in widget_inputs), n
        assert n["inputs"][len(n["inputs"]) - len(widget_inputs):] == widget_inputs
    # the node the user drops: the subgraph's inputs and outputs; widget-type inputs promoted to its widgets
    assert [(i["name"], i["type"]) for i in instance["inputs"]] == [(i["name"], i["type"]) for i in sg["inputs"]]
    assert [(o["name"], o["type"]) for o in instance["outputs"]] == [(o["name"], o["type"]) for o in sg["outputs"]]
    widgets = [i["name"] for i in instance["inputs"] if "widget" in i]
    assert instance["properties"]["proxyWidgets"] == [["-1", w] for w in widgets]
    assert len(instance["widgets_values"]) == len(widgets)


def test_blueprint_is_wired_like_the_face_parsing_workflow():
    sg = _subgraph(_load())
    nodes = {n["id"]: n for n in sg["nodes"]}
    src = {(l["target_id"], nodes[l["target_id"]]["inputs"][l["target_slot"]]["name"]):
           ("input", sg["inputs"][l["origin_slot"]]["name"]) if l["origin_id"] == INPUT_ID
           else (nodes[l["origin_id"]]["type"], nodes[l["origin_id"]]["outputs"][l["origin_slot"]]["name"])
           for l in sg["links"] if l["target_id"] != OUTPUT_ID}
    one = lambda t: next(n["id"] for n in sg["nodes"] if n["type"] == t)  # noqa: E731
    fd, pd = one("FreeCureFoundationSampler"), one("FreeCureSampler")
    parse, mask, fasa = one("FreeCureFaceParse"), one("FreeCureAttributeMask"), one("FreeCureFASAConfig")
    assert sorted(n["type"] for n in sg["nodes"] if n["type"] != "Note") == sorted([
        "FreeCureFoundationSampler", "FreeCureSampler", "FreeCureFaceParse", "FreeCureAttributeMask",
        "FreeCureFASAConfig", "VAEDecode", "VAEDecode", "PreviewImage", "PreviewImage"])
    assert src[(pd, "kv")] == ("FreeCureFoundationSampler", "kv"), "stage 3 replays stage 1"
    assert src[(pd, "fasa")] == ("FreeCureFASAConfig", "fasa") and src[(fasa, "mask")] == ("FreeCureAttributeMask", "mask")
    assert src[(mask, "face_parse")] == ("FreeCureFaceParse", "face_parse")
    assert src[(parse, "image")] == src[(mask, "image")] == ("VAEDecode", "IMAGE")
    assert src[(parse, "face_parser")] == ("input", "face_parser")
    assert src[(mask, "prompt")] == ("input", "prompt"), "the mask reads the prompt input, typed outside"
    for fd_inp, pd_inp in (("model_fd", "model_fd"), ("positive", "fd_positive"), ("negative", "fd_negative"),
                           ("latent_image", "latent_image")):
        assert src[(fd, fd_inp)] == src[(pd, pd_inp)] == ("input", pd_inp)
    for inp in ("model_pd", "positive", "negative"):
        assert src[(pd, inp)] == ("input", inp)
    for shared in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"):
        assert src[(fd, shared)] == src[(pd, shared)] == ("input", shared), f"{shared} feeds both samplers"
    assert nodes[fd]["widgets_values"][7] == "cond", "stage 1 records for replay"
    outputs = {o["name"]: o for o in sg["outputs"]}
    assert list(outputs) == ["image", "pd_latent", "foundation_image", "mask"]
    (string_inputs,) = [i for i in sg["inputs"] if i["type"] == "STRING"]
    assert string_inputs["name"] == "prompt" and len(string_inputs["linkIds"]) == 1


# ------------------------------------------------------------------------------------------ server
@pytest.fixture(scope="module")
def object_info(comfy_server):
    return comfy_server.object_info()


@pytest.mark.e2e
def test_server_lists_and_serves_the_blueprint(comfy_server):
    import requests
    r = requests.get(comfy_server.url + "/global_subgraphs", timeout=30)
    if r.status_code == 404:
        pytest.skip(f"ComfyUI {comfy_server.version} has no /global_subgraphs route (subgraph blueprints of custom "
                    f"nodes are served from ComfyUI 0.3.6x on)")
    assert r.status_code == 200, r.text[:500]
    ours = {k: v for k, v in r.json().items() if v.get("info", {}).get("node_pack") == f"custom_nodes.{PACK_FOLDER}"}
    assert [(v["name"], v["source"]) for v in ours.values()] == [("FreeCure", "custom_node")], r.json()
    (entry_id,) = ours
    assert "data" not in ours[entry_id] and "path" not in ours[entry_id]
    r = requests.get(f"{comfy_server.url}/global_subgraphs/{entry_id}", timeout=30)
    assert r.status_code == 200
    entry = r.json()
    assert entry["name"] == "FreeCure" and entry["info"]["node_pack"] == f"custom_nodes.{PACK_FOLDER}"
    assert entry["data"] == BLUEPRINT.read_text() and json.loads(entry["data"]) == _load()


def _fits(value, spec: list) -> bool:
    kind = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
    if options is not None:
        return value in options or (isinstance(value, str) and value.lower().endswith(FILE_SUFFIXES))
    if kind == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "FLOAT":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "BOOLEAN":
        return isinstance(value, bool)
    elif kind == "STRING":
        return isinstance(value, str)
    else:
        return False
    return ok and opts.get("min", value) <= value <= opts.get("max", value)


def _accepts(spec_type, link_type: str) -> bool:
    if isinstance(spec_type, list):
        return link_type == "COMBO"
    return spec_type == "*" or link_type in spec_type.split(",")


@pytest.mark.e2e
def test_inner_nodes_links_and_widgets_match_object_info(object_info):
    bp = _load()
    sg = _subgraph(bp)
    nodes = {n["id"]: n for n in sg["nodes"]}
    types = {n["type"] for n in sg["nodes"]} - wu.FRONTEND_ONLY
    assert not {t for t in types if t not in object_info}, "every node type inside is registered"
    for l in sg["links"]:
        if l["origin_id"] != INPUT_ID:
            src = object_info[nodes[l["origin_id"]]["type"]]
            assert src["output"][l["origin_slot"]] == l["type"], l
            assert src["output_name"][l["origin_slot"]] == nodes[l["origin_id"]]["outputs"][l["origin_slot"]]["name"]
        if l["target_id"] != OUTPUT_ID:
            dst = nodes[l["target_id"]]
            specs = dict(wu._input_specs(object_info[dst["type"]]))
            inp = dst["inputs"][l["target_slot"]]["name"]
            assert inp in specs and _accepts(specs[inp][0], l["type"]), (dst["type"], inp, l["type"], specs.get(inp))
    for n in sg["nodes"]:
        if n["type"] in wu.FRONTEND_ONLY:
            continue
        info = object_info[n["type"]]
        specs = dict(wu._input_specs(info))
        for name, value in wu._wf._widget_values(n, info).items():  # the right number of widget values, too
            assert _fits(value, specs[name]), (n["type"], name, value, specs[name])
        assert not wu.output_problems(n, info), wu.output_problems(n, info)
    # the subgraph node's own widgets: a default that fits every widget the input feeds
    instance = bp["nodes"][0]
    defaults = dict(zip([i["name"] for i in instance["inputs"] if "widget" in i], instance["widgets_values"]))
    for name, targets in _targets(sg).items():
        if name in defaults:
            for node, inp in targets:
                spec = dict(wu._input_specs(object_info[node["type"]]))[inp]
                assert _fits(defaults[name], spec), (name, node["type"], inp, defaults[name])


@pytest.mark.e2e
def test_flattened_blueprint_gives_the_face_parsing_image(comfy_server, object_info):
    """Same seed, same sources: the blueprint's inner graph reproduces freecure_face_parsing's image exactly."""
    import numpy as np
    bp = _load()
    workflow = tsp._small(comfy_server, "freecure_e2e_blueprint/workflow")
    wf_save = wu.only_node(workflow, "SaveImage")
    workflow = wu.keep_only(workflow, wf_save)

    alias = comfy_server.tmp / "models" / "checkpoints" / CKPT_ALIAS
    alias.unlink(missing_ok=True)
    alias.symlink_to(comfy_server.tmp / "models" / "checkpoints" / comfy_server.checkpoint)
    try:
        p = tsp._small(comfy_server, "freecure_e2e_blueprint/blueprint")
        p[wu.only_node(p, "CheckpointLoaderSimple")]["inputs"]["ckpt_name"] = CKPT_ALIAS
        sources = _face_parsing_sources(bp, p)
        assert sources["prompt"] == p[wu.only_node(p, "FreeCureAttributeMask")]["inputs"]["prompt"]
        assert p[sources["prompt"][0]]["class_type"] == "PrimitiveStringMultiline", "the workflow's Prompt node"
        inner, outputs = flatten(bp, object_info, sources, id_base=1000)
        p.update(inner)
        save = wu.add_node(p, "SaveImage", {"images": outputs["image"], "filename_prefix": "freecure_e2e_blueprint/bp"})
        p = wu.keep_only(p, save)
        assert all(int(k) >= 1000 for k in wu.nodes_of(p, "FreeCureSampler") + wu.nodes_of(p, "FreeCureAttributeMask")
                   + wu.nodes_of(p, "FreeCureFoundationSampler")), "stages 1-3 come from the blueprint only"

        wf_entry = wu.assert_success(comfy_server.run(workflow, timeout=240))
        bp_entry = wu.assert_success(comfy_server.run(p, timeout=240))
    finally:
        alias.unlink(missing_ok=True)
    ran = {k for k in p if int(k) >= 1000} - _cached_nodes(bp_entry)
    assert ran == {k for k in p if int(k) >= 1000}, "every blueprint node ran (nothing came from the cache)"
    (wf_png,) = comfy_server.output_files({"outputs": {wf_save: wf_entry["outputs"][wf_save]}})
    (bp_png,) = comfy_server.output_files({"outputs": {save: bp_entry["outputs"][save]}})
    a, b = tsf._pixels(wf_png), tsf._pixels(bp_png)
    assert a.shape == b.shape == (tsp.SIZE, tsp.SIZE, 3)
    assert np.array_equal(a, b), f"max abs difference {int(np.abs(a - b).max())}"
    mask_wf, mask_bp = wu.only_node(workflow, "FreeCureAttributeMask"), wu.nodes_of(p, "FreeCureAttributeMask")[0]
    assert wf_entry["outputs"][mask_wf]["text"] == bp_entry["outputs"][mask_bp]["text"]
    assert "hair" in bp_entry["outputs"][mask_bp]["text"][0]
