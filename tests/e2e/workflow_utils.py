"""Helpers for the example workflows in ``workflows/``.

* ``ui_to_api``: a UI-format workflow (what the ComfyUI frontend saves) to the API format ("prompt") that
  ``POST /prompt`` takes, using ``/object_info`` to know each node's widget inputs.  It lives in the package
  (``freecure_core.runner.workflow_format``, shared with the headless runner) and is re-exported here with its helpers.
  ``workflows/api/`` holds the committed result; tests check that the two never drift.
* prompt edits used by the e2e tests: find nodes, shrink a workflow for the tiny test checkpoint, keep only what an
  output node needs.

Regenerate ``workflows/api/`` after editing a UI workflow with
``FREECURE_WRITE_API_WORKFLOWS=1 .venv/bin/python -m pytest -q tests/e2e -k api_copy``.
"""
from __future__ import annotations

import copy
import json
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from freecure_core.runner import workflow_format as _wf  # noqa: E402

# the conversion and its helpers, re-exported (tests use wu.<name>)
FRONTEND_ONLY, WIDGET_TYPES = _wf.FRONTEND_ONLY, _wf.WIDGET_TYPES
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = _wf.MODE_ALWAYS, _wf.MODE_NEVER, _wf.MODE_BYPASS
_input_specs, _is_widget = _wf._input_specs, _wf._is_widget
_has_control_widget, _has_upload_widget = _wf._has_control_widget, _wf._has_upload_widget
node_types, ui_to_api = _wf.node_types, _wf.ui_to_api

WORKFLOWS_DIR = REPO_ROOT / "workflows"
API_DIR = WORKFLOWS_DIR / "api"
WORKFLOW_NAMES = ("freecure_replay", "freecure_lockstep", "freecure_custom_sampler")  # drawn-mask workflows
IDENTITY_WORKFLOW_NAMES = ("freecure_instantid", "freecure_crossfaceid", "freecure_photomaker")  # built-in pairs
PEER_WORKFLOW_NAMES = ("freecure_peer_instantid", "freecure_peer_pulid", "freecure_peer_faceid")  # need peer packs
APG_WORKFLOW_NAMES = ("freecure_apg",)  # the four stages, APG included, from one prompt
FLUX_WORKFLOW_NAMES = ("freecure_flux",)  # FLUX: needs FLUX.1 files (T5), so converted and loaded, not run here
PEER_FLUX_WORKFLOW_NAMES = ("freecure_peer_pulid_flux",)  # FLUX + a peer pack (lldacing's PuLID-FLUX port)
# every file in workflows/ (the template browser lists them all); the peer ones convert only with the peer packs'
# /object_info (conftest comfy_peer_server)
ALL_WORKFLOW_NAMES = (WORKFLOW_NAMES + ("freecure_face_parsing",) + IDENTITY_WORKFLOW_NAMES + PEER_WORKFLOW_NAMES
                      + APG_WORKFLOW_NAMES + FLUX_WORKFLOW_NAMES + PEER_FLUX_WORKFLOW_NAMES)
SERVER_WORKFLOW_NAMES = tuple(n for n in ALL_WORKFLOW_NAMES  # no peer packs needed
                              if n not in PEER_WORKFLOW_NAMES + PEER_FLUX_WORKFLOW_NAMES)


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


# ------------------------------------------------------------------------------------------ prompt edits
def assert_well_formed(wf: dict) -> dict:
    """Assert a UI workflow's bookkeeping is consistent (ids, order, links on both ends, link types, linked
    widget sockets last, S&R names); returns its nodes by id."""
    assert wf["version"] == 0.4 and {"groups", "config", "extra"} <= set(wf)
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]) and wf["last_node_id"] == max(nodes)
    assert wf["last_link_id"] == max(l[0] for l in wf["links"])
    assert sorted(n["order"] for n in wf["nodes"]) == list(range(len(nodes)))
    for lid, src, src_slot, dst, dst_slot, typ in wf["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert lid in (out["links"] or []) and inp["link"] == lid, (lid, out, inp)
        assert out["type"] == inp["type"] == typ
        assert nodes[src]["order"] < nodes[dst]["order"]
    link_ids = {l[0] for l in wf["links"]}
    for n in wf["nodes"]:
        assert all(i["link"] is None or i["link"] in link_ids for i in n.get("inputs", []))
        assert all(set(o["links"] or []) <= link_ids for o in n.get("outputs", []))
        widget_inputs = [i for i in n.get("inputs", []) if "widget" in i]
        assert all(i["widget"] == {"name": i["name"]} and i["link"] is not None for i in widget_inputs), n
        assert n["inputs"][len(n["inputs"]) - len(widget_inputs):] == widget_inputs, "widget sockets come last"
        if n["type"] not in FRONTEND_ONLY:
            assert n["properties"]["Node name for S&R"] == n["type"]
    return nodes


def output_problems(node: dict, node_info: dict) -> list[str]:
    """How a UI node's output sockets disagree with the server's definition.  FreeCure's own nodes must match exactly.
    A core node may offer outputs a workflow saved on an older ComfyUI does not list (0.33 gave SaveImage and
    PreviewImage an IMAGE pass-through); the frontend adds those on load, so for core nodes the workflow's outputs
    must be the first ones the server lists, in type and name."""
    mine = [(o["type"], o["name"]) for o in node.get("outputs", [])]
    server = list(zip(node_info["output"], node_info["output_name"]))
    if node["type"].startswith("FreeCure") or node_info.get("python_module", "").startswith("custom_nodes."):
        return [] if mine == server else [f"{node['type']}: outputs {mine} != the server's {server}"]
    return [] if mine == server[:len(mine)] else [f"{node['type']}: outputs {mine} are not the first of {server}"]


def assert_success(entry: dict) -> dict:
    """Assert a /history entry finished successfully (showing the end of its status otherwise); returns it."""
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-3000:]
    return entry


def use_tiny_parser(prompt: dict, parser: str = "tiny_bisenet.safetensors") -> dict:
    """Point the prompt's FreeCure Face Parser Loader at the test parser file, on the CPU."""
    loader = prompt[only_node(prompt, "FreeCureFaceParserLoader")]["inputs"]
    loader["parser"], loader["device"] = parser, "cpu"
    return prompt


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
