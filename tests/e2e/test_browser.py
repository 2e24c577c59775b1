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
* a deliberately broken workflow must be reported on each of those counts (the check can fail);
* each subgraph blueprint in ``subgraphs/`` is listed by the server (``GET /global_subgraphs``) for the pack, shows
  in the node library and goes on the graph as a node the way the library puts it there, without missing node
  types, dropped links or widget values, or JavaScript errors (skipped, naming the version, where the server or
  frontend serves no blueprints).

Frontends differ in how they report a load (``tests/support/browser.py`` reads each the way it shows it): 1.32 opens
the missing-nodes dialog; 1.49 shows an error overlay whose errors panel lists missing node packs and the missing
model and input files (the test server has none of the user's: accepted only for file-name combo inputs, as 1.32's
combo check accepts them), and flags those loaders.

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
NODE_PACK = f"custom_nodes.{MODULE}"  # how /global_subgraphs names the pack a blueprint comes from
SUBGRAPHS_DIR = wu.REPO_ROOT / "subgraphs"
BLUEPRINT_PREFIX = "SubgraphBlueprint."  # the node library's name for a blueprint: prefix + its /global_subgraphs id
EMPTY_WORKFLOW = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
                  "extra": {}, "version": 0.4}
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
    """The node types the plain server lacks in this workflow: its peer pack's nodes (read from the pack's source;
    the test is skipped when the pack is not in .peers/), none for our own workflows."""
    missing = peer_nodes.workflow_pack_nodes(name, wu.node_types(workflow))
    if missing is None:
        pytest.skip(f"{peer_nodes.PACKS[name]} is not in {peer_nodes.PEERS_DIR}: its node names are read from there")
    return missing


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
    snap_kind = frontend.snapshot()["report"]["kind"]
    problems = _check_loaded(frontend, load, mark, wf, set())
    frontend.screenshot_graph(_shot_dir() / "freecure_broken_selftest.png")
    text = "\n".join(problems)
    # what the user is shown for the missing node type: 1.32's dialog, 1.49's error overlay + errors panel
    missing_report = {
        "dialog": ("the missing-nodes report is shown after loading (dialog 'global-missing-nodes')",),
        "errors_panel": ("the missing-nodes report is shown after loading (error overlay '",
                         "errors panel 'Missing Node Packs': ['FreeCureNoSuchNode']"),
    }[snap_kind]
    expected = {
        "missing node type": ("reports missing node types ['FreeCureNoSuchNode']",),
        "incompatible link": ("(MODEL) cannot connect to FreeCureSampler.positive (CONDITIONING)",),
        "dangling link (validator)": ("the frontend says (warn): ",),
        "dangling link (graph)": ("links differ from the file",),
        "combo value": ("'no_such_sampler' is not one of its options",),
        "extra widget value": ("EmptyLatentImage) widget values changed on load",),
        "missing-nodes report": missing_report,
        "JavaScript error": ("console error while loading: Error calling extension 'freecure.selftest-thrower'",),
    }
    unreported = {k: v for k, v in expected.items() if not all(part in text for part in v)}
    assert not unreported, (f"the browser check missed {sorted(unreported)} on frontend {frontend.frontend_version} "
                            f"(reports: {snap_kind}); it reported:\n{text}")


