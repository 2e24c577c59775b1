"""Lays out FreeCure's identity and APG example workflows (UI format, what the ComfyUI frontend saves) from short
descriptions, and writes them to ``workflows/``; also the "FreeCure" subgraph blueprint in ``subgraphs/``.

    python scripts/workflow_builder.py            # rewrite every workflow and blueprint described below
    python scripts/workflow_builder.py NAME ...   # only these (e.g. freecure_instantid, FreeCure)
    python scripts/workflow_builder.py --check    # exit 1 if a file differs from its description

Pure Python (no ComfyUI import). A description is a function that adds nodes to a ``Graph`` and connects their
sockets by name; the graph assigns node and link ids, the execution ``order``, positions (a simple column
layout: nodes stack down their column, columns are as wide as their widest node, bands of rows stack down the
canvas) and writes LiteGraph "version 0.4" JSON as the existing workflows have it:

* ``links``: ``[link_id, from_node, from_slot, to_node, to_slot, type]``; each input holds its link id, each
  output the list of its link ids (``null`` when unconnected);
* ``inputs`` lists a node's sockets (inputs that are not widgets), optional ones with ``"shape": 7``;
* ``widgets_values``: the widget inputs' values in definition order, with the frontend's
  "control_after_generate" value right after a seed (``42, "fixed"``) and the upload button's value after
  Load Image's file (``"face.png", "image"``);
* a widget input fed by a link (``Graph.connect_widget``: e.g. a STRING output into CLIPTextEncode's text) is listed
  after the sockets with ``"widget": {"name": ...}``, as the frontend saves it; its widget value stays in
  ``widgets_values`` (the link wins when the prompt runs);
* ``groups``: LiteGraph groups (``Graph.group``: title, color, members), each ``bounding`` [x, y, w, h] around its
  member nodes (title bars included) with room for the group's own title; no other node may touch a group.

A subgraph blueprint (``Blueprint``, served by ComfyUI from ``<pack>/subgraphs/*.json`` under ``/global_subgraphs``)
is the same kind of graph inside ``definitions.subgraphs[0]`` (links as objects, the subgraph's input and output
nodes as ids -10 and -20), with one node of that subgraph's type as the file's only top-level node.

Socket signatures come from ``SOCKETS`` below (written from the nodes' declarations: nodes/*.py for FreeCure,
ComfyUI's nodes, the packs' sources for the peer packs). tests/e2e/test_workflows_identity.py checks every
workflow against the server's /object_info (the peer workflows against a server with the packs installed);
regenerate the API copies in workflows/api/ after a change with
``FREECURE_WRITE_API_WORKFLOWS=1 .venv/bin/python -m pytest -q tests/e2e/test_workflows_identity.py``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import uuid
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS_DIR = ROOT / "workflows"
SUBGRAPHS_DIR = ROOT / "subgraphs"  # ComfyUI serves <pack>/subgraphs/*.json as subgraph blueprints

# ------------------------------------------------------------------------------------------ node sockets
# type: (inputs, outputs). "name:TYPE"; "name?:TYPE" = optional input. Only sockets: widget inputs are given
# as widget values in each description.
SOCKETS: dict[str, tuple[str, str]] = {
    # ComfyUI core
    "CheckpointLoaderSimple": ("", "MODEL:MODEL CLIP:CLIP VAE:VAE"),
    "CLIPTextEncode": ("clip:CLIP", "CONDITIONING:CONDITIONING"),
    "EmptyLatentImage": ("", "LATENT:LATENT"),
    "VAEDecode": ("samples:LATENT vae:VAE", "IMAGE:IMAGE"),
    "PreviewImage": ("images:IMAGE", ""),
    "SaveImage": ("images:IMAGE", ""),
    "LoadImage": ("", "IMAGE:IMAGE MASK:MASK"),
    "ControlNetLoader": ("", "CONTROL_NET:CONTROL_NET"),
    "PhotoMakerLoader": ("", "PHOTOMAKER:PHOTOMAKER"),
    "UNETLoader": ("", "MODEL:MODEL"),
    "DualCLIPLoader": ("", "CLIP:CLIP"),
    "VAELoader": ("", "VAE:VAE"),
    "FluxGuidance": ("conditioning:CONDITIONING", "CONDITIONING:CONDITIONING"),
    "ConditioningZeroOut": ("conditioning:CONDITIONING", "CONDITIONING:CONDITIONING"),
    "EmptySD3LatentImage": ("", "LATENT:LATENT"),
    "PrimitiveStringMultiline": ("", "STRING:STRING"),  # comfy_extras/nodes_primitive.py (0.3.x and 0.33)
    # FreeCure (nodes/sampling.py, nodes/parsing.py, nodes/instantid.py, nodes/photomaker.py, nodes/identity.py)
    "FreeCureFoundationSampler": ("model_fd:MODEL positive:CONDITIONING negative:CONDITIONING latent_image:LATENT",
                                  "fd_latent:LATENT kv:FREECURE_KV"),
    "FreeCureSampler": ("model_pd:MODEL model_fd:MODEL positive:CONDITIONING negative:CONDITIONING "
                        "fd_positive:CONDITIONING fd_negative:CONDITIONING latent_image:LATENT fasa:FREECURE_FASA "
                        "kv?:FREECURE_KV", "pd_latent:LATENT fd_latent:LATENT"),
    "FreeCureFASAConfig": ("mask:MASK", "fasa:FREECURE_FASA"),
    "FreeCureFaceParserLoader": ("", "face_parser:FACE_PARSER"),
    "FreeCureFaceParse": ("face_parser:FACE_PARSER image:IMAGE", "face_parse:FACE_PARSE preview:IMAGE"),
    "FreeCureAttributeMask": ("face_parse:FACE_PARSE image?:IMAGE", "mask:MASK preview:IMAGE info:STRING"),
    "FreeCureInstantIDLoader": ("", "instantid:FREECURE_INSTANTID"),
    "FreeCureInstantIDFaceAnalysis": ("", "face_analysis:FREECURE_FACE_ANALYSIS"),
    "FreeCureInstantIDPair": ("instantid:FREECURE_INSTANTID face_analysis:FREECURE_FACE_ANALYSIS "
                              "control_net:CONTROL_NET image:IMAGE model:MODEL positive:CONDITIONING "
                              "negative:CONDITIONING image_kps?:IMAGE",
                              "pd_model:MODEL pd_positive:CONDITIONING pd_negative:CONDITIONING fd_model:MODEL "
                              "fd_positive:CONDITIONING fd_negative:CONDITIONING kps_image:IMAGE"),
    "FreeCurePhotoMakerEncodePair": ("photomaker:PHOTOMAKER image:IMAGE clip:CLIP",
                                     "pd_conditioning:CONDITIONING fd_conditioning:CONDITIONING"),
    "FreeCureZeroFaceEmbeds": ("face_embeds:FACE_EMBEDS", "fd_face_embeds:FACE_EMBEDS"),
    "FreeCureZeroIdentityModel": ("model_pd:MODEL", "model_fd:MODEL"),
    "FreeCureExpressionSplit": ("", "template:STRING attributes:STRING"),
    "FreeCureAPG": ("model:MODEL samples:LATENT template:CONDITIONING attributes:CONDITIONING negative:CONDITIONING",
                    "latent:LATENT"),
    # cubiq/ComfyUI_InstantID (InstantID.py)
    "InstantIDModelLoader": ("", "INSTANTID:INSTANTID"),
    "InstantIDFaceAnalysis": ("", "FACEANALYSIS:FACEANALYSIS"),
    "FaceKeypointsPreprocessor": ("faceanalysis:FACEANALYSIS image:IMAGE", "IMAGE:IMAGE"),
    "InstantIDAttentionPatch": ("instantid:INSTANTID insightface:FACEANALYSIS image:IMAGE model:MODEL mask?:MASK",
                                "MODEL:MODEL FACE_EMBEDS:FACE_EMBEDS"),
    "ApplyInstantIDControlNet": ("face_embeds:FACE_EMBEDS control_net:CONTROL_NET image_kps:IMAGE "
                                 "positive:CONDITIONING negative:CONDITIONING mask?:MASK",
                                 "positive:CONDITIONING negative:CONDITIONING"),
    # cubiq/PuLID_ComfyUI (pulid.py)
    "PulidModelLoader": ("", "PULID:PULID"),
    "PulidEvaClipLoader": ("", "EVA_CLIP:EVA_CLIP"),
    "PulidInsightFaceLoader": ("", "FACEANALYSIS:FACEANALYSIS"),
    "ApplyPulid": ("model:MODEL pulid:PULID eva_clip:EVA_CLIP face_analysis:FACEANALYSIS image:IMAGE "
                   "attn_mask?:MASK", "MODEL:MODEL"),
    # cubiq/ComfyUI_IPAdapter_plus (IPAdapterPlus.py)
    "IPAdapterUnifiedLoaderFaceID": ("model:MODEL ipadapter?:IPADAPTER", "MODEL:MODEL ipadapter:IPADAPTER"),
    "IPAdapterFaceID": ("model:MODEL ipadapter:IPADAPTER image:IMAGE image_negative?:IMAGE attn_mask?:MASK "
                        "clip_vision?:CLIP_VISION insightface?:INSIGHTFACE", "MODEL:MODEL face_image:IMAGE"),
    # lldacing/ComfyUI_PuLID_Flux_ll (pulidflux.py)
    "PulidFluxModelLoader": ("", "PULIDFLUX:PULIDFLUX"),
    "PulidFluxEvaClipLoader": ("", "EVA_CLIP:EVA_CLIP"),
    "PulidFluxInsightFaceLoader": ("", "FACEANALYSIS:FACEANALYSIS"),
    "ApplyPulidFlux": ("model:MODEL pulid_flux:PULIDFLUX eva_clip:EVA_CLIP face_analysis:FACEANALYSIS image:IMAGE "
                       "attn_mask?:MASK options?:OPTIONS", "MODEL:MODEL"),
}

# Sizes the existing workflows use; other nodes get an estimate from their sockets and widgets.
SIZES: dict[str, tuple[int, int]] = {
    "CheckpointLoaderSimple": (340, 98), "CLIPTextEncode": (420, 170), "EmptyLatentImage": (320, 106),
    "VAEDecode": (210, 46), "PreviewImage": (380, 400), "SaveImage": (400, 440), "LoadImage": (320, 360),
    "FreeCureFoundationSampler": (340, 420), "FreeCureSampler": (340, 470), "FreeCureFASAConfig": (340, 250),
    "FreeCureFaceParserLoader": (340, 130), "FreeCureFaceParse": (320, 122), "FreeCureAttributeMask": (380, 300),
    "FreeCurePhotoMakerEncodePair": (420, 220), "FreeCureExpressionSplit": (420, 200), "FreeCureAPG": (340, 400),
    "PrimitiveStringMultiline": (420, 150),
}
NOTE_COLOR = ("#432", "#653")
POSITIVE_COLOR = ("#232", "#353")
NEGATIVE_COLOR = ("#322", "#533")
TITLE_H = 30   # LiteGraph draws the title bar above a node's pos
GAP = 40       # free space between stacked nodes and between columns
MARGIN = 20
GROUP_PAD = 10      # space between a group's edge and its nodes
GROUP_TITLE_H = 34  # a group's title bar (font size 24)
GROUP_FONT = 24


def _sockets(spec: str) -> list[tuple[str, str, bool]]:
    out = []
    for item in spec.split():
        name, typ = item.split(":")
        out.append((name.rstrip("?"), typ, name.endswith("?")))
    return out


# ------------------------------------------------------------------------------------------ graph
@dataclass
class Node:
    type: str
    widgets: list
    title: str | None
    col: int
    band: int
    size: tuple[int, int]
    color: tuple[str, str] | None
    inputs: list[tuple[str, str, bool]]
    outputs: list[tuple[str, str, bool]]
    id: int = 0
    stack: int = 0  # place in its column cell: lower stacks above (then by id)
    pos: tuple[int, int] = (0, 0)
    in_links: dict = field(default_factory=dict)    # input name -> link id
    out_links: dict = field(default_factory=dict)   # output name -> [link ids]
    widget_links: list = field(default_factory=list)  # widget inputs fed by a link, in connection order

    def slot(self, kind: str, name: str) -> int:
        sockets = self.inputs if kind == "input" else self.outputs
        names = [s[0] for s in sockets]
        if name not in names:
            raise KeyError(f"{self.type} has no {kind} {name!r} (has {names})")
        return names.index(name)


@dataclass
class Group:
    title: str
    color: str
    members: list


class Graph:
    """A UI workflow under construction: add() nodes into columns, connect() sockets, then to_json()."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[Group] = []
        self.band_no = 0

    def band(self) -> None:
        """Start a new band of rows below everything placed so far."""
        self.band_no += 1

    def add(self, ntype: str, *widgets, col: int, title: str | None = None, size: tuple[int, int] | None = None,
            color: tuple[str, str] | None = None, band: int | None = None, stack: int = 0) -> Node:
        """A node in column `col` of the current band (or of an earlier `band`), below that cell's nodes (above
        those with a higher `stack`: a node added last, e.g. to keep the other nodes' ids, can sit on top)."""
        ins, outs = SOCKETS[ntype]
        inputs, outputs = _sockets(ins), _sockets(outs)
        if size is None:
            size = SIZES.get(ntype) or (340, 20 + 22 * max(len(inputs), len(outputs), 1) + 26 * len(widgets))
        node = Node(ntype, list(widgets), title, col, self.band_no if band is None else band, size, color, inputs,
                    outputs, id=len(self.nodes) + 1, stack=stack)
        self.nodes.append(node)
        return node

    def note(self, text: str, *, col: int, size: tuple[int, int] = (340, 200), band: int | None = None) -> Node:
        node = Node("Note", [text], None, col, self.band_no if band is None else band, size, NOTE_COLOR, [], [],
                    id=len(self.nodes) + 1)
        self.nodes.append(node)
        return node

    def group(self, title: str, members: list[Node], color: str) -> Group:
        """A LiteGraph group drawn around `members` (laid out in to_json)."""
        grp = Group(title, color, list(members))
        self.groups.append(grp)
        return grp

    def connect(self, src: Node, output: str, dst: Node, inp: str) -> None:
        out_slot, in_slot = src.slot("output", output), dst.slot("input", inp)
        if inp in dst.in_links:
            raise ValueError(f"{dst.type}.{inp} is already connected")
        typ = src.outputs[out_slot][1]
        if dst.inputs[in_slot][1] != typ:
            raise TypeError(f"{src.type}.{output} ({typ}) -> {dst.type}.{inp} ({dst.inputs[in_slot][1]})")
        link_id = len(self.links) + 1
        self.links.append([link_id, src.id, out_slot, dst.id, in_slot, typ])
        dst.in_links[inp] = link_id
        src.out_links.setdefault(output, []).append(link_id)

    def connect_widget(self, src: Node, output: str, dst: Node, widget: str) -> None:
        """Feed dst's widget input `widget` from src's output (the frontend's widget socket). The builder does not
        know widget types: the input takes the output's type (the e2e tests check it against /object_info)."""
        out_slot = src.slot("output", output)
        if widget in [s[0] for s in dst.inputs]:
            raise ValueError(f"{dst.type}.{widget} is a socket; use connect()")
        typ = src.outputs[out_slot][1]
        dst.inputs.append((widget, typ, False))
        dst.widget_links.append(widget)
        self.connect(src, output, dst, widget)

    # -------------------------------------------------------------------- layout and JSON
    def _layout(self) -> None:
        ncols = max(n.col for n in self.nodes) + 1
        widths = [max([n.size[0] for n in self.nodes if n.col == c] or [0]) for c in range(ncols)]
        xs, x = [], MARGIN
        for w in widths:
            xs.append(x)
            x += w + GAP
        top = MARGIN + (GROUP_TITLE_H + GROUP_PAD if self.groups else 0)
        for band in range(max(n.band for n in self.nodes) + 1):
            members = [n for n in self.nodes if n.band == band]
            bottom = top
            for c in range(ncols):
                y = top
                for n in sorted((m for m in members if m.col == c), key=lambda m: (m.stack, m.id)):
                    n.pos = (xs[c], y)
                    y += n.size[1] + TITLE_H + GAP
                    bottom = max(bottom, n.pos[1] + n.size[1])
            top = bottom + TITLE_H + 2 * GAP

    def _order(self) -> dict[int, int]:
        """Execution order: a topological order of the links, lowest id first among ready nodes."""
        preds = {n.id: {l[1] for l in self.links if l[3] == n.id} for n in self.nodes}
        done: list[int] = []
        while len(done) < len(self.nodes):
            ready = [i for i, p in sorted(preds.items()) if i not in done and p <= set(done)]
            if not ready:
                raise ValueError("the graph has a cycle")
            done.append(ready[0])
        return {nid: k for k, nid in enumerate(done)}

    def _node_json(self, n: Node, order: int) -> dict:
        d = {"id": n.id, "type": n.type, "pos": list(n.pos), "size": list(n.size), "flags": {}, "order": order,
             "mode": 0}
        inputs = []
        for name, typ, optional in n.inputs:
            item = {"name": name, "type": typ}
            if name in n.widget_links:
                item["widget"] = {"name": name}
            item["link"] = n.in_links.get(name)
            if optional:
                item["shape"] = 7
            inputs.append(item)
        d["inputs"] = inputs
        d["outputs"] = [{"name": name, "type": typ, "links": n.out_links.get(name), "slot_index": i}
                        for i, (name, typ, _) in enumerate(n.outputs)]
        if n.title:
            d["title"] = n.title
        d["properties"] = {} if n.type == "Note" else {"Node name for S&R": n.type}
        d["widgets_values"] = list(n.widgets)
        if n.color:
            d["color"], d["bgcolor"] = n.color
        return d

    @staticmethod
    def _box(n: Node) -> tuple[int, int, int, int]:
        """A node's [x0, y0, x1, y1] on the canvas, title bar included."""
        return n.pos[0], n.pos[1] - TITLE_H, n.pos[0] + n.size[0], n.pos[1] + n.size[1]

    def _groups_json(self) -> list[dict]:
        out = []
        for k, grp in enumerate(self.groups, 1):
            boxes = [self._box(n) for n in grp.members]
            x0 = min(b[0] for b in boxes) - GROUP_PAD
            y0 = min(b[1] for b in boxes) - GROUP_PAD - GROUP_TITLE_H
            x1 = max(b[2] for b in boxes) + GROUP_PAD
            y1 = max(b[3] for b in boxes) + GROUP_PAD
            for n in self.nodes:
                b = self._box(n)
                if n not in grp.members and b[0] < x1 and x0 < b[2] and b[1] < y1 and y0 < b[3]:
                    raise ValueError(f"group {grp.title!r} would take in node {n.id} ({n.type}); move it")
            for other in out:
                ox, oy, ow, oh = other["bounding"]
                if ox < x1 and x0 < ox + ow and oy < y1 and y0 < oy + oh:
                    raise ValueError(f"groups {other['title']!r} and {grp.title!r} overlap")
            out.append({"id": k, "title": grp.title, "bounding": [x0, y0, x1 - x0, y1 - y0], "color": grp.color,
                        "font_size": GROUP_FONT, "flags": {}})
        return out

    def to_json(self) -> dict:
        for n in self.nodes:
            for name, _, optional in n.inputs:
                if not optional and name not in n.in_links:
                    raise ValueError(f"node {n.id} ({n.type}): required input {name!r} is not connected")
        self._layout()
        order = self._order()
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": [self._node_json(n, order[n.id]) for n in self.nodes],
            "links": [list(l) for l in self.links],
            "groups": self._groups_json(),
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}},
            "version": 0.4,
        }


