"""Load this repository as a ComfyUI custom node pack, the way ComfyUI does (for in-process tests and the demo)."""
from __future__ import annotations

import asyncio
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_pack(name: str):
    """Import the pack's __init__.py as package `name` (so its relative imports work) and return the module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def pack_nodes(name: str) -> dict:
    """The pack's V3 node classes by node id, through its comfy_entrypoint."""
    extension = asyncio.run(load_pack(name).comfy_entrypoint())
    return {n.GET_SCHEMA().node_id: n for n in asyncio.run(extension.get_node_list())}