def test_missing_user_files_are_accepted_only_for_file_name_inputs():
    """The 1.4x errors-panel reading (no browser): a missing model/input file is accepted only where it names a
    file-name combo value the server does not list; any other report, error count or flag is a problem."""
    def node(nid, typ, widgets, has_errors=True):
        return {"id": nid, "type": typ, "title": typ, "has_errors": has_errors, "registered": True, "def": None,
                "subgraph_id": None, "inputs": [], "outputs": [], "widgets": widgets,
                "widgets_values": [w["value"] for w in widgets], "properties": {}, "bounding": [nid * 500, 0, 100, 100]}

    def combo(name, value, values):
        return {"name": name, "type": "combo", "value": value, "values": values, "min": None, "max": None}

    def snap_with(entries, nodes, other=0, media=()):
        report = {"kind": "errors_panel", "dialogs": [], "missing_nodes": [], "missing_nodes_title": None,
                  "missing_models": entries, "missing_media": list(media),
                  "counts": {"total": len(entries) + len(media) + other, "missing_nodes": 0,
                             "missing_models": len(entries), "missing_media": len(media)},
                  "node_errors": None, "execution_error": None, "prompt_error": None,
                  "overlay": f"{len(entries) + len(media) + other} errors found"}
        return {"nodes": nodes, "links": [], "report": report}

    def entry(nid, typ, widget, name):
        return {"node_id": str(nid), "node_type": typ, "widget": widget, "name": name, "directory": "x",
                "missing": True}

    ckpt = node(1, "CheckpointLoaderSimple", [combo("ckpt_name", "sd_xl_base_1.0.safetensors", ["tiny.safetensors"])])
    img = node(2, "LoadImage", [combo("image", "reference_face.png", ["other.png"])])
    sampler = node(3, "KSampler", [combo("sampler_name", "euler", ["euler"]), combo("scheduler", "karras", ["normal"])])
    listed = node(4, "VAELoader", [combo("vae_name", "ae.safetensors", ["ae.safetensors"])])
    workflow = {"nodes": [{"id": n["id"], "type": n["type"], "widgets_values": n["widgets_values"]}
                          for n in (ckpt, img, sampler, listed)], "links": []}
    fine = snap_with([entry(1, "CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors")],
                     [ckpt, img, dict(sampler, has_errors=False), dict(listed, has_errors=False)],
                     media=[entry(2, "LoadImage", "image", "reference_face.png")])
    assert br.graph_problems(fine, workflow) == []
    cases = {
        "a combo that is no file list": (entry(3, "KSampler", "sampler_name", "euler"), "which is not a file name"),
        "a non-file value": (entry(3, "KSampler", "scheduler", "karras"), "which is not a file name"),
        "a file the server lists": (entry(4, "VAELoader", "vae_name", "ae.safetensors"), "which the server lists"),
        "another value than the widget's": (entry(1, "CheckpointLoaderSimple", "ckpt_name", "other.safetensors"),
                                            "but the widget holds"),
        "a widget the node lacks": (entry(1, "CheckpointLoaderSimple", "vae_name", "ae.safetensors"),
                                    "which has no such widget"),
        "a node not in the graph": (entry(9, "VAELoader", "vae_name", "ae.safetensors"), "a node not in the graph"),
    }
    for case, (bad, says) in cases.items():
        snap = snap_with([entry(1, "CheckpointLoaderSimple", "ckpt_name", "sd_xl_base_1.0.safetensors"), bad],
                         [ckpt, dict(img, has_errors=False), sampler, listed])
        text = "\n".join(br.graph_problems(snap, workflow))
        assert says in text, f"{case}: not reported; got:\n{text}"
    # an error besides missing files, and a flagged node no accepted report explains
    text = "\n".join(br.graph_problems(snap_with([], [dict(ckpt, has_errors=False), dict(img, has_errors=False),
                                                     sampler, dict(listed, has_errors=False)], other=1), workflow))
    assert "counts 1 error(s) besides missing nodes and files" in text, text
    assert "node 3 (KSampler) is marked has_errors" in text, text


# ------------------------------------------------------------------------------------------ subgraph blueprints
def _blueprint_support(frontend) -> tuple[str, str | None]:
    """(ComfyUI version, None) where the server serves custom-node subgraph blueprints and the frontend adds them
    to its node library, else (version, why not)."""
    import requests
    stats = requests.get(frontend.url + "/system_stats", timeout=30)
    version = (stats.json().get("system") or {}).get("comfyui_version", "?") if stats.ok else "?"
    r = requests.get(frontend.url + "/global_subgraphs", timeout=30)
    if r.status_code != 200:
        return version, f"GET /global_subgraphs answers {r.status_code}"
    why = frontend.blueprint_support()
    return version, (f"frontend {frontend.frontend_version}: {why}" if why else None)


def _subgraph_problems(frontend, subgraph_id: str, definition: dict, definitions: dict, proxy_links,
                       label: str) -> list[str]:
    """The interior of one subgraph on the graph against its definition, and of the subgraphs nested in it."""
    snap = frontend.snapshot(subgraph_id)
    if snap is None:
        return [f"{label}: the graph holds no subgraph {subgraph_id}"]
    problems = [f"{label}: {p}" for p in br.graph_problems(snap, definition, proxy_links=proxy_links)]
    want_io = ([(i["name"], str(i["type"])) for i in definition.get("inputs") or []],
               [(o["name"], str(o["type"])) for o in definition.get("outputs") or []])
    got_io = ([(i["name"], i["type"]) for i in snap["io"]["inputs"]],
              [(o["name"], o["type"]) for o in snap["io"]["outputs"]])
    added_inputs = got_io[0][len(want_io[0]):]
    if got_io[0][:len(want_io[0])] != want_io[0] or len(added_inputs) > len(proxy_links) or got_io[1] != want_io[1]:
        problems.append(f"{label}: subgraph inputs/outputs {got_io}, the definition has {want_io}")
    inner = {n["id"]: n for n in definition.get("nodes") or []}
    for n in snap["nodes"]:
        file_type = (inner.get(n["id"]) or {}).get("type")
        if n.get("subgraph_id") and file_type in definitions:  # a nested subgraph node
            nested = definitions[file_type]
            problems += _subgraph_problems(frontend, n["subgraph_id"], nested, definitions,
                                           _proxy_links(inner[n["id"]]), f"{label} > {nested.get('name')!r}")
    return problems