# ------------------------------------------------------------------------------------------ subgraph blueprint
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20  # the subgraph's input and output nodes, as the frontend saves them
WIDGET_SOCKET_TYPES = ("STRING", "INT", "FLOAT", "BOOLEAN", "COMBO")
# widgets_values layout of the nodes a blueprint input feeds as widgets (control_after_generate after a seed)
WIDGET_INDEX = {
    "FreeCureFoundationSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler",
                                  "denoise", "record", "layers", "custom_layers", "store", "offload_kv"),
    "FreeCureSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "FreeCureAttributeMask": ("prompt", "attributes", "grow", "feather"),
}
IO_NODE_W, IO_ROW_H = 140, 20


def _uuid(*parts: str) -> str:
    """A fixed UUID per name (the frontend wants UUIDs for subgraphs and their inputs; regenerating keeps them)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-freecure/" + "/".join(parts)))


class Blueprint(Graph):
    """A subgraph blueprint under construction: nodes and connect()/connect_widget() as in Graph, plus the
    subgraph's inputs (each feeding one or more sockets or widgets inside) and outputs; to_json() writes the file
    ComfyUI serves from <pack>/subgraphs/."""

    def __init__(self, name: str, category: str, description: str) -> None:
        super().__init__()
        self.name, self.category, self.description = name, category, description
        self.sub_inputs: list[dict] = []   # name, type, link ids, default (widget inputs)
        self.sub_outputs: list[dict] = []

    def _link(self, src_id: int, src_slot: int, dst_id: int, dst_slot: int, typ: str) -> int:
        link_id = len(self.links) + 1
        self.links.append([link_id, src_id, src_slot, dst_id, dst_slot, typ])
        return link_id

    def input(self, name: str, typ: str, targets: list[tuple[Node, str]]) -> None:
        """A subgraph input feeding each (node, input) of targets; an input that is not a socket of the node is its
        widget (linked as connect_widget does; its value there is the input's default on the subgraph node)."""
        slot, link_ids, default = len(self.sub_inputs), [], None
        for node, inp in targets:
            if inp in node.in_links:
                raise ValueError(f"{node.type}.{inp} is already connected")
            if inp not in [s[0] for s in node.inputs]:
                if typ not in WIDGET_SOCKET_TYPES:
                    raise TypeError(f"{node.type} has no socket {inp!r} for a {typ} input")
                node.inputs.append((inp, typ, False))
                node.widget_links.append(inp)
                default = self._widget_default(node, inp, default)
            in_slot = node.slot("input", inp)
            if node.inputs[in_slot][1] != typ:
                raise TypeError(f"subgraph input {name} ({typ}) -> {node.type}.{inp} ({node.inputs[in_slot][1]})")
            link_id = self._link(SUBGRAPH_INPUT_ID, slot, node.id, in_slot, typ)
            node.in_links[inp] = link_id
            link_ids.append(link_id)
        self.sub_inputs.append({"name": name, "type": typ, "links": link_ids, "default": default})

    @staticmethod
    def _widget_default(node: Node, widget: str, default):
        value = node.widgets[WIDGET_INDEX[node.type].index(widget)]
        if default is not None and value != default:
            raise ValueError(f"{node.type}.{widget} shows {value!r}, another node fed by the same input {default!r}")
        return value

    def output(self, name: str, src: Node, output: str) -> None:
        slot, out_slot = len(self.sub_outputs), src.slot("output", output)
        typ = src.outputs[out_slot][1]
        link_id = self._link(src.id, out_slot, SUBGRAPH_OUTPUT_ID, slot, typ)
        src.out_links.setdefault(output, []).append(link_id)
        self.sub_outputs.append({"name": name, "type": typ, "links": [link_id]})

    def _order(self) -> dict[int, int]:
        inner = self.links
        self.links = [l for l in inner if l[1] > 0 and l[3] > 0]
        try:
            return super()._order()
        finally:
            self.links = inner

    def to_json(self) -> dict:
        inner = super().to_json()
        shift = MARGIN + IO_NODE_W + 2 * GAP  # room for the input node left of the nodes
        for n in inner["nodes"]:
            n["pos"] = [n["pos"][0] + shift, n["pos"][1]]
        for grp in inner["groups"]:
            grp["bounding"] = [grp["bounding"][0] + shift] + grp["bounding"][1:]
        right = max(n["pos"][0] + n["size"][0] for n in inner["nodes"]) + 2 * GAP
        y = MARGIN + GROUP_TITLE_H + GROUP_PAD
        sg_id = _uuid("subgraphs", self.name)

        def io(items: list[dict], x: int, pin_x: int, kind: str) -> list[dict]:
            return [{"id": _uuid("subgraphs", self.name, kind, it["name"]), "name": it["name"], "type": it["type"],
                     "linkIds": list(it["links"]), "localized_name": it["name"],
                     "pos": [x + pin_x, y + 20 + IO_ROW_H * k]} for k, it in enumerate(items)]

        subgraph = {
            "id": sg_id, "version": 1,
            "state": {"lastGroupId": len(inner["groups"]), "lastNodeId": inner["last_node_id"],
                      "lastLinkId": inner["last_link_id"], "lastRerouteId": 0},
            "revision": 0, "config": {}, "name": self.name,
            "inputNode": {"id": SUBGRAPH_INPUT_ID,
                          "bounding": [MARGIN, y, IO_NODE_W, 40 + IO_ROW_H * len(self.sub_inputs)]},
            "outputNode": {"id": SUBGRAPH_OUTPUT_ID,
                           "bounding": [right, y, IO_NODE_W, 40 + IO_ROW_H * len(self.sub_outputs)]},
            "inputs": io(self.sub_inputs, MARGIN, IO_NODE_W - 20, "input"),
            "outputs": io(self.sub_outputs, right, 20, "output"),
            "widgets": [],
            "nodes": inner["nodes"],
            "groups": inner["groups"],
            "links": [{"id": l[0], "origin_id": l[1], "origin_slot": l[2], "target_id": l[3], "target_slot": l[4],
                       "type": l[5]} for l in inner["links"]],
            "extra": {},
            "category": self.category,
            "description": self.description,
        }
        widgets = [it for it in self.sub_inputs if it["type"] in WIDGET_SOCKET_TYPES]
        instance = {
            "id": 1, "type": sg_id, "pos": [0, 0],
            "size": [340, 30 + 22 * max(len(self.sub_inputs) - len(widgets), len(self.sub_outputs))
                     + 26 * len(widgets)],
            "flags": {}, "order": 0, "mode": 0,
            "inputs": [{"name": it["name"], "type": it["type"], **({"widget": {"name": it["name"]}}
                        if it in widgets else {}), "link": None} for it in self.sub_inputs],
            "outputs": [{"name": it["name"], "type": it["type"], "links": []} for it in self.sub_outputs],
            "title": self.name,
            "properties": {"proxyWidgets": [["-1", it["name"]] for it in widgets]},
            "widgets_values": [it["default"] for it in widgets],
        }
        return {"revision": 0, "last_node_id": 1, "last_link_id": 0, "nodes": [instance], "links": [],
                "groups": [], "config": {}, "extra": {}, "version": 0.4,
                "definitions": {"subgraphs": [subgraph]}}


# ------------------------------------------------------------------------------------------ shared parts
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
# omega the FASA Configs show (omega_mode auto: the model family's default, which these equal)
SDXL_OMEGA, FLUX_OMEGA = 1.5, 2.0
SEED, STEPS, CFG = 42, 30, 5.0
SIZE = 1024
PROMPT = "close-up portrait photo of a woman with blonde curly hair, wearing sunglasses"
NEGATIVE = "blurry, lowres, deformed, bad anatomy, watermark, text"
REFERENCE = "reference_face.png"
PARSER = "79999_iter.pth"

STAGE1_NOTE = ("Stage 1 - FreeCure Foundation Sampler samples the foundation branch (FD): the same model and prompt "
               "with the identity switched off. Its image shows where the prompt's attributes are; stage 2 parses "
               "it. It also records (record 'cond') the attention features that stage 3 replays.")
STAGE2_NOTE = ("Stage 2 - automatic attribute mask. Face Parse labels the foundation face (hair, skin, eyes, glasses, "
               "...); 'face crop' parses a square crop around each detected face. Attribute Mask reads the "
               "attributes from the prompt - its prompt input is linked to the same prompt the encoders get, so an "
               "edited prompt changes the mask too ('sunglasses' -> glasses, 'curly' -> hair, 'no glasses' is "
               "ignored) - or from the manual 'attributes' list. White = the look comes from the foundation image. "
               "Use grow/feather to widen or soften it.")
STAGE3_NOTE = ("Stage 3 - FreeCure Sampler samples the personalized branch (PD) from the same seed, replaying the "
               "stage-1 record (kv). Inside the mask its self-attention also looks at the foundation branch (FASA), "
               "so the prompt's attributes survive the identity. Keep seed, steps, sampler, scheduler, denoise and "
               "size equal to stage 1. Without kv, both branches run in lockstep (slower; the same result with "
               "deterministic samplers such as euler).")
PARSER_FILES = (f"- BiSeNet face parser {PARSER} -> ComfyUI/models/face_parsing/\n"
                "- insightface antelopev2 folder -> ComfyUI/models/insightface/models/antelopev2/ (the same files "
                "InstantID and PuLID use; the parser's face detector, optional)")


@dataclass
class Branches:
    """What the three FreeCure stages need from the identity part of a workflow."""
    model_pd: tuple
    model_fd: tuple
    positive: tuple
    negative: tuple
    fd_positive: tuple
    fd_negative: tuple


PROMPT_TITLE = "Prompt"


def _prompt(g: Graph, text: str, feeds: list[tuple[Node, str]], col: int = 1, band: int = 0) -> Node:
    """The one place the prompt is typed: a core String (Multiline) node on top of column `col`, whose output feeds
    every input that reads the prompt (`feeds`: the encoders' text, FreeCure Attribute Mask's prompt), as linked
    widgets. Their own text boxes keep the same text as an idle value, used only if a link is unplugged. Added after
    the other nodes, so their ids stay what they were before the prompt was linked."""
    prompt = g.add("PrimitiveStringMultiline", text, col=col, band=band, title=PROMPT_TITLE, color=POSITIVE_COLOR,
                   stack=-1)
    for node, widget in feeds:
        if node.widgets[0] != text:
            raise ValueError(f"{node.type} shows {node.widgets[0]!r} but the prompt is {text!r}")
        g.connect_widget(prompt, "STRING", node, widget)
    return prompt


def _checkpoint_and_prompts(g: Graph, positive_text: str | None = PROMPT, ckpt: str = SDXL_CKPT):
    """Load Checkpoint (column 0) and the prompt encoders (column 1). Returns (ckpt, positive or None, negative);
    the positive encoder's text is to be linked from the Prompt node (_prompt)."""
    ckpt_node = g.add("CheckpointLoaderSimple", ckpt, col=0)
    pos = None
    if positive_text is not None:
        pos = g.add("CLIPTextEncode", positive_text, col=1, title="Prompt (both branches)", color=POSITIVE_COLOR)
        g.connect(ckpt_node, "CLIP", pos, "clip")
    neg = g.add("CLIPTextEncode", NEGATIVE, col=1, title="Negative prompt", size=(420, 130), color=NEGATIVE_COLOR)
    g.connect(ckpt_node, "CLIP", neg, "clip")
    return ckpt_node, pos, neg


def _freecure_stages(g: Graph, ckpt: Node, br: Branches, mask_prompt: str, prefix: str, first_col: int,
                     result_title: str = "FreeCure result", vae: tuple | None = None, steps: int = STEPS,
                     cfg: float = CFG, scheduler: str = "normal", latent_type: str = "EmptyLatentImage",
                     layers: str = "reference", omega: float = SDXL_OMEGA) -> dict:
    """Stages 1 and 3 in columns first_col.. first_col + 3 of the current band, stage 2 in a new band below.

    mask_prompt: the Attribute Mask's idle prompt text (the caller links its prompt input to the Prompt node). prefix: the stage-3 SaveImage's filename prefix, or None for a
    PreviewImage titled result_title instead. vae: (node, output) of the VAE (default the checkpoint's). layers: the
    preset of stage 1 and the FASA Config (SD "reference", FLUX "single"); omega: the number the FASA Config shows
    (its omega_mode is auto: the model family's default, which this number equals). Returns the nodes by name, and
    each stage's nodes under "stage1", "stage2", "stage3" (for groups).
    """
    c = first_col
    vae_node, vae_out = vae or (ckpt, "VAE")
    latent = g.add(latent_type, SIZE, SIZE, 1, col=c)
    note1 = g.note(STAGE1_NOTE, col=c, size=(340, 150))
    fd = g.add("FreeCureFoundationSampler", SEED, "fixed", steps, cfg, "euler", scheduler, 1.0, "cond", layers,
               "", "auto", True, col=c, title="FreeCure Foundation Sampler (stage 1)")
    g.connect(br.model_fd[0], br.model_fd[1], fd, "model_fd")
    g.connect(br.fd_positive[0], br.fd_positive[1], fd, "positive")
    g.connect(br.fd_negative[0], br.fd_negative[1], fd, "negative")
    g.connect(latent, "LATENT", fd, "latent_image")
    fd_decode = g.add("VAEDecode", col=c + 1)
    g.connect(fd, "fd_latent", fd_decode, "samples")
    g.connect(vae_node, vae_out, fd_decode, "vae")
    fd_preview = g.add("PreviewImage", col=c + 1, title="Foundation image (FD)")
    g.connect(fd_decode, "IMAGE", fd_preview, "images")

    note3 = g.note(STAGE3_NOTE, col=c + 2, size=(340, 190))
    pd = g.add("FreeCureSampler", SEED, "fixed", steps, cfg, "euler", scheduler, 1.0, col=c + 2,
               title="FreeCure Sampler (stage 3)")
    for name, (node, out) in (("model_pd", br.model_pd), ("model_fd", br.model_fd), ("positive", br.positive),
                              ("negative", br.negative), ("fd_positive", br.fd_positive),
                              ("fd_negative", br.fd_negative)):
        g.connect(node, out, pd, name)
    g.connect(latent, "LATENT", pd, "latent_image")
    g.connect(fd, "kv", pd, "kv")
    pd_decode = g.add("VAEDecode", col=c + 3)
    g.connect(pd, "pd_latent", pd_decode, "samples")
    g.connect(vae_node, vae_out, pd_decode, "vae")
    if prefix is None:
        result = g.add("PreviewImage", col=c + 3, title=result_title)
    else:
        result = g.add("SaveImage", prefix, col=c + 3, title=result_title)
    g.connect(pd_decode, "IMAGE", result, "images")

    g.band()
    note2 = g.note(STAGE2_NOTE, col=0, size=(340, 250))
    loader = g.add("FreeCureFaceParserLoader", PARSER, "auto", "auto", col=1)
    files2 = g.note("Stage 2 files (FreeCure never downloads them):\n" + PARSER_FILES, col=1, size=(340, 170))
    parse, mask, mask_preview, fasa = _stage2(g, 2, fd_decode, pd, mask_prompt, parser=loader, layers=layers,
                                              omega=omega)
    return {"latent": latent, "fd": fd, "fd_decode": fd_decode, "fd_preview": fd_preview, "pd": pd,
            "pd_decode": pd_decode, "result": result, "mask": mask, "fasa": fasa,
            "stage1": [latent, note1, fd, fd_decode, fd_preview],
            "stage2": [note2, loader, files2, parse, mask, mask_preview, fasa],
            "stage3": [note3, pd, pd_decode, result]}


def _stage2(g: Graph, col: int, fd_decode: Node, pd: Node, mask_prompt: str, parser: Node | None = None,
            layers: str = "reference", omega: float = SDXL_OMEGA):
    """Stage 2 from column `col` on: Face Parse of the foundation image (its parser from `parser` when given), the
    Attribute Mask and its preview, and the FASA Config feeding the FreeCure Sampler `pd` (layers; omega_mode auto,
    showing `omega`).  Returns those four."""
    parse = g.add("FreeCureFaceParse", "face crop", 0.5, col=col)
    if parser is not None:
        g.connect(parser, "face_parser", parse, "face_parser")
    g.connect(fd_decode, "IMAGE", parse, "image")
    mask = g.add("FreeCureAttributeMask", mask_prompt, "", 0, 0.0, col=col + 1,
                 title="FreeCure Attribute Mask (stage 2)")
    g.connect(parse, "face_parse", mask, "face_parse")
    g.connect(fd_decode, "IMAGE", mask, "image")
    mask_preview = g.add("PreviewImage", col=col + 2, title="Attribute mask over the foundation image")
    g.connect(mask, "preview", mask_preview, "images")
    fasa = g.add("FreeCureFASAConfig", omega, layers, "", 0.0, 1.0, 0.0, "nearest", "auto", col=col + 3)
    g.connect(mask, "mask", fasa, "mask")
    g.connect(fasa, "fasa", pd, "fasa")
    return parse, mask, mask_preview, fasa


# ------------------------------------------------------------------------------------------ InstantID
def _instantid(adapter: str, controlnet: str, cn_strength: float, intro: str, files: str, prefix: str) -> dict:
    g = Graph()
    g.note(intro, col=0, size=(340, 330))
    ckpt, pos, neg = _checkpoint_and_prompts(g)
    g.note(files, col=0, size=(340, 330))
    loader = g.add("FreeCureInstantIDLoader", adapter, col=2, size=(340, 60))
    analysis = g.add("FreeCureInstantIDFaceAnalysis", "auto", col=2, size=(340, 60))
    cnet = g.add("ControlNetLoader", controlnet, col=2, title="Load ControlNet Model (IdentityNet)", size=(340, 60))
    face = g.add("LoadImage", REFERENCE, "image", col=2, title="Reference face")
    pair = g.add("FreeCureInstantIDPair", 0.8, cn_strength, 0.0, 1.0, 0.0, "average", col=3, size=(340, 330))
    for src, out, inp in ((loader, "instantid", "instantid"), (analysis, "face_analysis", "face_analysis"),
                          (cnet, "CONTROL_NET", "control_net"), (face, "IMAGE", "image"), (ckpt, "MODEL", "model"),
                          (pos, "CONDITIONING", "positive"), (neg, "CONDITIONING", "negative")):
        g.connect(src, out, pair, inp)
    g.note("Identity - FreeCure InstantID Pair applies InstantID twice. pd_* = the personalized branch (the "
           "reference face's tokens in the UNet's cross-attention and in the IdentityNet); fd_* = the foundation "
           "branch: the zero face embedding through the same Resampler, same keypoints and strengths.\n\nFD wiring: "
           "fd_model/fd_positive/fd_negative -> stage 1, and -> model_fd/fd_positive/fd_negative of stage 3; "
           "pd_model/pd_positive/pd_negative -> model_pd/positive/negative of stage 3. Both models share weights, "
           "so lockstep works too.\n\nkps_image: the keypoints the IdentityNet sees (connect a pose photo to "
           "image_kps to change them). noise 0 = reference InstantID.", col=3, size=(340, 300))
    kps = g.add("PreviewImage", col=3, title="Keypoints (IdentityNet input)", size=(340, 360))
    g.connect(pair, "kps_image", kps, "images")
    br = Branches(model_pd=(pair, "pd_model"), model_fd=(pair, "fd_model"), positive=(pair, "pd_positive"),
                  negative=(pair, "pd_negative"), fd_positive=(pair, "fd_positive"),
                  fd_negative=(pair, "fd_negative"))
    st = _freecure_stages(g, ckpt, br, PROMPT, prefix, first_col=4)
    _prompt(g, PROMPT, [(pos, "text"), (st["mask"], "prompt")])
    return g.to_json()


INSTANTID_SETTINGS = ("SDXL checkpoint, 1024x1024, 30 steps, cfg 5 (InstantID's recommendation; photorealistic SDXL "
                      "fine-tunes work best). The same seed in both samplers.")


def freecure_instantid() -> dict:
    intro = ("FreeCure + InstantID (built-in pair).\n\nInstantID keeps the face but ignores much of the prompt "
             "(hair, glasses...). FreeCure samples the foundation branch (FD: InstantID with the zero face), masks "
             "the prompt's attributes on its image, and samples the personalized branch (PD: your face) with "
             "foundation-aware self-attention inside that mask.\n\n" + INSTANTID_SETTINGS + " ip_weight and "
             "cn_strength 0.8 as in InstantID's demo.")
    files = ("Model files (FreeCure never downloads them):\n"
             "- SDXL checkpoint -> ComfyUI/models/checkpoints/\n"
             "- InstantX ip-adapter.bin -> ComfyUI/models/instantid/\n"
             "- InstantX ControlNetModel/diffusion_pytorch_model.safetensors (IdentityNet) -> "
             "ComfyUI/models/controlnet/instantid/ (any name)\n"
             "- insightface antelopev2 (scrfd_10g_bnkps.onnx + glintr100.onnx) -> "
             "ComfyUI/models/insightface/models/antelopev2/\n"
             "- a clear photo of the face -> ComfyUI/input/ (or upload it on Reference face)\n\n"
             "CrossFaceID (InstantID fine-tuned on cross-image pairs): select its adapter in FreeCure InstantID "
             "Loader and its ControlNet in Load ControlNet Model instead - see the freecure_crossfaceid workflow.")
    return _instantid("ip-adapter.bin", "instantid/diffusion_pytorch_model.safetensors", 0.8, intro, files,
                      "FreeCure/instantid")


def freecure_crossfaceid() -> dict:
    intro = ("FreeCure + CrossFaceID (InstantID fine-tuned on cross-image pairs of the same person, arXiv "
             "2501.15407), through the built-in InstantID pair.\n\nCrossFaceID is a drop-in: the graph is the "
             "freecure_instantid one with CrossFaceID's adapter and ControlNet selected. FD = the zero face through "
             "CrossFaceID's Resampler and IdentityNet; PD = your face; FreeCure then masks the prompt's attributes "
             "on FD and samples PD with FASA.\n\n" + INSTANTID_SETTINGS + " cn_strength 1.0: what CrossFaceID's "
             "code effectively used.")
    files = ("Model files (FreeCure never downloads them):\n"
             "- SDXL checkpoint -> ComfyUI/models/checkpoints/\n"
             "- CrossFaceID's fine-tuned adapter pytorch_model.bin -> ComfyUI/models/instantid/, here renamed "
             "crossfaceid_instantid.bin\n"
             "- CrossFaceID's controlnet/diffusion_pytorch_model.safetensors -> ComfyUI/models/controlnet/, here "
             "renamed crossfaceid_instantid_controlnet.safetensors\n"
             "- insightface antelopev2 -> ComfyUI/models/insightface/models/antelopev2/\n\n"
             "To store the .bin adapter (or an fp32 ControlNet) as fp16 safetensors, run from this pack's folder:\n"
             "python -m freecure_core.convert ../../models/instantid/crossfaceid_instantid.bin "
             "../../models/instantid/crossfaceid_instantid.safetensors --fp16\n"
             "(python -m freecure_core.convert info FILE says what a file is.)")
    return _instantid("crossfaceid_instantid.bin", "crossfaceid_instantid_controlnet.safetensors", 1.0, intro, files,
                      "FreeCure/crossfaceid")


# ------------------------------------------------------------------------------------------ PhotoMaker
PHOTOMAKER_PROMPT = "a photo of a woman photomaker with blonde curly hair, wearing sunglasses"


def freecure_photomaker() -> dict:
    g = Graph()
    g.note("FreeCure + PhotoMaker (ComfyUI's PhotoMaker v1, SDXL).\n\nFreeCure PhotoMaker Encode Pair encodes the "
           "prompt once, as PhotoMaker's own pipeline does: the trigger word 'photomaker' is removed and the class "
           "word before it gets one copy per reference photo. pd_conditioning has the photos' identity fused into "
           "those copies (from merge_start on); fd_conditioning is the same token sequence without the identity. "
           "Before merge_start both are the clean prompt (class word once), as in PhotoMaker's pipeline.\n\n"
           "PhotoMaker changes only the conditioning, so both branches use "
           "the same MODEL: model_pd = model_fd = the checkpoint's MODEL. FD wiring: fd_conditioning -> stage 1 "
           "positive and stage 3 fd_positive; pd_conditioning -> stage 3 positive; one negative prompt for all.\n\n"
           f"1024x1024, {STEPS} steps, cfg 5 (PhotoMaker's demo uses 50 steps).", col=0, size=(340, 400))
    ckpt = g.add("CheckpointLoaderSimple", SDXL_CKPT, col=0)
    g.note("Model files (FreeCure never downloads them):\n"
           "- SDXL checkpoint -> ComfyUI/models/checkpoints/\n"
           "- photomaker-v1.bin -> ComfyUI/models/photomaker/\n"
           "- a clear photo of the face -> ComfyUI/input/ (or upload it on Reference face)\n\n"
           "PhotoMaker's own pipeline also merges a LoRA into the UNet; core Load PhotoMaker loads only the ID "
           "encoder. If you use that LoRA as a separate file, apply it to the MODEL (e.g. LoraLoaderModelOnly) "
           "before it goes to both samplers, so both branches keep the same weights.", col=0, size=(340, 300))
    pm = g.add("PhotoMakerLoader", "photomaker-v1.bin", col=2, size=(340, 60))
    face = g.add("LoadImage", REFERENCE, "image", col=2, title="Reference face")
    pair = g.add("FreeCurePhotoMakerEncodePair", PHOTOMAKER_PROMPT, 0.23, col=1, color=POSITIVE_COLOR)
    g.connect(pm, "PHOTOMAKER", pair, "photomaker")
    g.connect(face, "IMAGE", pair, "image")
    g.connect(ckpt, "CLIP", pair, "clip")
    g.note("Identity - the prompt needs the trigger word 'photomaker' right after the class word ('a woman "
           "photomaker with ...'). merge_start 0.23 (ComfyUI's timestep percent, model timestep 769): both branches "
           "use the clean prompt until then, PD the identity after. On PhotoMaker's own schedule (sampler ddim, "
           "scheduler ddim_uniform, 50 steps) that is its start_merge_step: steps 0-10 clean, the identity from step "
           f"11; with this workflow's euler/normal {STEPS} steps, from step 7.", col=1, size=(420, 150))
    neg = g.add("CLIPTextEncode", NEGATIVE, col=1, title="Negative prompt", size=(420, 130), color=NEGATIVE_COLOR)
    g.connect(ckpt, "CLIP", neg, "clip")
    br = Branches(model_pd=(ckpt, "MODEL"), model_fd=(ckpt, "MODEL"), positive=(pair, "pd_conditioning"),
                  negative=(neg, "CONDITIONING"), fd_positive=(pair, "fd_conditioning"),
                  fd_negative=(neg, "CONDITIONING"))
    st = _freecure_stages(g, ckpt, br, PHOTOMAKER_PROMPT, "FreeCure/photomaker", first_col=3)
    _prompt(g, PHOTOMAKER_PROMPT, [(pair, "text"), (st["mask"], "prompt")])
    return g.to_json()


# ------------------------------------------------------------------------------------------ APG
APG_PROMPT = "a photo of a woman laughing happily, with blonde curly hair, wearing sunglasses"
# what FreeCure Expression Split gives for APG_PROMPT (the links carry it; these are the widgets' idle values)
APG_TEMPLATE = "a photo of a woman, with blonde curly hair, wearing sunglasses"
APG_GAMMA = 0.5
GROUP_COLORS = {"prompt": "#88A", "stage1": "#3f789e", "stage2": "#8A8", "stage3": "#b06634", "stage4": "#a1309b"}
APG_GAMMA_MODE = "timestep (paper)"
APG_NOTE = ("Stage 4 - FreeCure APG (asymmetric prompt guidance) adds the expression, which no mask can localise. "
            "It DDIM-inverts the stage-3 latent with the template prompt up to the model's noise level at timestep "
            "gamma x T, the paper's gamma (SDXL at gamma 0.5: sigma 1.62; on 30 'normal' steps that is 15 of the "
            "schedule's steps plus one step up to that sigma), then regenerates from there with the whole prompt "
            "(template + expression words) with the cfg and sampler set here. The identity is off: model = the "
            "foundation MODEL (model_fd).\n\nWithout expression words the two prompts are identical and APG passes "
            "the stage-3 image through unchanged; its text says whether it ran, the sigma it turned at and the steps "
            "it inverted. gamma 0.5 as in the paper (0.5-0.6 works; larger = stronger expression, less of the "
            "FreeCure image kept); gamma_mode 'steps' reads gamma as the last ceil(gamma x steps) steps instead (the "
            "earlier reading). Keep seed, steps, sampler and scheduler equal to stages 1 and 3. Compare the result "
            "with the stage-3 preview.")


def freecure_apg() -> dict:
    g = Graph()
    g.note(
        "FreeCure + APG: all four stages from one prompt.\n\nType the prompt once, in FreeCure Expression Split. "
        "Its 'attributes' output (the whole prompt) is encoded for stages 1 and 3 and is the Attribute Mask's "
        "prompt; its 'template' (the prompt without the expression words) is encoded for APG. Stages 1-3 keep the "
        "attributes (hair, glasses: FASA), stage 4 adds the expression (laughing, frowning: APG).\n\nIdentity: "
        "this example runs with the checkpoint alone, so model_pd = model_fd and positive = fd_positive (stage 3 "
        "is then the plain image with FASA). For a personalized face, put an identity adapter in front of FreeCure "
        "Sampler: model_pd / positive / negative come from it, e.g. FreeCure InstantID Pair's pd_model / "
        "pd_positive / pd_negative, while its fd_* outputs go to stage 1 and to model_fd / fd_positive / "
        "fd_negative of stage 3 (see the freecure_instantid workflow). APG keeps the foundation MODEL.\n\n"
        f"SDXL checkpoint, {SIZE}x{SIZE}, {STEPS} steps, cfg {CFG:g}; the same seed, sampler and scheduler in stages "
        "1, 3 and 4.", col=0, size=(340, 520))
    ckpt = g.add("CheckpointLoaderSimple", SDXL_CKPT, col=0)
    g.note("Model files (FreeCure never downloads them):\n- SDXL checkpoint -> ComfyUI/models/checkpoints/ (an SD1.5 "
           "checkpoint works too, at 512x512)\n" + PARSER_FILES, col=0, size=(340, 230))

    split = g.add("FreeCureExpressionSplit", APG_PROMPT, True, col=1, title="Prompt (FreeCure Expression Split)",
                  color=POSITIVE_COLOR)
    prompt_note = g.note(
        "Prompt - FreeCure Expression Split finds the expression words ('laughing happily', 'very angry looking', "
        "'with a big smile'; negated ones such as 'not smiling' stay in both prompts) and shows them after a run. "
        "template = the prompt without them, attributes = the whole prompt.\n\nThe links carry the text: the text "
        "boxes of the two encoders and of the Attribute Mask are used only if you unplug those links (then keep "
        "them equal to the prompt). keep_attributes on: the template keeps the hair and glasses words, so APG "
        "changes only the expression.", col=1, size=(420, 230))
    template = g.add("CLIPTextEncode", APG_TEMPLATE, col=1, title="Template prompt (APG inversion)", size=(420, 130))
    g.connect(ckpt, "CLIP", template, "clip")
    g.connect_widget(split, "template", template, "text")
    attributes = g.add("CLIPTextEncode", APG_PROMPT, col=1, title="Prompt (stages 1-3, APG attributes)",
                       size=(420, 130), color=POSITIVE_COLOR)
    g.connect(ckpt, "CLIP", attributes, "clip")
    g.connect_widget(split, "attributes", attributes, "text")
    neg = g.add("CLIPTextEncode", NEGATIVE, col=1, title="Negative prompt", size=(420, 130), color=NEGATIVE_COLOR)
    g.connect(ckpt, "CLIP", neg, "clip")

    br = Branches(model_pd=(ckpt, "MODEL"), model_fd=(ckpt, "MODEL"), positive=(attributes, "CONDITIONING"),
                  negative=(neg, "CONDITIONING"), fd_positive=(attributes, "CONDITIONING"),
                  fd_negative=(neg, "CONDITIONING"))
    st = _freecure_stages(g, ckpt, br, APG_PROMPT, None, first_col=2, result_title="Stage 3 result (before APG)")
    g.connect_widget(split, "attributes", st["mask"], "prompt")

    c = 6  # stage 4 right of stage 3, in the first band
    note4 = g.note(APG_NOTE, col=c, size=(340, 380), band=0)
    apg = g.add("FreeCureAPG", SEED, "fixed", STEPS, CFG, "euler", "normal", APG_GAMMA, 1.0, 0, APG_GAMMA_MODE, col=c,
                band=0, title="FreeCure APG (stage 4)")
    for src, out, inp in ((ckpt, "MODEL", "model"), (st["pd"], "pd_latent", "samples"),
                          (template, "CONDITIONING", "template"), (attributes, "CONDITIONING", "attributes"),
                          (neg, "CONDITIONING", "negative")):
        g.connect(src, out, apg, inp)
    apg_decode = g.add("VAEDecode", col=c + 1, band=0)
    g.connect(apg, "latent", apg_decode, "samples")
    g.connect(ckpt, "VAE", apg_decode, "vae")
    save = g.add("SaveImage", "FreeCure/apg", col=c + 1, band=0, title="FreeCure + APG result")
    g.connect(apg_decode, "IMAGE", save, "images")

    g.group("Prompt (one prompt for all stages)", [split, prompt_note, template, attributes, neg],
            GROUP_COLORS["prompt"])
    g.group("Stage 1 \u2014 foundation", st["stage1"], GROUP_COLORS["stage1"])
    g.group("Stage 2 \u2014 attribute mask", st["stage2"], GROUP_COLORS["stage2"])
    g.group("Stage 3 \u2014 FASA", st["stage3"], GROUP_COLORS["stage3"])
    g.group("Stage 4 \u2014 APG (expressions)", [note4, apg, apg_decode, save], GROUP_COLORS["stage4"])
    return g.to_json()


# ------------------------------------------------------------------------------------------ peer packs
PEER_REQUIRES = "Needs the {pack} custom node pack ({repo}) installed; without it these nodes show as missing."
ZERO_ID = ("model_fd = FreeCure Zero-ID Model on model_pd: the same model and adapter fed the adapter's own "
           "zero-identity tokens (what the pack gives the negative rows) on every row - the paper's foundation "
           "branch (a zero identity embedding), with model_pd's weights, so replay and lockstep both work.")


def _zero_identity(g, model_pd: tuple, col: int) -> tuple:
    """FreeCure Zero-ID Model on model_pd; returns its model_fd output."""
    zid = g.add("FreeCureZeroIdentityModel", col=col, size=(340, 50))
    g.connect(model_pd[0], model_pd[1], zid, "model_pd")
    return (zid, "model_fd")


def freecure_peer_instantid() -> dict:
    g = Graph()
    g.note("FreeCure + cubiq's ComfyUI_InstantID (split nodes).\n\n" + PEER_REQUIRES.format(
        pack="ComfyUI_InstantID", repo="github.com/cubiq/ComfyUI_InstantID") + "\n\nFD wiring:\n- model_pd = InstantID "
           "Patch Attention's MODEL; " + ZERO_ID + " (The MODEL before the patch would be an approximation: no "
           "image tokens at all.)\n- PD conds: "
           "InstantID Apply ControlNet with the patch's FACE_EMBEDS.\n- FD conds: FreeCure Zero Face Embeds on the "
           "same FACE_EMBEDS, into a second InstantID Apply ControlNet with the same control net, keypoint image "
           "and strength. (Feeding PD's positive to FD would leak the face through the IdentityNet.)\n\n"
           + INSTANTID_SETTINGS, col=0, size=(340, 470))
    ckpt, pos, neg = _checkpoint_and_prompts(g)
    g.note("Model files (the pack's folders):\n- SDXL checkpoint -> ComfyUI/models/checkpoints/\n- InstantX "
           "ip-adapter.bin -> ComfyUI/models/instantid/\n- IdentityNet diffusion_pytorch_model.safetensors -> "
           "ComfyUI/models/controlnet/instantid/ (any name)\n- insightface antelopev2 -> "
           "ComfyUI/models/insightface/models/antelopev2/\n- a clear photo of the face -> ComfyUI/input/",
           col=0, size=(340, 230))
    loader = g.add("InstantIDModelLoader", "ip-adapter.bin", col=2, size=(340, 60))
    analysis = g.add("InstantIDFaceAnalysis", "CPU", col=2, size=(340, 60))
    cnet = g.add("ControlNetLoader", "instantid/diffusion_pytorch_model.safetensors", col=2,
                 title="Load ControlNet Model (IdentityNet)", size=(340, 60))
    face = g.add("LoadImage", REFERENCE, "image", col=2, title="Reference face")
    kps = g.add("FaceKeypointsPreprocessor", col=2)
    g.connect(analysis, "FACEANALYSIS", kps, "faceanalysis")
    g.connect(face, "IMAGE", kps, "image")
    kps_preview = g.add("PreviewImage", col=2, title="Keypoints (IdentityNet input)", size=(340, 360))
    g.connect(kps, "IMAGE", kps_preview, "images")

    patch = g.add("InstantIDAttentionPatch", 0.8, 0.0, 1.0, 0.0, col=3, size=(340, 230))
    for src, out, inp in ((loader, "INSTANTID", "instantid"), (analysis, "FACEANALYSIS", "insightface"),
                          (face, "IMAGE", "image"), (ckpt, "MODEL", "model")):
        g.connect(src, out, patch, inp)
    g.note("noise must be 0 here: the patch's 'uncond' tokens are the InstantID Resampler of a zero face, which "
           "Zero Face Embeds uses as FD's face tokens. With noise > 0 they are the Resampler of noise and FD is no "
           "longer the FreeCure foundation branch. weight 0.8 as Apply InstantID.", col=3, size=(340, 150))
    cn_pd = g.add("ApplyInstantIDControlNet", 0.8, 0.0, 1.0, col=3, title="InstantID Apply ControlNet (PD)",
                  size=(340, 220))
    zero = g.add("FreeCureZeroFaceEmbeds", col=3, size=(340, 50))
    cn_fd = g.add("ApplyInstantIDControlNet", 0.8, 0.0, 1.0, col=3, title="InstantID Apply ControlNet (FD)",
                  size=(340, 220))
    g.connect(patch, "FACE_EMBEDS", zero, "face_embeds")
    for cn, embeds in ((cn_pd, (patch, "FACE_EMBEDS")), (cn_fd, (zero, "fd_face_embeds"))):
        g.connect(embeds[0], embeds[1], cn, "face_embeds")
        g.connect(cnet, "CONTROL_NET", cn, "control_net")
        g.connect(kps, "IMAGE", cn, "image_kps")
        g.connect(pos, "CONDITIONING", cn, "positive")
        g.connect(neg, "CONDITIONING", cn, "negative")
    br = Branches(model_pd=(patch, "MODEL"), model_fd=_zero_identity(g, (patch, "MODEL"), col=3),
                  positive=(cn_pd, "positive"),
                  negative=(cn_pd, "negative"), fd_positive=(cn_fd, "positive"), fd_negative=(cn_fd, "negative"))
    st = _freecure_stages(g, ckpt, br, PROMPT, "FreeCure/peer_instantid", first_col=4)
    _prompt(g, PROMPT, [(pos, "text"), (st["mask"], "prompt")])
    return g.to_json()


def freecure_peer_pulid() -> dict:
    g = Graph()
    g.note("FreeCure + PuLID (cubiq's PuLID_ComfyUI, SDXL).\n\n" + PEER_REQUIRES.format(
        pack="PuLID_ComfyUI", repo="github.com/cubiq/PuLID_ComfyUI") + "\n\nFD wiring:\n- model_pd = Apply "
           "PuLID's MODEL; " + ZERO_ID + " (The MODEL going into Apply PuLID would be an approximation: no ID term "
           "at all.)\n- PuLID changes only "
           "the model, so the text conditioning is the same for both branches: positive = fd_positive, "
           "negative = fd_negative.\n\nSDXL checkpoint, 1024x1024, 30 steps, cfg 5 (PuLID's notes suggest trying "
           "other samplers/schedulers, e.g. sgm_uniform, with non-Lightning models; keep both samplers equal).",
           col=0, size=(340, 400))
    ckpt, pos, neg = _checkpoint_and_prompts(g)
    g.note("Model files (the pack's folders):\n- SDXL checkpoint -> ComfyUI/models/checkpoints/\n- "
           "ip-adapter_pulid_sdxl_fp16.safetensors -> ComfyUI/models/pulid/\n- insightface antelopev2 -> "
           "ComfyUI/models/insightface/models/antelopev2/\n- EVA02-CLIP-L-14-336 and facexlib's models: fetched by "
           "the PuLID pack itself on first use\n- a clear photo of the face -> ComfyUI/input/",
           col=0, size=(340, 230))
    pulid = g.add("PulidModelLoader", "ip-adapter_pulid_sdxl_fp16.safetensors", col=2, size=(340, 60))
    eva = g.add("PulidEvaClipLoader", col=2, size=(340, 46))
    analysis = g.add("PulidInsightFaceLoader", "CPU", col=2, size=(340, 60))
    face = g.add("LoadImage", REFERENCE, "image", col=2, title="Reference face")
    apply = g.add("ApplyPulid", "fidelity", 1.0, 0.0, 1.0, col=3, size=(340, 250))
    for src, out, inp in ((ckpt, "MODEL", "model"), (pulid, "PULID", "pulid"), (eva, "EVA_CLIP", "eva_clip"),
                          (analysis, "FACEANALYSIS", "face_analysis"), (face, "IMAGE", "image")):
        g.connect(src, out, apply, inp)
    br = Branches(model_pd=(apply, "MODEL"), model_fd=_zero_identity(g, (apply, "MODEL"), col=3),
                  positive=(pos, "CONDITIONING"), negative=(neg, "CONDITIONING"), fd_positive=(pos, "CONDITIONING"),
                  fd_negative=(neg, "CONDITIONING"))
    st = _freecure_stages(g, ckpt, br, PROMPT, "FreeCure/peer_pulid", first_col=4)
    _prompt(g, PROMPT, [(pos, "text"), (st["mask"], "prompt")])
    return g.to_json()


def freecure_peer_faceid() -> dict:
    g = Graph()
    g.note("FreeCure + IP-Adapter FaceID (cubiq's ComfyUI_IPAdapter_plus, FaceID Plus V2, SDXL).\n\n"
           + PEER_REQUIRES.format(pack="ComfyUI_IPAdapter_plus", repo="github.com/cubiq/ComfyUI_IPAdapter_plus")
           + "\n\nFD wiring:\n- model_pd = IPAdapter FaceID's MODEL; " + ZERO_ID + "\n- Approximation: the MODEL "
           "output of IPAdapter Unified Loader FaceID (it applies the FaceID LoRA; before IPAdapter FaceID) has no "
           "image tokens at all. Taken before the loader, FD would also lack the LoRA: FreeCure Sampler then refuses "
           "lockstep; replay with store 'kv' on the Foundation Sampler.\n- The text conditioning is the same for "
           "both branches.\n\n1024x1024, 30 steps, cfg 5.", col=0, size=(340, 470))
    ckpt, pos, neg = _checkpoint_and_prompts(g)
    g.note("Model files (the pack's folders):\n- SDXL checkpoint -> ComfyUI/models/checkpoints/\n- "
           "ip-adapter-faceid-plusv2_sdxl.bin -> ComfyUI/models/ipadapter/\n- "
           "ip-adapter-faceid-plusv2_sdxl_lora.safetensors -> ComfyUI/models/loras/\n- "
           "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors -> ComfyUI/models/clip_vision/\n- insightface buffalo_l -> "
           "ComfyUI/models/insightface/models/buffalo_l/\n- a clear photo of the face -> ComfyUI/input/",
           col=0, size=(340, 250))
    loader = g.add("IPAdapterUnifiedLoaderFaceID", "FACEID PLUS V2", 0.6, "CPU", col=2, size=(340, 130))
    g.connect(ckpt, "MODEL", loader, "model")
    face = g.add("LoadImage", REFERENCE, "image", col=2, title="Reference face")
    faceid = g.add("IPAdapterFaceID", 1.0, 1.0, "linear", "concat", 0.0, 1.0, "V only", col=3, size=(340, 350))
    g.connect(loader, "MODEL", faceid, "model")
    g.connect(loader, "ipadapter", faceid, "ipadapter")
    g.connect(face, "IMAGE", faceid, "image")
    br = Branches(model_pd=(faceid, "MODEL"), model_fd=_zero_identity(g, (faceid, "MODEL"), col=3),
                  positive=(pos, "CONDITIONING"), negative=(neg, "CONDITIONING"), fd_positive=(pos, "CONDITIONING"),
                  fd_negative=(neg, "CONDITIONING"))
    st = _freecure_stages(g, ckpt, br, PROMPT, "FreeCure/peer_faceid", first_col=4)
    _prompt(g, PROMPT, [(pos, "text"), (st["mask"], "prompt")])
    return g.to_json()


# ------------------------------------------------------------------------------------------ FLUX
def freecure_flux() -> dict:
    g = Graph()
    g.note("FreeCure on FLUX (FLUX.1 dev; PuLID-FLUX / InfiniteYou style).\n\nThe same FreeCure nodes: they see "
           "a FLUX MODEL and use FLUX's joint attention (PD's image queries also attend to FD's image keys inside "
           "the mask; text tokens untouched). omega auto = 2.0, the paper's value, which it gives for its "
           "multiplicative formula, not this additive bias: tune it.\n\nFD wiring for an identity pack: insert "
           "its apply node (e.g. Apply PuLID Flux, InfiniteYou) between Load Diffusion Model and model_pd of FreeCure "
           "Sampler; model_fd and stage 1 keep the plain FLUX MODEL (identity off). Such packs patch the model "
           "object, so keep the kv link (replay). As shipped, PD = FD: a skeleton to insert your identity node "
           "into.\n\nFLUX dev is guidance-distilled: cfg 1 with Flux Guidance 3.5, scheduler simple, 28 steps, the "
           "same seed in both samplers. The negative prompt is unused at cfg 1 (zeroed here).", col=0, size=(340, 520))
    unet = g.add("UNETLoader", "flux1-dev.safetensors", "default", col=0, title="Load Diffusion Model (FLUX)",
                 size=(340, 82))
    clip = g.add("DualCLIPLoader", "clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default", col=0,
                 size=(340, 130))
    vae = g.add("VAELoader", "ae.safetensors", col=0, size=(340, 58))
    g.note("Model files (FreeCure never downloads them):\n- flux1-dev.safetensors -> ComfyUI/models/diffusion_models/"
           "\n- clip_l.safetensors, t5xxl_fp16.safetensors -> ComfyUI/models/text_encoders/\n- ae.safetensors -> "
           "ComfyUI/models/vae/\n- BiSeNet 79999_iter.pth -> ComfyUI/models/face_parsing/\n\nRecord memory: stage 1 "
           "keeps FD's image keys/values per recorded block and step (about 48 MB each at 1024x1024). For less, set "
           "layers to custom, e.g. single:28-37, or disconnect kv (lockstep).", col=0, size=(340, 300))
    pos = g.add("CLIPTextEncode", PROMPT, col=1, title="Prompt (both branches)", color=POSITIVE_COLOR)
    g.connect(clip, "CLIP", pos, "clip")
    guided = g.add("FluxGuidance", 3.5, col=1, size=(320, 58))
    g.connect(pos, "CONDITIONING", guided, "conditioning")
    neg = g.add("ConditioningZeroOut", col=1, title="Negative (unused at cfg 1)", size=(320, 26))
    g.connect(pos, "CONDITIONING", neg, "conditioning")
    br = Branches(model_pd=(unet, "MODEL"), model_fd=(unet, "MODEL"), positive=(guided, "CONDITIONING"),
                  negative=(neg, "CONDITIONING"), fd_positive=(guided, "CONDITIONING"),
                  fd_negative=(neg, "CONDITIONING"))
    st = _freecure_stages(g, unet, br, PROMPT, "FreeCure/flux", first_col=2, vae=(vae, "VAE"), steps=28, cfg=1.0,
                          scheduler="simple", latent_type="EmptySD3LatentImage", layers="single", omega=FLUX_OMEGA)
    _prompt(g, PROMPT, [(pos, "text"), (st["mask"], "prompt")])
    return g.to_json()


def freecure_peer_pulid_flux() -> dict:
    g = Graph()
    g.note("FreeCure + PuLID-FLUX (lldacing's ComfyUI_PuLID_Flux_ll, FLUX.1 dev).\n\n" + PEER_REQUIRES.format(
        pack="ComfyUI_PuLID_Flux_ll", repo="github.com/lldacing/ComfyUI_PuLID_Flux_ll") + " Use a current version: "
           "releases before its latent_shapes fix (Nov 2025) stop on ComfyUI 0.3.67 and newer with 'unexpected keyword "
           "argument latent_shapes'. balazik's ComfyUI-PuLID-Flux cannot sample on current ComfyUI (FreeCure refuses "
           "its model by name).\n\nFD wiring:\n- model_pd = Apply PuLID Flux's MODEL; model_fd = the MODEL going "
           "into it (Load Diffusion Model's): identity off.\n- PuLID changes only the model, so the text "
           "conditioning is the same for both branches.\n- The port patches the model for each sampling run, so keep "
           "the kv link (replay).\n\nFLUX dev is guidance-distilled: cfg 1 with Flux Guidance 3.5, scheduler simple, "
           "28 steps, the same seed in both samplers. The negative prompt is unused at cfg 1 (zeroed here).",
           col=0, size=(340, 560))
    unet = g.add("UNETLoader", "flux1-dev.safetensors", "default", col=0, title="Load Diffusion Model (FLUX)",
                 size=(340, 82))
    clip = g.add("DualCLIPLoader", "clip_l.safetensors", "t5xxl_fp16.safetensors", "flux", "default", col=0,
                 size=(340, 130))
    vae = g.add("VAELoader", "ae.safetensors", col=0, size=(340, 58))
    g.note("Model files (FreeCure never downloads them; the PuLID pack may fetch its own):\n- flux1-dev.safetensors "
           "-> ComfyUI/models/diffusion_models/\n- clip_l.safetensors, t5xxl_fp16.safetensors -> "
           "ComfyUI/models/text_encoders/\n- ae.safetensors -> ComfyUI/models/vae/\n- pulid_flux_v0.9.1.safetensors "
           "-> ComfyUI/models/pulid/\n- EVA02_CLIP_L_336_psz14_s6B.pt -> ComfyUI/models/clip/\n- facexlib "
           "detection_Resnet50_Final.pth, parsing_bisenet.pth -> ComfyUI/models/facexlib/\n- insightface antelopev2 "
           "-> ComfyUI/models/insightface/models/antelopev2/\n- BiSeNet 79999_iter.pth -> "
           "ComfyUI/models/face_parsing/\n- a clear photo of the face -> ComfyUI/input/", col=0, size=(340, 330))
    pos = g.add("CLIPTextEncode", PROMPT, col=1, title="Prompt (both branches)", color=POSITIVE_COLOR)
    g.connect(clip, "CLIP", pos, "clip")
    guided = g.add("FluxGuidance", 3.5, col=1, size=(320, 58))
    g.connect(pos, "CONDITIONING", guided, "conditioning")
    neg = g.add("ConditioningZeroOut", col=1, title="Negative (unused at cfg 1)", size=(320, 26))
    g.connect(pos, "CONDITIONING", neg, "conditioning")
    pulid = g.add("PulidFluxModelLoader", "pulid_flux_v0.9.1.safetensors", col=2, size=(340, 60))
    eva = g.add("PulidFluxEvaClipLoader", col=2, size=(340, 46))
    analysis = g.add("PulidFluxInsightFaceLoader", "CPU", col=2, size=(340, 60))
    face = g.add("LoadImage", REFERENCE, "image", col=2, title="Reference face")
    apply = g.add("ApplyPulidFlux", 1.0, 0.0, 1.0, col=3, size=(340, 230))
    for src, out, inp in ((unet, "MODEL", "model"), (pulid, "PULIDFLUX", "pulid_flux"), (eva, "EVA_CLIP", "eva_clip"),
                          (analysis, "FACEANALYSIS", "face_analysis"), (face, "IMAGE", "image")):
        g.connect(src, out, apply, inp)
    g.note("FASA layers: single = every single-stream block (the port patches every 2nd double and every 4th "
           "single block; FASA and PuLID both act there). Record memory: about 48 MB per recorded block and step at "
           "1024x1024; for less, set layers to custom, e.g. single:28-37.", col=3, size=(340, 170))
    br = Branches(model_pd=(apply, "MODEL"), model_fd=(unet, "MODEL"), positive=(guided, "CONDITIONING"),
                  negative=(neg, "CONDITIONING"), fd_positive=(guided, "CONDITIONING"),
                  fd_negative=(neg, "CONDITIONING"))
    st = _freecure_stages(g, unet, br, PROMPT, "FreeCure/peer_pulid_flux", first_col=4, vae=(vae, "VAE"), steps=28,
                          cfg=1.0, scheduler="simple", latent_type="EmptySD3LatentImage", layers="single",
                          omega=FLUX_OMEGA)
    _prompt(g, PROMPT, [(pos, "text"), (st["mask"], "prompt")])
    return g.to_json()


# ------------------------------------------------------------------------------------------ subgraph blueprint
BLUEPRINT_NOTE = (
    "FreeCure in one node: stage 1 samples the foundation branch (no identity) and records it, stage 2 parses its "
    "face and masks the prompt's attributes, stage 3 samples the personalized branch with FASA inside the mask.\n\n"
    "Outside, connect: model_pd / positive / negative = the identity branch (e.g. FreeCure InstantID Pair's pd_*), "
    "model_fd / fd_positive / fd_negative = the foundation branch (fd_*; without an identity adapter the same "
    "MODEL and encoders), the latent, the VAE, FreeCure Face Parser Loader, and the prompt: link the same Prompt "
    "node that feeds your encoders, so the mask reads what the encoders read.\n\n"
    "seed, steps, cfg, sampler, scheduler and denoise are inputs of the FreeCure node and feed both samplers, so "
    "stage 1 and stage 3 always match. Tune the mask here: attributes (manual list), grow, feather on FreeCure "
    "Attribute Mask; omega and layers on FreeCure FASA Config.")


def freecure_blueprint() -> dict:
    """The face-parsing workflow's stages 1-3 (freecure_face_parsing: foundation sampler -> face parse -> attribute
    mask -> FASA -> FreeCure Sampler, replaying stage 1's record) as one subgraph node."""
    g = Blueprint("FreeCure", "FreeCure", "Prompt-faithful face personalization (training-free): foundation "
                  "branch, face parsing, attribute mask from the prompt, FreeCure sampler with FASA. Connect the "
                  "identity and foundation branches, the latent, VAE, face parser and the prompt.")
    g.note(BLUEPRINT_NOTE, col=0, size=(340, 420))
    fd = g.add("FreeCureFoundationSampler", SEED, "fixed", 20, 7.0, "euler", "normal", 1.0, "cond", "reference", "",
               "auto", True, col=1, title="FreeCure Foundation Sampler (stage 1)")
    fd_decode = g.add("VAEDecode", col=2, title="VAE Decode (foundation)")
    g.connect(fd, "fd_latent", fd_decode, "samples")
    fd_preview = g.add("PreviewImage", col=2, title="Foundation image (FD)")
    g.connect(fd_decode, "IMAGE", fd_preview, "images")
    pd = g.add("FreeCureSampler", SEED, "fixed", 20, 7.0, "euler", "normal", 1.0, col=3,
               title="FreeCure Sampler (stage 3)")
    g.connect(fd, "kv", pd, "kv")
    pd_decode = g.add("VAEDecode", col=4, title="VAE Decode (FreeCure result)")
    g.connect(pd, "pd_latent", pd_decode, "samples")

    g.band()
    note2 = g.note(STAGE2_NOTE, col=0, size=(340, 250))
    parse, mask, mask_preview, fasa = _stage2(g, 1, fd_decode, pd, "")

    for name, typ, targets in (
            ("model_pd", "MODEL", [(pd, "model_pd")]),
            ("model_fd", "MODEL", [(fd, "model_fd"), (pd, "model_fd")]),
            ("positive", "CONDITIONING", [(pd, "positive")]),
            ("negative", "CONDITIONING", [(pd, "negative")]),
            ("fd_positive", "CONDITIONING", [(fd, "positive"), (pd, "fd_positive")]),
            ("fd_negative", "CONDITIONING", [(fd, "negative"), (pd, "fd_negative")]),
            ("latent_image", "LATENT", [(fd, "latent_image"), (pd, "latent_image")]),
            ("vae", "VAE", [(fd_decode, "vae"), (pd_decode, "vae")]),
            ("face_parser", "FACE_PARSER", [(parse, "face_parser")]),
            ("prompt", "STRING", [(mask, "prompt")]),
            ("seed", "INT", [(fd, "seed"), (pd, "seed")]),
            ("steps", "INT", [(fd, "steps"), (pd, "steps")]),
            ("cfg", "FLOAT", [(fd, "cfg"), (pd, "cfg")]),
            ("sampler_name", "COMBO", [(fd, "sampler_name"), (pd, "sampler_name")]),
            ("scheduler", "COMBO", [(fd, "scheduler"), (pd, "scheduler")]),
            ("denoise", "FLOAT", [(fd, "denoise"), (pd, "denoise")])):
        g.input(name, typ, targets)
    g.output("image", pd_decode, "IMAGE")
    g.output("pd_latent", pd, "pd_latent")
    g.output("foundation_image", fd_decode, "IMAGE")
    g.output("mask", mask, "mask")

    g.group("Stage 1 \u2014 foundation", [fd, fd_decode, fd_preview], GROUP_COLORS["stage1"])
    g.group("Stage 2 \u2014 attribute mask (tune it here)", [note2, parse, mask, mask_preview, fasa],
            GROUP_COLORS["stage2"])
    g.group("Stage 3 \u2014 FASA", [pd, pd_decode], GROUP_COLORS["stage3"])
    return g.to_json()


WORKFLOWS = {f.__name__: f for f in (freecure_instantid, freecure_crossfaceid, freecure_photomaker,
                                     freecure_peer_instantid, freecure_peer_pulid, freecure_peer_faceid,
                                     freecure_apg, freecure_flux, freecure_peer_pulid_flux)}


# subgraph blueprints: file name (what the node library shows) -> description
SUBGRAPHS = {"FreeCure": freecure_blueprint}


def render(workflow: dict) -> str:
    return json.dumps(workflow, indent=2) + "\n"


def _targets() -> dict[str, tuple[pathlib.Path, object]]:
    out = {name: (WORKFLOWS_DIR / f"{name}.json", f) for name, f in WORKFLOWS.items()}
    out.update({name: (SUBGRAPHS_DIR / f"{name}.json", f) for name, f in SUBGRAPHS.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    targets = _targets()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"files to write (default: all of {', '.join(targets)})")
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in targets]
    if unknown:
        parser.error(f"unknown workflow(s) {unknown}; known: {list(targets)}")
    stale = []
    for name in args.names or list(targets):
        path, describe = targets[name]
        text = render(describe())
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date (run python scripts/workflow_builder.py): {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
