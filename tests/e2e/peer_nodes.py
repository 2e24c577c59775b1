"""The peer packs that workflows/freecure_peer_*.json need, read from the real packs (no hand-written signatures).

* Signatures: the peer workflows and their API copies are checked against the /object_info of a server that has the
  packs installed (conftest ``comfy_peer_server``: cubiq's ComfyUI_InstantID, PuLID_ComfyUI and
  ComfyUI_IPAdapter_plus, unmodified, from .peers/), in tests/e2e/test_workflows_identity.py.
* Names: on the plain e2e server (no packs) exactly the pack's nodes must be missing (test_workflows_identity.py,
  and the frontend's missing-node report in tests/e2e/test_browser.py). ``pack_nodes`` reads them from the pack's
  source: the keys of its ``NODE_CLASS_MAPPINGS`` dict, parsed, not imported (importing needs ComfyUI).
"""
from __future__ import annotations

import ast
import functools
import pathlib

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PEERS_DIR = REPO_ROOT / ".peers"  # unmodified snapshots, unpacked by scripts/bootstrap.sh (conftest.PEERS_DIR)

# which pack (its folder under .peers/ and custom_nodes/) each peer workflow needs
PACKS = {"freecure_peer_instantid": "ComfyUI_InstantID", "freecure_peer_pulid": "PuLID_ComfyUI",
         "freecure_peer_faceid": "ComfyUI_IPAdapter_plus", "freecure_peer_pulid_flux": "ComfyUI_PuLID_Flux_ll"}


def python_module(pack: str) -> str:
    """The ``python_module`` ComfyUI's /object_info gives the nodes of a pack installed as custom_nodes/<pack>."""
    return f"custom_nodes.{pack}"


@functools.lru_cache(maxsize=None)
def pack_nodes(pack: str) -> frozenset[str] | None:
    """The node class names a pack registers (its NODE_CLASS_MAPPINGS keys, from its top-level .py files); None when
    the pack is not in .peers/."""
    folder = PEERS_DIR / pack
    if not (folder / "__init__.py").is_file():
        return None
    names: set[str] = set()
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == "NODE_CLASS_MAPPINGS" for t in node.targets)):
                names.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    assert names, f"no NODE_CLASS_MAPPINGS found in {folder}"
    return frozenset(names)


def workflow_pack_nodes(name: str, node_types) -> set[str] | None:
    """The node types among ``node_types`` (of peer workflow ``name``) that its pack registers; an empty set for a
    workflow that needs no pack; None when its pack is not in .peers/."""
    if name not in PACKS:
        return set()
    names = pack_nodes(PACKS[name])
    return None if names is None else {t for t in node_types if t in names}
