"""The pack's house plan, read from the source (no imports): no module uses another module's private (_name) names,
and the library's layers only import downward.

Layers of ``freecure_core`` (lowest first): the ground floor (``fasa``, ``parsing``, ``identity``, ``apg``,
``attributes``, ``onnx_session``, ``safe_load``, ``convert``); the evaluation metrics and training (``eval``,
``train``); the ComfyUI adapter (``comfy_bridge``); the headless runner (``runner``, ``run``); ``eval.protocol`` and
``train.eval`` are applications on top of the runner.  ``nodes/`` declares nodes over all of them.
"""
from __future__ import annotations

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
GROUND = {"fasa", "parsing", "identity", "apg", "attributes", "onnx_session", "safe_load", "convert"}
ABOVE_GROUND = {"eval", "train", "comfy_bridge", "runner", "run"}


def _modules():
    for path in sorted((REPO / "freecure_core").rglob("*.py")) + sorted((REPO / "nodes").glob("*.py")) + \
            [REPO / "__init__.py"]:
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, parts, ast.parse(path.read_text(), filename=str(path))


def _target(parts: list[str], path: pathlib.Path, node: ast.ImportFrom) -> list[str]:
    """The dotted module an ImportFrom names, as a list of parts (relative imports resolved)."""
    if not node.level:
        return (node.module or "").split(".")
    package = parts if path.name == "__init__.py" else parts[:-1]
    base = package[:len(package) - node.level + 1]
    return base + (node.module.split(".") if node.module else [])


def test_no_module_imports_another_modules_private_names():
    found = []
    for path, parts, tree in _modules():
        imported_modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(parts, path, node)
                if target[:1] not in (["freecure_core"], ["nodes"]) and node.level == 0:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name} "
                                     f"from {'.'.join(target)}")
                    imported_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                imported_modules.update((a.asname or a.name).split(".")[0] for a in node.names
                                        if a.name.startswith("freecure_core"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not found, "private names used across modules (make them public with a docstring):\n  " + \
        "\n  ".join(found)


def test_the_ground_floor_imports_nothing_above_it():
    found = []
    for path, parts, tree in _modules():
        if parts[:1] != ["freecure_core"] or len(parts) < 2 or parts[1] not in GROUND:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(parts, path, node)
                if target[:1] == ["freecure_core"] and len(target) > 1 and target[1] in ABOVE_GROUND:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {'.'.join(target)}")
                if target[:1] == ["nodes"]:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {'.'.join(target)}")
    assert not found, "the ground floor of freecure_core imports a higher layer:\n  " + "\n  ".join(found)


def test_fasa_stands_alone():
    """FASA, the engine, depends on no other part of the pack."""
    found = []
    for path, parts, tree in _modules():
        if parts[:2] != ["freecure_core", "fasa"]:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _target(parts, path, node)
                if target[:1] == ["freecure_core"] and target[1:2] != ["fasa"]:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} imports {'.'.join(target)}")
    assert not found, found


def test_the_checks_see_a_planted_violation(tmp_path):
    """The scanner is not blind: a private import and an upward import planted in a copy are reported."""
    import shutil
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "freecure_core", copy / "freecure_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "nodes", copy / "nodes", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "__init__.py", copy / "__init__.py")
    (copy / "freecure_core" / "fasa" / "planted.py").write_text(
        "from ..runner.run import _install_sigint\nfrom ..comfy_bridge import guiders\n")
    globals()["REPO"] = copy  # the checks read the module-level REPO
    try:
        for check in (test_no_module_imports_another_modules_private_names,
                      test_the_ground_floor_imports_nothing_above_it, test_fasa_stands_alone):
            try:
                check()
            except AssertionError as e:
                assert "planted.py" in str(e), e
            else:
                raise AssertionError(f"{check.__name__} missed the planted violation")
    finally:
        globals()["REPO"] = pathlib.Path(__file__).resolve().parents[2]
