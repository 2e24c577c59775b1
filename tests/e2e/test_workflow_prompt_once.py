"""The prompt is typed once in every example workflow.

Every input that carries the user's prompt (the positive CLIPTextEncode texts, FreeCure PhotoMaker Encode Pair's
text, FreeCure Attribute Mask's prompt) is a link that leads back to one node where the prompt is written: the
workflow's Prompt node (core String (Multiline)) or, in the APG workflow, FreeCure Expression Split. String nodes in
between (Concatenate, which appends the identity word 'img' for the personalized prompt of the SD1.5 examples) are
followed. So an edited prompt can no longer leave the Attribute Mask with the old words.

* static, UI format (every file in workflows/) and API format (workflows/api/): the links above, one source per
  workflow, the linked text boxes' idle values equal to the prompt, negative prompts not fed by it;
* the benchmark protocol (freecure_core.eval.protocol) fills a new prompt into every input the Prompt node feeds;
* server: the face-parsing workflow's API copy with only the Prompt node's value edited runs, and FreeCure Attribute
  Mask's UI text names the new prompt's attributes and none of the old ones.
"""
from __future__ import annotations

import copy
import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import workflow_utils as wu  # noqa: E402

TYPED_SOURCES = {"PrimitiveStringMultiline": "value", "PrimitiveString": "value", "FreeCureExpressionSplit": "prompt"}
STRING_PASS_THROUGH = {"StringConcatenate"}  # string nodes between the prompt and an encoder
NEW_PROMPT = "close-up portrait photo of a man with green eyes, wearing a red hat and earrings"
NEW_WORDS, OLD_WORDS = ("eyes", "hat", "earrings"), ("hair", "glasses")


# ------------------------------------------------------------------------------------------ helpers
def _prompt_inputs(nodes) -> list[tuple[object, str]]:
    """(node, input name) of every input that carries the user's prompt; nodes: (id, type, title) triples."""
    out = []
    for nid, ntype, title in nodes:
        if ntype == "CLIPTextEncode" and not (title or "").startswith("Negative"):
            out.append((nid, "text"))
        elif ntype == "FreeCurePhotoMakerEncodePair":
            out.append((nid, "text"))
        elif ntype == "FreeCureAttributeMask":
            out.append((nid, "prompt"))
    return out


def _ui_root(wf: dict, nid: int, inp: str, path=()) -> tuple[int, tuple]:
    """The node a UI workflow's (node, input) text comes from, following string pass-through nodes; with the path."""
    nodes = {n["id"]: n for n in wf["nodes"]}
    links = {l[0]: l for l in wf["links"]}
    slots = [i for i in nodes[nid]["inputs"] if i["name"] == inp and i.get("link") is not None]
    assert slots and slots[0].get("widget") == {"name": inp}, \
        f"{nodes[nid]['type']} {nid}.{inp} is typed in the node, not linked from the prompt"
    src = nodes[links[slots[0]["link"]][1]]
    path = path + (src["type"],)
    if src["type"] in STRING_PASS_THROUGH:
        (linked,) = [i for i in src["inputs"] if i.get("link") is not None and i["type"] == "STRING"]
        return _ui_root(wf, src["id"], linked["name"], path)
    return src["id"], path


def _api_root(p: dict, nid: str, inp: str) -> str:
    value = p[nid]["inputs"][inp]
    assert isinstance(value, list), f"{p[nid]['class_type']} {nid}.{inp} holds text {value!r}, not a link"
    src = str(value[0])
    if p[src]["class_type"] in STRING_PASS_THROUGH:
        (linked,) = [k for k, v in p[src]["inputs"].items() if isinstance(v, list)]
        return _api_root(p, src, linked)
    return src