def _proxy_links(blueprint_node: dict) -> set[tuple]:
    """(inner node id, widget name) of the widgets a subgraph node promotes from its interior's nodes."""
    return {(int(nid), w) for nid, w in (blueprint_node.get("properties") or {}).get("proxyWidgets") or []
            if str(nid).lstrip("-").isdigit() and int(nid) >= 0}


def _blueprint_problems(frontend, stem: str, blueprint: dict, def_name: str | None) -> list[str]:
    """Put the blueprint on an empty graph (from the node library by ``def_name``, else its JSON the same way) and
    list every way the result disagrees with the file."""
    definitions = {d["id"]: d for d in (blueprint.get("definitions") or {}).get("subgraphs") or []}
    if len(blueprint.get("nodes") or []) != 1 or blueprint["nodes"][0]["type"] not in definitions:
        return [f"{stem}: a blueprint is one subgraph node and its definition; the file has nodes "
                f"{[n.get('type') for n in blueprint.get('nodes') or []]} and definitions {sorted(definitions)}"]
    bp_node = blueprint["nodes"][0]
    definition = definitions[bp_node["type"]]
    frontend.load_graph_data(EMPTY_WORKFLOW, f"freecure_blueprint_{stem}")
    mark = frontend.mark()
    added = frontend.add_blueprint(def_name, None if def_name else blueprint)
    if added["error"]:
        return [f"{stem}: adding it to the graph raised {added['error'][:500]}"]
    problems: list[str] = []
    snap = frontend.snapshot()
    if [n["id"] for n in snap["nodes"]] != [added["node_id"]]:
        problems.append(f"{stem}: the graph holds {[(n['id'], n['type']) for n in snap['nodes']]} after adding it")
    node = next((n for n in snap["nodes"] if n["id"] == added["node_id"]), None)
    if node is None:
        return problems
    problems += [f"{stem}: {p}" for p in br.blueprint_node_problems(node, bp_node, definition)]
    if node["subgraph_id"]:
        problems += _subgraph_problems(frontend, node["subgraph_id"], definition, definitions, _proxy_links(bp_node),
                                       f"{stem} > {definition.get('name')!r}")
    # the frontend can turn it into a prompt, with every inner node of a backend type
    prompt = frontend.graph_to_prompt()
    if prompt["error"]:
        problems.append(f"{stem}: graphToPrompt raised {prompt['error'][:500]}")
    else:
        want = sorted(n["type"] for d in definitions.values() for n in d.get("nodes") or []
                      if n["type"] not in br.FRONTEND_ONLY_TYPES and n["type"] not in definitions
                      and n.get("mode", 0) == 0)
        got = sorted(str(v["class_type"]) for v in prompt["output"].values())
        if got != want:
            problems.append(f"{stem}: graphToPrompt gives node types {got}, the blueprint has {want}")
    for t in frontend.toasts_since(added["seq"]):
        if t.get("severity") in ("error", "warn", "alert") or t.get("action") == "addAlert":
            problems.append(f"{stem}: the frontend says ({t.get('severity')}): {t.get('text', '')[:400]}")
    for e in br.load_errors(frontend.events_since(mark), TEMPLATE_PREFIX):
        problems.append(f"{stem}: {e['kind']} error while adding it: {e['text'][:400]}")
    return problems


def _broken_blueprint(blueprint: dict) -> tuple[dict, dict]:
    """A copy of ``blueprint`` with one fault of each kind the blueprint check must report, and the sentences that
    report them."""
    bp = copy.deepcopy(blueprint)
    definition = next(d for d in bp["definitions"]["subgraphs"] if d["id"] == bp["nodes"][0]["type"])
    real = [n for n in definition["nodes"] if n["type"] not in br.FRONTEND_ONLY_TYPES]
    with_widgets = [n for n in real if n.get("widgets_values")]
    # 1. an inner node of a type nobody registers
    gone = real[0]
    gone["type"] = "FreeCureNoSuchNode"
    # 2. an inner widget value too many
    extra = next(n for n in with_widgets if n is not gone)
    extra["widgets_values"] = list(extra["widgets_values"]) + [7]
    # 3. a dangling inner link: from an output slot its origin node does not have
    linked = next(n for n in real if n is not gone and n is not extra)
    last = max(l["id"] for l in definition["links"]) + 1
    definition["links"].append({"id": last, "origin_id": linked["id"], "origin_slot": 9, "target_id": extra["id"],
                                "target_slot": 0, "type": "IMAGE"})
    expected = {
        "missing node type": "nodes of unregistered types in the graph: ['FreeCureNoSuchNode']",
        "extra widget value": f"node {extra['id']} ({extra['type']}) widget values changed on load",
        "dangling link": f"-> node {extra['id']} slot 0): {linked['type']} has no output slot 9",
        "JavaScript error": "error while adding it: Error calling extension 'freecure.selftest-blueprint-thrower'",
    }
    return bp, {"expected": expected, "thrower_type": extra["type"]}


