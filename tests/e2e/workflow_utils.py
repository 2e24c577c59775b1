"""Helpers for the example workflows in ``workflows/``.

* ``ui_to_api``: a UI-format workflow (what the ComfyUI frontend saves) to the API format ("prompt") that
  ``POST /prompt`` takes, using ``/object_info`` to know each node's widget inputs.  ``workflows/api/`` holds the
  committed result; tests check that the two never drift.
* prompt edits used by the e2e tests: find nodes, shrink a workflow for the tiny test checkpoint, keep only what an
  output node needs.

Regenerate ``workflows/api/`` after editing a UI workflow with
``FREECURE_WRITE_API_WORKFLOWS=1 .venv/bin/python -m pytest -q tests/e2e -k api_copy``.
"""
from __future__ import annotations

import copy
import json
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
WORKFLOW_NAMES = ("freecure_replay", "freecure_lockstep", "freecure_custom_sampler")  # drawn-mask workflows
IDENTITY_WORKFLOW_NAMES = ("freecure_instantid", "freecure_crossfaceid", "freecure_photomaker")  # built-in pairs
PEER_WORKFLOW_NAMES = ("freecure_peer_instantid", "freecure_peer_pulid", "freecure_peer_faceid")  # need peer packs
APG_WORKFLOW_NAMES = ("freecure_apg",)  # the four stages, APG included, from one prompt
# every file in workflows/ (the template browser lists them all); the peer ones convert only with
# tests/e2e/peer_nodes.py merged into /object_info
ALL_WORKFLOW_NAMES = (WORKFLOW_NAMES + ("freecure_face_parsing",) + IDENTITY_WORKFLOW_NAMES + PEER_WORKFLOW_NAMES
                      + APG_WORKFLOW_NAMES)
SERVER_WORKFLOW_NAMES = tuple(n for n in ALL_WORKFLOW_NAMES if n not in PEER_WORKFLOW_NAMES)  # no peer packs needed

# Frontend-only nodes: no backend class, nothing to execute.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote"})
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


# ------------------------------------------------------------------------------------------ files
def load_ui(name: str) -> dict:
    return json.loads((WORKFLOWS_DIR / f"{name}.json").read_text())


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def write_api(name: str, prompt: dict) -> pathlib.Path:
    API_DIR.mkdir(parents=True, exist_ok=True)
    path = API_DIR / f"{name}.json"
    path.write_text(json.dumps(prompt, indent=2) + "\n")
    return path


# ------------------------------------------------------------------------------------------ UI -> API
def _input_specs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in definition order (required, then optional)."""
    inputs = info["input"]
    order = info.get("input_order") or {k: list(inputs.get(k, {})) for k in ("required", "optional")}
    return [(name, inputs[group][name]) for group in ("required", "optional") for name in order.get(group, [])]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    """True where the frontend adds a 'control_after_generate' widget (fixed/increment/...) after this one."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if "control_after_generate" in opts:
        return bool(opts["control_after_generate"])
    return spec[0] == "INT" and name in ("seed", "noise_seed")


