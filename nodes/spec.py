"""A neutral description of a node (inputs, outputs, tooltips) and its builders for ComfyUI's V3
schema and the V1 dictionaries, so both generations expose identical node ids and inputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

WIDGETS = ("FLOAT", "INT", "BOOLEAN", "STRING", "COMBO")


@dataclass
class In:
    """One node input. kind is a ComfyUI type name (MODEL, LATENT, FLOAT, COMBO, FREECURE_FASA, ...)."""
    kind: str
    name: str
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: list | Callable[[], list] | None = None  # a callable is re-read each time ComfyUI asks (new files)
    optional: bool = False
    multiline: bool = False
    seed: bool = False  # INT with the "control after generate" widget


@dataclass
class Out:
    kind: str
    name: str
    tooltip: str


@dataclass
class WithUI:
    """A node result plus UI data shown on the node (e.g. {"text": ["..."]})."""
    outputs: tuple
    ui: dict


@dataclass
class NodeSpec:
    node_id: str
    display_name: str
    category: str
    description: str
    inputs: list[In]
    outputs: list[Out]
    run: Callable[..., tuple]
    extra: dict = field(default_factory=dict)
    wants_node_id: bool = False  # run gets node_id= (ComfyUI's hidden UNIQUE_ID: where the node shows its text)


def _options(i: In) -> list:
    return list(i.options() if callable(i.options) else i.options)


def check_choices(spec: NodeSpec, kwargs: dict) -> None:
    """ValueError naming the input and its choices when a fixed-choice COMBO got another value. ComfyUI does not
    check V3 combo values when a prompt is queued, so a prompt from the API could send anything (even a path).
    File lists (callable options) are checked by their loaders, which name the folder to put the file in."""
    for i in spec.inputs:
        if i.kind != "COMBO" or callable(i.options) or i.name not in kwargs:
            continue
        value, options = kwargs[i.name], _options(i)
        if value not in options:
            shown = ", ".join(map(str, options[:12])) + (f", ... ({len(options)} in all)" if len(options) > 12 else "")
            raise ValueError(f"FreeCure: {spec.display_name}: {i.name} {value!r} is not one of its choices "
                             f"({shown}); pick one from the list.")


# ---------------------------------------------------------------------------------------- V1
def _v1_input(i: In):
    opts = {"tooltip": i.tooltip}
    for key in ("default", "min", "max", "step"):
        if getattr(i, key) is not None:
            opts[key] = getattr(i, key)
    if i.multiline:
        opts["multiline"] = True
    if i.seed:
        opts["control_after_generate"] = True
    if i.kind == "COMBO":
        return (_options(i), opts)
    return (i.kind, opts)


def to_v1(spec: NodeSpec) -> type:
    """A V1 node class (INPUT_TYPES, RETURN_TYPES, FUNCTION) for the spec."""
    def input_types(cls):
        req = {i.name: _v1_input(i) for i in spec.inputs if not i.optional}
        opt = {i.name: _v1_input(i) for i in spec.inputs if i.optional}
        types = {"required": req, "optional": opt} if opt else {"required": req}
        if spec.wants_node_id:
            types["hidden"] = {"node_id": "UNIQUE_ID"}
        return types

    def execute(self, **kwargs):
        check_choices(spec, kwargs)
        result = spec.run(**kwargs)
        if isinstance(result, WithUI):
            return {"ui": result.ui, "result": tuple(result.outputs)}
        return tuple(result)

    return type(spec.node_id, (), {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.kind for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in spec.outputs),
        "FUNCTION": "execute",
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "execute": execute,
    })


# ---------------------------------------------------------------------------------------- V3
def to_v3(spec: NodeSpec, io) -> type:
    """A V3 io.ComfyNode subclass for the spec (io = comfy_api.latest.io)."""
    builtin = {"MODEL": io.Model, "CONDITIONING": io.Conditioning, "LATENT": io.Latent, "MASK": io.Mask,
               "GUIDER": io.Guider, "IMAGE": io.Image, "FLOAT": io.Float, "INT": io.Int, "BOOLEAN": io.Boolean,
               "STRING": io.String, "COMBO": io.Combo}
    custom: dict[str, Any] = {}

    def io_type(kind):
        if kind in builtin:
            return builtin[kind]
        if kind not in custom:
            custom[kind] = io.Custom(kind)
        return custom[kind]

    def make_input(i: In):
        kw = {"tooltip": i.tooltip, "optional": i.optional}
        t = io_type(i.kind)
        if i.kind == "COMBO":
            return t.Input(i.name, options=_options(i), default=i.default, **kw)
        if i.kind in ("FLOAT", "INT"):
            kw.update(default=i.default, min=i.min, max=i.max, step=i.step)
            if i.seed:
                kw["control_after_generate"] = True
        elif i.kind in ("BOOLEAN",):
            kw["default"] = i.default
        elif i.kind == "STRING":
            kw.update(default=i.default, multiline=i.multiline)
        return t.Input(i.name, **kw)

    def define_schema(cls):
        extra = {"hidden": [io.Hidden.unique_id]} if spec.wants_node_id else {}
        return io.Schema(node_id=spec.node_id, display_name=spec.display_name, category=spec.category,
                         description=spec.description, inputs=[make_input(i) for i in spec.inputs],
                         outputs=[io_type(o.kind).Output(o.name, display_name=o.name, tooltip=o.tooltip)
                                  for o in spec.outputs], **extra)

    def execute(cls, **kwargs):
        check_choices(spec, kwargs)
        if spec.wants_node_id:
            kwargs["node_id"] = cls.hidden.unique_id if cls.hidden is not None else None
        result = spec.run(**kwargs)
        if isinstance(result, WithUI):
            return io.NodeOutput(*result.outputs, ui=result.ui)
        return io.NodeOutput(*result)

    return type(spec.node_id, (io.ComfyNode,), {"define_schema": classmethod(define_schema),
                                                "execute": classmethod(execute)})
