"""The example workflows in the real ComfyUI frontend, in a headless Chromium.

The session's ComfyUI server (``comfy_server``) serves the frontend of the installed ``comfyui-frontend-package``;
Debian's ``chromium``, driven by Playwright (``tests/support/browser.py``), opens it like a user:

* the Templates dialog lists the pack (``comfyui-freecure``) with a card per workflow, each showing its thumbnail
  (``workflows/<name>.jpg``, the file the frontend asks for beside ``<name>.json``);
* each workflow in ``workflows/`` is loaded by clicking its card; the test then fails if the frontend reports a
  missing node type (only the peer packs' nodes may be missing in the peer workflows, and they must be), its workflow
  validator complains or patches a link, a link in the graph is dangling or connects incompatible types, a widget
  value was dropped or changed or does not fit its widget (a combo value that is not among the options is accepted
  only for file names: the test server has none of the user's model or input files), nodes overlap as drawn, or a
  JavaScript error is raised while it loads;
* a deliberately broken workflow must be reported on each of those counts (the check can fail).

Screenshots: ``out/screenshots/<name>.png`` (whole graph) and ``out/screenshots/template_browser.png``
(``FREECURE_SCREENSHOT_DIR`` overrides the folder).  Regenerate the thumbnails and the README screenshot with
``FREECURE_WRITE_THUMBNAILS=1 .venv/bin/python -m pytest -q tests/e2e/test_browser.py``.

Needs a Chromium (``scripts/bootstrap.sh`` installs Debian's when run as root); without one the test fails saying
how to install it, unless ``FREECURE_SKIP_BROWSER=1``, which skips it.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peer_nodes  # noqa: E402
import workflow_utils as wu  # noqa: E402
from support import browser as br  # noqa: E402

MODULE = "comfyui-freecure"  # the pack's folder name under custom_nodes (conftest's comfy_server)
TEMPLATE_PREFIX = f"/api/workflow_templates/{MODULE}/"
READY_NODE = "FreeCureSampler"
THUMB_WIDTH, THUMB_MAX_BYTES = 400, 60_000
README_SHOT = wu.REPO_ROOT / "docs" / "screenshot_instantid.png"
README_SHOT_WORKFLOW, README_SHOT_MAX_BYTES = "freecure_instantid", 300_000
README_SHOT_VIEWPORT = (2400, 1300)  # the whole graph at about 70 %: its labels stay readable
WRITE = os.environ.get("FREECURE_WRITE_THUMBNAILS") == "1"


def _shot_dir() -> pathlib.Path:
    d = pathlib.Path(os.environ.get("FREECURE_SCREENSHOT_DIR") or wu.REPO_ROOT / "out" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _thumb(name: str) -> pathlib.Path:
    return wu.WORKFLOWS_DIR / f"{name}.jpg"


def _expected_missing(name: str, workflow: dict) -> set[str]:
    return {t for t in wu.node_types(workflow) if t in peer_nodes.PACKS.get(name, {})}


def _write_thumbnail(png: pathlib.Path, name: str) -> None:
    from PIL import Image
    with Image.open(png) as im:
        im = im.convert("RGB")
        h = round(im.height * THUMB_WIDTH / im.width)
        small = im.resize((THUMB_WIDTH, h), Image.LANCZOS)
    for quality in (85, 80, 75, 70, 60, 50):
        small.save(_thumb(name), "JPEG", quality=quality, optimize=True, progressive=True)
        if _thumb(name).stat().st_size <= THUMB_MAX_BYTES:
            break


def _write_readme_shot(png: pathlib.Path) -> None:
    from PIL import Image
    README_SHOT.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(png) as im:
        im = im.convert("RGB")
    for colors in (256, 128, 64):
        im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            README_SHOT, "PNG", optimize=True)
        if README_SHOT.stat().st_size <= README_SHOT_MAX_BYTES:
            break


# ------------------------------------------------------------------------------------------ browser
@pytest.fixture(scope="module")
def frontend(request):
    if br.skip_requested():
        pytest.skip(f"{br.SKIP_ENV}=1: browser test skipped")
    chromium = br.find_chromium()
    if chromium is None:
        pytest.fail(f"no Chromium found: {br.INSTALL_HINT}")
    if importlib.util.find_spec("playwright") is None:
        pytest.fail("the Python package playwright is missing (requirements-dev.txt); run scripts/bootstrap.sh")
    comfy_server = request.getfixturevalue("comfy_server")  # only now: a skipped or failed browser starts no server
    fe = br.Frontend(comfy_server.url, chromium, READY_NODE)
    try:
        fe.start()
        startup = fe.events_since(0)
        ours = [e for e in startup if "freecure" in (e["text"] + e.get("url", "")).lower()
                and e["kind"] != "http"]
        assert not ours, f"errors naming FreeCure while the page started: {ours}"
        yield fe
    finally:
        fe.close()


def _check_loaded(fe, load: dict, mark: int, workflow: dict, expected_missing) -> list[str]:
    snap = fe.snapshot()
    snap["load"] = load
    snap["toasts"] = fe.toasts_since(load["seq"])
    snap["errors"] = br.load_errors(fe.events_since(mark), TEMPLATE_PREFIX)
    return br.graph_problems(snap, workflow, expected_missing)


@pytest.mark.e2e
@pytest.mark.parametrize("name", wu.ALL_WORKFLOW_NAMES)
def test_workflow_loads_in_the_frontend(frontend, name):
    workflow = wu.load_ui(name)
    mark = frontend.mark()
    load = frontend.load_from_template_browser(MODULE, name)
    problems = _check_loaded(frontend, load, mark, workflow, _expected_missing(name, workflow))
    png = _shot_dir() / f"{name}.png"
    frontend.screenshot_graph(png)
    if WRITE:
        _write_thumbnail(png, name)
        if name == README_SHOT_WORKFLOW:
            big = _shot_dir() / f"{name}_large.png"
            frontend.screenshot_graph(big, viewport=README_SHOT_VIEWPORT)
            _write_readme_shot(big)
    assert not problems, f"{name} in the frontend (screenshot {png}):\n  " + "\n  ".join(problems)


@pytest.mark.e2e
def test_template_browser_shows_every_workflow_with_its_thumbnail(frontend):
    frontend.reload()  # a fresh dialog: no thumbnail answers cached from the card clicks above
    mark = frontend.mark()
    frontend.open_template_browser(MODULE)
    cards = frontend.template_cards(list(wu.ALL_WORKFLOW_NAMES))
    frontend.page.wait_for_timeout(300)
    frontend.screenshot(_shot_dir() / "template_browser.png")
    frontend.close_dialogs()
    bad = {n: c for n, c in cards.items()
           if not (c["card"] and c["title"] == n and c["complete"] and c["width"] > 0
                   and "default-template" not in (c["src"] or ""))}
    assert not bad, f"cards without their thumbnail (or missing): {bad}"
    failed = [e for e in frontend.events_since(mark) if e["kind"] == "http" and TEMPLATE_PREFIX in e["url"]]
    assert not failed, failed


def _broken_workflow() -> dict:
    """freecure_replay with one fault of each kind the browser check must report."""
    wf = copy.deepcopy(wu.load_ui("freecure_replay"))
    by_type = lambda t: next(n for n in wf["nodes"] if n["type"] == t)  # noqa: E731
    # 1. a node type nobody registers
    by_type("FreeCureFASAConfig")["type"] = "FreeCureNoSuchNode"
    # 2. a link whose two ends agree with it but whose types do not fit: the sampler's MODEL link retargeted at
    #    the positive (CONDITIONING) input of the same sampler, and the bumped CONDITIONING link dropped
    sampler = by_type("FreeCureSampler")
    model_in = next(i for i, s in enumerate(sampler["inputs"]) if s["name"] == "model_pd")
    pos_in = next(i for i, s in enumerate(sampler["inputs"]) if s["name"] == "positive")
    model_link = sampler["inputs"][model_in]["link"]
    pos_link = sampler["inputs"][pos_in]["link"]
    wf["links"] = [l for l in wf["links"] if l[0] != pos_link]
    for n in wf["nodes"]:
        for o in n.get("outputs", []):
            if o.get("links") and pos_link in o["links"]:
                o["links"].remove(pos_link)
    link = next(l for l in wf["links"] if l[0] == model_link)
    link[4] = pos_in
    sampler["inputs"][model_in]["link"] = None
    sampler["inputs"][pos_in]["link"] = model_link
    # 3. a dangling link: it names an output slot its origin node does not have (the validator drops or patches it)
    vae_dec = by_type("VAEDecode")
    dangling = max(l[0] for l in wf["links"]) + 1
    wf["links"].append([dangling, vae_dec["id"], 7, sampler["id"], 0, "IMAGE"])
    wf["last_link_id"] = dangling
    # 4. a combo value that is no option, and 5. a widget value too many
    sampler["widgets_values"][sampler["widgets_values"].index("euler")] = "no_such_sampler"
    by_type("EmptyLatentImage")["widgets_values"].append(7)
    return wf


@pytest.mark.e2e
def test_broken_workflow_is_reported(frontend):
    wf = _broken_workflow()
    # 6. a JavaScript error while it loads: an extension that throws when a FreeCure Sampler is set up
    frontend.page.evaluate("""() => { if (!window.__fcThrower) { window.__fcThrower = {on: false};
        app.registerExtension({name: 'freecure.selftest-thrower', loadedGraphNode(node) {
          if (window.__fcThrower.on && node.type === 'FreeCureSampler') throw new Error('selftest'); }}); }
        window.__fcThrower.on = true; }""")
    mark = frontend.mark()
    try:
        load = frontend.load_graph_data(wf, "freecure_broken_selftest")
    finally:
        frontend.page.evaluate("() => { window.__fcThrower.on = false; }")
    problems = _check_loaded(frontend, load, mark, wf, set())
    frontend.screenshot_graph(_shot_dir() / "freecure_broken_selftest.png")
    text = "\n".join(problems)
    expected = {
        "missing node type": "reports missing node types ['FreeCureNoSuchNode']",
        "incompatible link": "(MODEL) cannot connect to FreeCureSampler.positive (CONDITIONING)",
        "dangling link (validator)": "the frontend says",
        "dangling link (graph)": "links differ from the file",
        "combo value": "'no_such_sampler' is not one of its options",
        "extra widget value": "EmptyLatentImage) widget values changed on load",
        "missing-nodes dialog": "dialogs open after loading: ['global-missing-nodes']",
        "JavaScript error": "console error while loading: Error calling extension 'freecure.selftest-thrower'",
    }
    unreported = {k: v for k, v in expected.items() if v not in text}
    assert not unreported, f"the browser check missed {sorted(unreported)}; it reported:\n{text}"


# ------------------------------------------------------------------------------------------ files (last: FREECURE_WRITE_THUMBNAILS=1 writes them above)
def test_every_workflow_has_a_small_jpeg_thumbnail():
    from PIL import Image
    for name in wu.ALL_WORKFLOW_NAMES:
        path = _thumb(name)
        assert path.is_file(), (f"{path} missing; regenerate the thumbnails with FREECURE_WRITE_THUMBNAILS=1 "
                                f".venv/bin/python -m pytest -q tests/e2e/test_browser.py")
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.width == THUMB_WIDTH and 100 <= im.height <= 400, (path, im.size)
        assert path.stat().st_size <= THUMB_MAX_BYTES, path
    stray = sorted(p.name for p in wu.WORKFLOWS_DIR.glob("*.jpg") if p.stem not in wu.ALL_WORKFLOW_NAMES)
    assert not stray, f"thumbnails without a workflow: {stray}"
    assert README_SHOT.is_file() and README_SHOT.stat().st_size <= README_SHOT_MAX_BYTES, README_SHOT