@pytest.mark.e2e
def test_subgraph_blueprints_load_in_the_frontend(frontend):
    import json

    import requests
    version, unsupported = _blueprint_support(frontend)
    if unsupported:
        pytest.skip(f"ComfyUI {version} serves no subgraph blueprints ({unsupported})")
    files = sorted(SUBGRAPHS_DIR.glob("*.json"))
    assert files, (f"no subgraphs/*.json in {SUBGRAPHS_DIR}: the pack ships no subgraph blueprint, although "
                   f"ComfyUI {version} with frontend {frontend.frontend_version} serves them")

    # the server lists each file for the pack and serves it unchanged
    listing = requests.get(frontend.url + "/global_subgraphs", timeout=30).json()
    ours = {e["name"]: k for k, e in listing.items()
            if e.get("source") == "custom_node" and (e.get("info") or {}).get("node_pack") == NODE_PACK}
    assert set(ours) == {f.stem for f in files}, (
        f"GET /global_subgraphs lists {sorted(ours)} for {NODE_PACK}, subgraphs/ holds {[f.stem for f in files]}")
    problems: list[str] = []
    blueprints = {}
    for f in files:
        blueprint = json.loads(f.read_text())
        served = requests.get(f"{frontend.url}/global_subgraphs/{ours[f.stem]}", timeout=30).json()
        if json.loads(served.get("data") or "null") != blueprint:
            problems.append(f"{f.name}: GET /global_subgraphs/{ours[f.stem]} does not serve the file")
        blueprints[f.stem] = blueprint

    # the node library lists each one, and none failed to load
    names = {stem: BLUEPRINT_PREFIX + ours[stem] for stem in blueprints}
    frontend.wait_for_library_entries(names.values())
    library = frontend.blueprint_library_entries(BLUEPRINT_PREFIX)
    for e in frontend.events_since(0):  # the frontend logs "Failed to load subgraph blueprint" with the reason
        if "subgraph blueprint" in e["text"].lower() and any(k in e["text"] for k in [*ours.values(), *blueprints]):
            problems.append(f"the frontend failed to load a subgraph blueprint: {e['text'][:400]}")

    # each goes on an empty graph the way the node library puts it there
    for stem, blueprint in blueprints.items():
        entry = library.get(names[stem])
        if entry is None or entry["display_name"] != stem:
            problems.append(f"{stem}: the node library has {entry} for {names[stem]}")
            continue
        problems += _blueprint_problems(frontend, stem, blueprint, names[stem])
        frontend.screenshot_graph(_shot_dir() / f"blueprint_{stem}.png")
    assert not problems, (f"subgraph blueprints on ComfyUI {version}, frontend {frontend.frontend_version}:\n  "
                          + "\n  ".join(problems))

    # self-test: the same check on a broken copy of the first blueprint must report each fault
    stem = next(iter(blueprints))
    broken, plan = _broken_blueprint(blueprints[stem])
    frontend.page.evaluate("""(t) => { if (!window.__fcBpThrower) { window.__fcBpThrower = {on: null};
        app.registerExtension({name: 'freecure.selftest-blueprint-thrower', nodeCreated(node) {
          // nodeCreated runs in the constructor, before node.type is set: the class is node.comfyClass
          if (window.__fcBpThrower.on && node.comfyClass === window.__fcBpThrower.on) throw new Error('selftest'); }}); }
        window.__fcBpThrower.on = t; }""", plan["thrower_type"])
    try:
        text = "\n".join(_blueprint_problems(frontend, f"{stem}_broken_selftest", broken, None))
    finally:
        frontend.page.evaluate("() => { window.__fcBpThrower.on = null; }")
    unreported = {k: v for k, v in plan["expected"].items() if v not in text}
    assert not unreported, (f"the blueprint check missed {sorted(unreported)} on frontend "
                            f"{frontend.frontend_version}; it reported:\n{text}")


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
