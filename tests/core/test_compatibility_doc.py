"""docs/compatibility.md lists every ComfyUI name the shipped pack uses, and each of them exists in the ComfyUI trees
installed for this run.  Pure source reading (tests/support/comfy_internals.py): nothing is imported from ComfyUI.
When the code changes, update the doc with ``python -m tests.support.comfy_internals --write`` (keeps the hand-written
why column; new rows say TODO until someone writes why the pack needs the name)."""
from __future__ import annotations

import ast
import pathlib
import textwrap
import warnings

import pytest

from support import comfy_internals as ci
from support.comfy_env import comfy_root

HOW = f"Update the doc: run `{ci.WRITE_COMMAND}` from the repo root, then fill in any 'why' marked TODO."


def _trees() -> list[ci.ComfyTree]:
    """The ComfyUI of this run ($COMFYUI_PATH, else .comfyui) first, then any other checkout bootstrap installed."""
    candidates = [comfy_root(), ci.REPO_ROOT / ".comfyui", *sorted((ci.REPO_ROOT / ".matrix").glob("*/ComfyUI"))]
    seen, trees = set(), []
    for root in candidates:
        real = root.resolve()
        if real not in seen and (real / "main.py").is_file() and (real / "comfy").is_dir():
            seen.add(real)
            trees.append(ci.ComfyTree(real))
    return trees


@pytest.fixture(scope="module")
def table() -> list[ci.Row]:
    return ci.rows(ci.scan())


@pytest.fixture(scope="module")
def doc_rows() -> list[ci.Row]:
    assert ci.DOC.is_file(), f"{ci.DOC} is missing. {HOW}"
    return ci.parse(ci.DOC.read_text(encoding="utf-8"))


def test_doc_lists_exactly_the_comfyui_names_the_pack_uses(table, doc_rows):
    assert doc_rows, f"no generated tables in {ci.DOC.name}. {HOW}"
    diff = ci.differences(doc_rows, table)
    assert not diff, f"{ci.DOC.name} disagrees with the code:\n  " + "\n  ".join(diff) + f"\n{HOW}"


def test_parameters_that_carry_comfyui_modules_are_known():
    problems = ci.suspect_parameters()
    assert not problems, ("a parameter named like a ComfyUI module is used with attributes the scanner cannot follow "
                          "(or an alias is stale); edit PARAMETER_ALIASES in tests/support/comfy_internals.py:\n  "
                          + "\n  ".join(problems))


def test_every_listed_name_exists_in_the_installed_comfyui(doc_rows):
    trees = _trees()
    if not trees or trees[0].root != comfy_root():
        pytest.skip(f"no ComfyUI at {comfy_root()} (set COMFYUI_PATH or run scripts/bootstrap.sh)")
    required, optional = [], []
    for row in doc_rows:
        lacking = [(t, why) for t in trees for why in [t.lookup(row.module, row.symbol)] if why]
        if lacking:
            line = f"{row.module} {row.symbol or '(module)'}: " + "; ".join(
                f"missing in ComfyUI {t.version} ({t.root}): {why}" for t, why in lacking)
            (optional if "optional" in row.surface else required).append(line)
    if optional:
        warnings.warn("optional ComfyUI names missing (the pack falls back):\n  " + "\n  ".join(optional))
    assert not required, ("ComfyUI names the pack needs are missing:\n  " + "\n  ".join(required) +
                          "\nAdapt the pack (or drop that ComfyUI from the tested range in docs/compatibility.md).")


def test_module_list_covers_each_installed_comfyui():
    trees = _trees()
    if not trees:
        pytest.skip(f"no ComfyUI at {comfy_root()}")
    for tree in trees:
        extra = tree.top_level_modules() - ci.COMFY_MODULES
        assert not extra, (f"ComfyUI {tree.version} ({tree.root}) has top-level modules the scanner does not know: "
                           f"{sorted(extra)}; add them to COMFY_MODULES in tests/support/comfy_internals.py")


def test_the_lookup_reports_names_a_comfyui_lacks():
    """Guards against a check that passes vacuously: made-up names are reported per level."""
    trees = _trees()
    if not trees:
        pytest.skip(f"no ComfyUI at {comfy_root()}")
    tree = trees[0]
    assert tree.lookup("comfy.samplers", "KSampler.SAMPLERS") is None
    assert tree.lookup("comfy_api.latest.io", "ComfyNode") is None  # through `from . import _io as io`
    assert tree.lookup("server", "PromptServer.instance") is None  # assigned in __init__
    assert tree.lookup(ci.HTTP, "/history/{}") is None
    for module, symbol in [("comfy.samplers", "NoSuchSampler"), ("comfy.samplers", "KSampler.NO_SUCH"),
                           ("comfy.no_such_module", "x"), ("comfy_api.latest.io", "NoSuchType"),
                           (ci.HTTP, "/no_such_route")]:
        assert tree.lookup(module, symbol), (module, symbol)


def test_the_scanner_finds_each_kind_of_use():
    source = textwrap.dedent('''
        import sys, importlib
        import comfy.samplers
        from comfy_api.latest import io, ComfyExtension
        try:
            import comfy.optional_thing
        except ImportError:
            pass

        def lazy(model_base, rows):
            import folder_paths
            mm = sys.modules.get("comfy.model_management")
            mm.interrupt_current_processing(True)
            folder_paths.get_full_path("a", "b")
            importlib.import_module("cuda_malloc")
            names = [getattr(model_base, n) for n in ("A", "B")]
            return comfy.samplers.KSampler.SAMPLERS, getattr(comfy.samplers, "sampler_object"), \\
                hasattr(comfy.samplers, "Maybe"), "/history/" + rows, f"{rows}/view?x"

        class Guider(comfy.samplers.CFGGuider):
            def predict_noise(self, x):
                return super().predict_noise(x)

        class Mixin:
            def sample(self):
                return super().sample()

        class Both(Mixin, Guider):
            pass

        def shadowed(folder_paths):
            return folder_paths.anything
        ''')
    scanner = ci._Scanner("x.py", ast.parse(source))
    scanner.visit(ast.parse(source))
    scanner.super_calls()
    found = {(u.module, u.symbol, u.guarded) for u in scanner.uses}
    assert found >= {
        ("comfy.samplers", "", False), ("comfy_api.latest", "io", False), ("comfy.optional_thing", "", True),
        ("folder_paths", "", False), ("folder_paths", "get_full_path", False),
        ("comfy.model_management", "interrupt_current_processing", False), ("cuda_malloc", "", False),
        ("comfy.samplers", "KSampler.SAMPLERS", False), ("comfy.samplers", "sampler_object", False),
        ("comfy.samplers", "Maybe", True), ("comfy.samplers", "CFGGuider", False),
        ("comfy.samplers", "CFGGuider.predict_noise", False), ("comfy.samplers", "CFGGuider.sample", False),
        (ci.HTTP, "/history/{}", False)}, found
    symbols = {(m, s) for m, s, _ in found}
    assert ("folder_paths", "anything") not in symbols  # a parameter shadows the import
    assert (ci.HTTP, "/view") not in symbols  # inside an f-string, not a route literal
    assert not any(s in ("A", "B") for _, s, _ in found)  # model_base is a plain parameter here