def _has_upload_widget(spec: list) -> bool:
    """True where the frontend adds an upload button after this combo (Load Image); its value ('image') is saved."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(opts.get("image_upload"))


def node_types(workflow: dict) -> set[str]:
    return {n["type"] for n in workflow["nodes"]}


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """API-format prompt for a UI-format workflow.

    object_info: ``/object_info`` of a server that has every node type used (all of it, or a dict holding at least
    those entries).  Widget values are matched to the widget inputs in definition order, skipping the frontend's
    control_after_generate values; links become ``[source_node_id, slot]``.  Note nodes and muted nodes are left out.
    """
    links = {l[0]: l for l in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    prompt = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        ntype = node["type"]
        if ntype in FRONTEND_ONLY or node.get("mode", MODE_ALWAYS) == MODE_NEVER:
            continue
        if node.get("mode", MODE_ALWAYS) == MODE_BYPASS:
            raise NotImplementedError(f"node {node['id']} ({ntype}) is bypassed; not supported")
        if ntype not in object_info:
            raise KeyError(f"node {node['id']}: type {ntype!r} is not in /object_info")
        info = object_info[ntype]
        specs = _input_specs(info)
        inputs: dict = {}

        values = list(node.get("widgets_values") or [])
        pos = 0
        for name, spec in specs:
            if not _is_widget(spec):
                continue
            if pos >= len(values):
                raise ValueError(f"node {node['id']} ({ntype}): widgets_values has no value for {name!r}: {values}")
            inputs[name] = values[pos]
            pos += 1 + int(_has_control_widget(name, spec)) + int(_has_upload_widget(spec))
        if pos != len(values):
            raise ValueError(f"node {node['id']} ({ntype}): {len(values) - pos} widget value(s) left over: {values}")

        known = {name for name, _ in specs}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name", slot["name"])
            if name not in known:
                raise KeyError(f"node {node['id']} ({ntype}) has no input {name!r}")
            _, src, src_slot, dst, _, _ = links[slot["link"]]
            assert dst == node["id"], f"link {slot['link']} does not end at node {node['id']}"
            src_node = nodes[src]
            if src_node["type"] in FRONTEND_ONLY or src_node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
                raise NotImplementedError(f"node {node['id']}: input {name!r} comes from {src_node['type']} "
                                          f"(mode {src_node.get('mode')}); not supported")
            inputs[name] = [str(src), src_slot]

        title = node.get("title") or info.get("display_name") or ntype
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": ntype, "_meta": {"title": title}}
    return prompt


# ------------------------------------------------------------------------------------------ prompt edits
def nodes_of(prompt: dict, class_type: str) -> list[str]:
    """Ids of the prompt's nodes of one type, in id order."""
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=int)


def only_node(prompt: dict, class_type: str) -> str:
    ids = nodes_of(prompt, class_type)
    assert len(ids) == 1, f"expected one {class_type}, found {ids}"
    return ids[0]


def ancestors(prompt: dict, node_id: str) -> set[str]:
    """node_id and every node it (transitively) takes an input from."""
    seen, todo = set(), [node_id]
    while todo:
        nid = todo.pop()
        if nid in seen:
            continue
        seen.add(nid)
        todo += [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
    return seen


def keep_only(prompt: dict, *output_ids: str) -> dict:
    """The sub-prompt that the given output nodes need (other output nodes, e.g. previews, removed)."""
    keep = set().union(*(ancestors(prompt, o) for o in output_ids))
    return {k: copy.deepcopy(v) for k, v in prompt.items() if k in keep}


def shrink(prompt: dict, checkpoint: str, width: int, height: int, steps: int, prefix: str | None = None) -> dict:
    """A copy of an example prompt for the tiny test checkpoint: another checkpoint, image size and step count.

    The drawn mask (SolidMask / MaskComposite sizes and offsets) is scaled with the image so it keeps the image's
    size and aspect; SaveImage prefixes become ``prefix`` when given.
    """
    p = copy.deepcopy(prompt)
    (latent,) = [p[i]["inputs"] for i in nodes_of(p, "EmptyLatentImage")]
    sx, sy = width / latent["width"], height / latent["height"]
    for node in p.values():
        ins, ct = node["inputs"], node["class_type"]
        if ct == "CheckpointLoaderSimple":
            ins["ckpt_name"] = checkpoint
        elif ct == "EmptyLatentImage":
            ins["width"], ins["height"] = width, height
        elif ct == "SolidMask":
            ins["width"], ins["height"] = max(1, round(ins["width"] * sx)), max(1, round(ins["height"] * sy))
        elif ct == "MaskComposite":
            ins["x"], ins["y"] = round(ins["x"] * sx), round(ins["y"] * sy)
        elif ct == "SaveImage" and prefix is not None:
            ins["filename_prefix"] = prefix
        if "steps" in ins and not isinstance(ins["steps"], list):
            ins["steps"] = steps
    return p


def add_node(prompt: dict, class_type: str, inputs: dict) -> str:
    """Add a node with the next free id; returns its id."""
    nid = str(max(int(k) for k in prompt) + 1)
    prompt[nid] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": class_type}}
    return nid
