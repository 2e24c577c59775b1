"""ComfyUI workflow formats, pure Python (no ComfyUI import): what the headless runner needs to prepare prompts.

* ``ui_to_api(workflow, object_info)``: a UI-format workflow (what the ComfyUI frontend saves) to the API format
  ("prompt") that ``POST /prompt`` takes, using ``/object_info`` entries to know each node's widget inputs.
* ``is_api_format(obj)`` / ``is_ui_format(obj)``: which of the two a loaded JSON file is.
* ``apply_sets(prompt, ["node.input=value", ...])``: edit inputs by node id, title or unique class type.
* ``expand_sweeps(prompt, sweeps, repeat)``: one prompt per combination of swept values, times ``repeat`` seeds.

Set and sweep syntax (``python -m freecure_core.run --help`` shows the same):

``NODE.INPUT=VALUE``
    NODE is a node id (``"6"``), a node title (``_meta.title``, e.g. ``"Empty Latent Image"``) or a class type that
    occurs once (``EmptyLatentImage``); ``*`` means every node that has INPUT.  An unknown or ambiguous NODE, or an
    INPUT the node does not have, is an error that lists the candidates.  VALUE is parsed as JSON where it can be
    (``4``, ``0.5``, ``true``, ``["3", 0]`` for a link), else kept as text; an input that holds text keeps text
    (``text=123`` sets ``"123"``).  ``null`` removes the input (e.g. an optional link).
``NODE.INPUT=V1,V2,...`` (sweep)
    one prompt per value; a JSON list (``'["a, b", "c"]'``) when values contain commas.  Several sweeps combine as
    a product, the first one varying slowest.
``repeat N``
    each prompt N times; copy ``r`` (0-based) adds ``r`` to every literal ``seed`` / ``noise_seed`` input, so
    samplers that must share a seed (FreeCure's stage 1 and stage 3) keep sharing it.
"""
from __future__ import annotations

import copy
import itertools
import json

# Frontend-only nodes: no backend class, nothing to execute.
FRONTEND_ONLY = frozenset({"Note", "MarkdownNote"})
# Frontend-only nodes that carry values or links to other nodes (resolved away by the conversion).
PRIMITIVE_NODE, REROUTE_NODE = "PrimitiveNode", "Reroute"
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4
SEED_INPUTS = ("seed", "noise_seed")


class WorkflowError(ValueError):
    """A workflow, ``--set`` or ``--sweep`` that cannot be used; the message says what to change."""


# ------------------------------------------------------------------------------------------ format detection
def is_api_format(obj) -> bool:
    """True for an API-format prompt: a non-empty dict of node id -> {"class_type", "inputs"}."""
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(v, dict) and "class_type" in v and isinstance(v.get("inputs"), dict)
                    for v in obj.values()))


def is_ui_format(obj) -> bool:
    """True for a UI-format workflow (what the frontend saves): a dict with a ``nodes`` list."""
    return isinstance(obj, dict) and isinstance(obj.get("nodes"), list)


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
    return spec[0] == "INT" and name in SEED_INPUTS