# ------------------------------------------------------------------------------------------ static
@pytest.mark.parametrize("name", wu.ALL_WORKFLOW_NAMES)
def test_every_prompt_input_comes_from_one_typed_source(name):
    wf = wu.load_ui(name)
    nodes = {n["id"]: n for n in wf["nodes"]}
    inputs = _prompt_inputs((n["id"], n["type"], n.get("title")) for n in wf["nodes"])
    assert inputs, f"{name}: no input reads the prompt"
    roots = {nid_inp: _ui_root(wf, *nid_inp) for nid_inp in inputs}
    sources = {root for root, _ in roots.values()}
    assert len(sources) == 1, f"{name}: the prompt is typed in {len(sources)} places: {roots}"
    (source,) = sources
    src = nodes[source]
    assert src["type"] in TYPED_SOURCES, src["type"]
    text = src["widgets_values"][0]
    assert isinstance(text, str) and text.strip(), text
    # the text boxes a link overrides show the prompt itself (what the user sees if a link is unplugged)
    for (nid, inp), (_, path) in roots.items():
        if path == (src["type"],) and src["type"] != "FreeCureExpressionSplit":
            assert nodes[nid]["widgets_values"][0] == text, (name, nid, inp)
    # negative prompts are their own text
    for n in wf["nodes"]:
        if n["type"] == "CLIPTextEncode" and (n.get("title") or "").startswith("Negative"):
            assert not [i for i in n["inputs"] if "widget" in i], (name, n["id"])


@pytest.mark.parametrize("name", wu.ALL_WORKFLOW_NAMES)
def test_the_api_copy_reads_the_prompt_from_the_same_node(name):
    p = wu.load_api(name)
    inputs = _prompt_inputs((nid, n["class_type"], n["_meta"]["title"]) for nid, n in p.items())
    roots = {_api_root(p, nid, inp) for nid, inp in inputs}
    assert len(roots) == 1, (name, roots)
    (root,) = roots
    assert p[root]["class_type"] in TYPED_SOURCES
    ui_root = _ui_root(wu.load_ui(name), int(inputs[0][0]), inputs[0][1])[0]
    assert root == str(ui_root), "node ids are kept in the API copy"


def test_protocol_fills_every_input_the_prompt_node_feeds():
    """freecure_core.eval.protocol finds the prompt through the Attribute Mask's link and writes the new text into
    the Prompt node and every input linked to it (the encoder, the mask, Concatenate's first string)."""
    from freecure_core.eval import protocol
    for name in ("freecure_face_parsing", "freecure_instantid", "freecure_photomaker", "freecure_apg"):
        p = wu.load_api(name)
        if not wu.nodes_of(p, "LoadImage"):  # the protocol puts the identity photo into the workflow's Load Image
            wu.add_node(p, "LoadImage", {"image": "reference.png"})
        mask = wu.only_node(p, "FreeCureAttributeMask")
        root = _api_root(p, mask, "prompt")
        slots = protocol.prompt_slots(p)
        assert (root, TYPED_SOURCES[p[root]["class_type"]]) in slots and (mask, "prompt") in slots, (name, slots)
        filled = protocol.fill(p, NEW_PROMPT, slots, "id.png", protocol.image_slot(p, None), 3)
        old_text = p[root]["inputs"][TYPED_SOURCES[p[root]["class_type"]]]
        assert filled[mask]["inputs"]["prompt"] == NEW_PROMPT
        assert filled[root]["inputs"][TYPED_SOURCES[p[root]["class_type"]]] == NEW_PROMPT
        assert old_text not in json.dumps(filled), f"{name}: the old prompt is left somewhere"
        assert p[mask]["inputs"]["prompt"] != NEW_PROMPT  # the workflow itself is not touched


# ------------------------------------------------------------------------------------------ server
@pytest.mark.e2e
def test_editing_the_one_prompt_changes_the_mask_words(comfy_server):
    import test_server_parsing as tsp
    p = tsp._small(comfy_server, "freecure_e2e_prompt_once/edited")
    mask, fd_sampler = wu.only_node(p, "FreeCureAttributeMask"), wu.only_node(p, "FreeCureFoundationSampler")
    source = _api_root(p, mask, "prompt")
    assert p[source]["class_type"] == "PrimitiveStringMultiline" and p[source]["_meta"]["title"] == "Prompt"
    fd_text = p[fd_sampler]["inputs"]["positive"][0]
    assert _api_root(p, fd_text, "text") == source, "the foundation prompt is read from the same node"
    before = copy.deepcopy(p)

    p[source]["inputs"]["value"] = NEW_PROMPT  # the only edit
    changed = {k for k in p if p[k] != before[k]}
    assert changed == {source}
    entry = wu.assert_success(comfy_server.run(p, timeout=240))
    (text,) = entry["outputs"][mask]["text"]
    assert text.startswith("from prompt:"), text
    for word in NEW_WORDS:
        assert word in text, (word, text)
    for word in OLD_WORDS:
        assert word not in text, (word, text)