def _has_upload_widget(spec: list) -> bool:
    """True where the frontend adds an upload button after this combo (Load Image); its value ('image') is saved."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return bool(opts.get("image_upload"))


def node_types(workflow: dict) -> set[str]:
    """The node types a UI-format workflow uses (frontend-only ones included)."""
    return {n["type"] for n in workflow["nodes"]}


def backend_types(workflow: dict) -> set[str]:
    """The node types of a UI-format workflow that need a backend class (what ``object_info`` must hold)."""
    return node_types(workflow) - FRONTEND_ONLY - {PRIMITIVE_NODE, REROUTE_NODE}


def _label(node: dict) -> str:
    return f"node {node['id']} ({node['type']})"


def _widget_values(node: dict, info: dict) -> dict:
    """Widget inputs of a node from its ``widgets_values``, skipping control_after_generate and upload values.
    Optional widgets after the last saved value (added to the node after the workflow was saved) are left out, so
    they take their defaults, as the frontend gives them."""
    specs = _input_specs(info)
    optional = set(info["input"].get("optional", {}))
    values = node.get("widgets_values") or []
    if isinstance(values, dict):  # some frontends save {name: value}
        return {name: values[name] for name, spec in specs if _is_widget(spec) and name in values}
    values, inputs, pos = list(values), {}, 0
    for name, spec in specs:
        if not _is_widget(spec):
            continue
        if pos >= len(values) and name in optional:
            continue
        if pos >= len(values):
            raise WorkflowError(f"FreeCure: {_label(node)}: widgets_values has no value for {name!r}: {values}; "
                                f"re-save the workflow with the node definitions of the ComfyUI that runs it")
        inputs[name] = values[pos]
        pos += 1 + int(_has_control_widget(name, spec)) + int(_has_upload_widget(spec))
    if pos != len(values):
        raise WorkflowError(f"FreeCure: {_label(node)}: {len(values) - pos} widget value(s) left over: {values}; "
                            f"the node's inputs differ from the installed node (update it or re-save the workflow)")
    return inputs


class _Graph:
    """Links of a UI workflow, followed through Reroute nodes; PrimitiveNode outputs become literal values."""

    def __init__(self, workflow: dict):
        self.nodes = {n["id"]: n for n in workflow["nodes"]}
        self.links = {}
        for link in workflow.get("links", []):
            if isinstance(link, dict):  # newer frontends: {"id", "origin_id", "origin_slot", "target_id", ...}
                link = [link["id"], link["origin_id"], link["origin_slot"], link["target_id"], link["target_slot"],
                        link.get("type")]
            self.links[link[0]] = link

    def source(self, link_id, where: str):
        """("link", [node_id, slot]) or ("value", literal) for what a link carries."""
        seen = set()
        while True:
            if link_id not in self.links:
                raise WorkflowError(f"FreeCure: {where}: link {link_id} is not in the workflow's links; "
                                    f"re-save the workflow in the ComfyUI frontend")
            _, src, src_slot, _, _, _ = self.links[link_id][:6]
            node = self.nodes[src]
            if node["type"] == PRIMITIVE_NODE:
                values = node.get("widgets_values") or []
                if not values:
                    raise WorkflowError(f"FreeCure: {where}: the Primitive node {src} has no value")
                return "value", values[0]
            if node["type"] == REROUTE_NODE:
                if src in seen:
                    raise WorkflowError(f"FreeCure: {where}: Reroute nodes form a loop at node {src}")
                seen.add(src)
                slots = node.get("inputs") or [{}]
                if slots[0].get("link") is None:
                    raise WorkflowError(f"FreeCure: {where}: Reroute node {src} has no input; connect it or "
                                        f"remove it")
                link_id = slots[0]["link"]
                continue
            if node["type"] in FRONTEND_ONLY or node.get("mode", MODE_ALWAYS) != MODE_ALWAYS:
                raise WorkflowError(f"FreeCure: {where} comes from {_label(node)} (mode {node.get('mode')}), "
                                    f"which does not run; un-mute/un-bypass it or disconnect the input")
            return "link", [str(src), src_slot]


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """API-format prompt for a UI-format workflow.

    object_info: ``/object_info`` of a server that has every node type used (all of it, or a dict holding at least
    those entries).  Widget values are matched to the widget inputs in definition order, skipping the frontend's
    control_after_generate and upload values; links become ``[source_node_id, slot]`` (followed through Reroute
    nodes; a PrimitiveNode's value is written into the inputs it feeds).  Note nodes and muted nodes are left out;
    bypassed nodes are refused.
    """
    if not is_ui_format(workflow):
        raise WorkflowError("FreeCure: not a UI-format workflow (no 'nodes' list); pass the file the ComfyUI "
                            "frontend saves, or an API-format prompt")
    graph = _Graph(workflow)
    prompt = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        ntype = node["type"]
        if ntype in FRONTEND_ONLY or ntype in (PRIMITIVE_NODE, REROUTE_NODE):
            continue
        if node.get("mode", MODE_ALWAYS) == MODE_NEVER:
            continue
        if node.get("mode", MODE_ALWAYS) == MODE_BYPASS:
            raise WorkflowError(f"FreeCure: {_label(node)} is bypassed, which the conversion does not support; "
                                f"un-bypass or delete it")
        if ntype not in object_info:
            raise WorkflowError(f"FreeCure: {_label(node)}: type {ntype!r} is not installed (not in /object_info); "
                                f"install the custom node pack that provides it")
        info = object_info[ntype]
        inputs = _widget_values(node, info)
        known = {name for name, _ in _input_specs(info)}
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name", slot["name"])
            if name not in known:
                raise WorkflowError(f"FreeCure: {_label(node)} has no input {name!r} (inputs: {sorted(known)}); "
                                    f"update the node pack or re-save the workflow")
            kind, value = graph.source(slot["link"], f"{_label(node)} input {name!r}")
            inputs[name] = value
        title = node.get("title") or info.get("display_name") or ntype
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": ntype, "_meta": {"title": title}}
    return prompt


# ------------------------------------------------------------------------------------------ --set
def parse_value(text: str):
    """A ``--set`` value: JSON where it parses (numbers, booleans, null, lists, quoted strings), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _describe(prompt: dict, ids) -> str:
    return ", ".join(f"{i} ({prompt[i]['class_type']} {prompt[i].get('_meta', {}).get('title', '')!r})"
                     for i in sorted(ids, key=_id_key))


def _id_key(node_id: str):
    return (0, int(node_id), "") if str(node_id).isdigit() else (1, 0, str(node_id))


def find_nodes(prompt: dict, ref: str, input_name: str | None = None) -> list[str]:
    """Node ids a ``--set`` NODE names: an id, a title, a class type occurring once, or ``*`` (nodes with input)."""
    if ref == "*":
        ids = [k for k, v in prompt.items() if input_name in v["inputs"]]
        if not ids:
            raise WorkflowError(f"FreeCure: no node has an input {input_name!r}; nodes: {_describe(prompt, prompt)}")
        return sorted(ids, key=_id_key)
    if ref in prompt:
        return [ref]
    for what, key in (("title", lambda v: v.get("_meta", {}).get("title")), ("class type", lambda v: v["class_type"])):
        ids = [k for k, v in prompt.items() if key(v) == ref]
        if len(ids) == 1:
            return ids
        if ids:
            raise WorkflowError(f"FreeCure: {ref!r} is the {what} of {len(ids)} nodes: {_describe(prompt, ids)}; "
                                f"name one by id (e.g. {sorted(ids, key=_id_key)[0]}.{input_name or 'INPUT'})")
    raise WorkflowError(f"FreeCure: no node {ref!r} (by id, title or class type); nodes: {_describe(prompt, prompt)}")


def split_spec(spec: str) -> tuple[str, str, str]:
    """``NODE.INPUT=VALUE`` -> (NODE, INPUT, VALUE text); NODE may itself contain dots."""
    target, eq, value = spec.partition("=")
    node, dot, name = target.strip().rpartition(".")
    if not eq or not dot or not node or not name:
        raise WorkflowError(f"FreeCure: {spec!r} is not NODE.INPUT=VALUE (e.g. KSampler.steps=4 or 6.width=64)")
    return node, name, value


def _coerce(old, new):
    """Text inputs stay text (``text=123`` means ``"123"``)."""
    if isinstance(old, str) and isinstance(new, (int, float, bool)):
        return json.dumps(new)
    return new


def set_input(prompt: dict, node: str, name: str, value) -> list[str]:
    """Set ``name`` on the nodes ``node`` refers to, in place; returns their ids.  ``None`` removes the input."""
    ids = find_nodes(prompt, node, name)
    for nid in ids:
        inputs = prompt[nid]["inputs"]
        if name not in inputs:
            raise WorkflowError(f"FreeCure: node {nid} ({prompt[nid]['class_type']}) has no input {name!r} in this "
                                f"workflow; its inputs: {', '.join(sorted(inputs)) or '(none)'}")
        if value is None:
            del inputs[name]
        else:
            inputs[name] = _coerce(inputs[name], value)
    return ids


def apply_sets(prompt: dict, sets) -> dict:
    """A copy of ``prompt`` with every ``NODE.INPUT=VALUE`` of ``sets`` applied in order."""
    out = copy.deepcopy(prompt)
    for spec in sets or ():
        node, name, text = split_spec(spec)
        set_input(out, node, name, parse_value(text))
    return out


# ------------------------------------------------------------------------------------------ sweeps
def sweep_values(text: str) -> list:
    """Values of a sweep: a JSON list, else comma-separated items each parsed like a ``--set`` value."""
    parsed = parse_value(text)
    if isinstance(parsed, list):
        values = parsed
    else:
        values = [parse_value(v.strip()) for v in text.split(",")]
    if not values:
        raise WorkflowError(f"FreeCure: the sweep {text!r} has no values; give V1,V2,... or a JSON list")
    return values


def offset_seeds(prompt: dict, offset: int) -> dict:
    """A copy of ``prompt`` with ``offset`` added to every literal integer seed / noise_seed input."""
    out = copy.deepcopy(prompt)
    if offset:
        for node in out.values():
            for name in SEED_INPUTS:
                value = node["inputs"].get(name)
                if isinstance(value, int) and not isinstance(value, bool):
                    node["inputs"][name] = value + offset
    return out


def expand_sweeps(prompt: dict, sweeps=(), repeat: int = 1) -> list[tuple[dict, dict]]:
    """(prompt, variation) for every combination of the sweeps' values, each repeated ``repeat`` times.

    variation: ``{"sweep": {"NODE.INPUT": value, ...}, "repeat": r}``; prompts are new copies.
    """
    if repeat < 1:
        raise WorkflowError(f"FreeCure: repeat must be at least 1, got {repeat}")
    axes = []
    for spec in sweeps or ():
        node, name, text = split_spec(spec)
        find_nodes(prompt, node, name)  # fail before any prompt runs
        axes.append((f"{node}.{name}", node, name, sweep_values(text)))
    jobs = []
    for combo in itertools.product(*(values for *_, values in axes)):
        swept = copy.deepcopy(prompt)
        for (key, node, name, _), value in zip(axes, combo):
            set_input(swept, node, name, value)
        for r in range(repeat):
            variation = {"sweep": {key: value for (key, *_), value in zip(axes, combo)}, "repeat": r}
            jobs.append((offset_seeds(swept, r), variation))
    return jobs
