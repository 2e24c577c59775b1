"""Drive the real ComfyUI frontend (the ``comfyui-frontend-package`` the server serves) in a headless Chromium.

The browser is the system's Chromium (Debian's ``chromium``), driven by Playwright for Python through
``executable_path``: Playwright's own browser download is never used (``playwright install`` is not needed).

``Frontend`` opens the page, waits until the app has registered the node types, and installs a few probes:

* ``app.loadGraphData`` is wrapped, so every load (a template card's click included) is recorded with the workflow
  name it was given, the error it raised, and the missing node types the app reported to its extensions
  (``afterConfigureGraph``: the same list its "missing nodes" dialog shows);
* the toast store's ``add``/``addAlert`` calls (the workflow validator reports schema errors and the links it had to
  patch or drop there) are recorded;
* console errors, uncaught page errors and failed HTTP responses are recorded with a sequence number, so a test can
  take the ones that happened while one workflow loaded.

``snapshot()`` returns the loaded graph as the frontend holds it (nodes, slots, widgets, links with the frontend's own
type-compatibility verdict ``LiteGraph.isValidConnection``, node definitions); ``graph_problems()`` compares it to the
workflow file and lists every disagreement as a sentence.
"""
from __future__ import annotations

import os
import re
import shutil

SKIP_ENV = "FREECURE_SKIP_BROWSER"
CHROMIUM_ENV = "FREECURE_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
INSTALL_HINT = (
    "the browser test needs a Chromium: on Debian/Ubuntu run `sudo apt-get install -y --no-install-recommends "
    "chromium` (scripts/bootstrap.sh does it when run as root), or point FREECURE_CHROMIUM at a chromium/chrome "
    "binary; set FREECURE_SKIP_BROWSER=1 to skip the browser test instead")

# A combo value that is not among the options is accepted only when it names a file: the test server has none of the
# user's model or input files (checkpoints, adapters, the reference photo), so their combos list other names.
FILE_VALUE = re.compile(r"\.[A-Za-z0-9]{2,12}$")
FRONTEND_ONLY_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})

# Settings of the throwaway test server's user (POST /api/settings before the page loads): no first-run template
# dialog, no minimap or canvas info over the graph, full-detail node rendering at any zoom (for the screenshots), no
# workflows restored on a reload.
TEST_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Workflow.Persist": False,
}

_PROBES_JS = r"""
() => {
  if (window.__fc) return;
  const fc = window.__fc = {seq: 0, loads: [], toasts: [], lastMissing: null};
  app.registerExtension({
    name: 'freecure.browser-test-probe',
    afterConfigureGraph(missing) {
      fc.lastMissing = (missing || []).map(m => typeof m === 'string' ? m : m.type);
    },
  });
  const orig = app.loadGraphData.bind(app);
  app.loadGraphData = async function (graphData, clean, restoreView, workflow, options) {
    fc.lastMissing = null;
    const name = typeof workflow === 'string' ? workflow : (workflow && workflow.filename) || null;
    const rec = {seq: ++fc.seq, name, error: null, missing: null, done: false};
    fc.loads.push(rec);
    try {
      return await orig(graphData, clean, restoreView, workflow, options);
    } catch (e) {
      rec.error = String(e && e.stack || e);
      throw e;
    } finally {
      rec.missing = fc.lastMissing;
      rec.done = true;
    }
  };
  const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
  fc.pinia = pinia;
  pinia._s.get('toast').$onAction(({name, args}) => {
    if (name !== 'add' && name !== 'addAlert') return;
    const m = args[0];
    fc.toasts.push({seq: fc.seq, action: name,
                    severity: typeof m === 'string' ? 'alert' : (m && m.severity) || null,
                    text: typeof m === 'string' ? m : [m && m.summary, m && m.detail].filter(Boolean).join(': ')});
  });
}
"""

_SNAPSHOT_JS = r"""
() => {
  const g = app.graph, LG = window.LiteGraph;
  const specType = s => Array.isArray(s) ? (Array.isArray(s[0]) ? 'COMBO' : String(s[0])) : null;
  const nodes = g.nodes.map(n => {
    const nd = LG.registered_node_types[n.type] && LG.registered_node_types[n.type].nodeData;
    let def = null;
    if (nd) {
      const inputs = {};
      for (const grp of ['required', 'optional'])
        for (const [k, s] of Object.entries((nd.input && nd.input[grp]) || {})) inputs[k] = specType(s);
      def = {inputs, outputs: (nd.output || []).map(t => Array.isArray(t) ? 'COMBO' : String(t))};
    }
    const ser = n.serialize();
    return {
      id: n.id, type: n.type, title: n.title, has_errors: !!n.has_errors,
      registered: n.type in LG.registered_node_types, def,
      inputs: (n.inputs || []).map(i => ({name: i.name, type: String(i.type), link: i.link == null ? null : i.link})),
      outputs: (n.outputs || []).map(o => ({name: o.name, type: String(o.type), links: o.links || []})),
      widgets: (n.widgets || []).filter(w => w.serialize !== false && !(w.options && w.options.serialize === false))
        .map(w => ({name: w.name, type: w.type, value: w.value,
                    values: w.options && Array.isArray(w.options.values) ? w.options.values : null,
                    min: w.options && w.options.min != null ? w.options.min : null,
                    max: w.options && w.options.max != null ? w.options.max : null})),
      widgets_values: ser.widgets_values === undefined ? null : ser.widgets_values,
      bounding: Array.from(n.boundingRect),
    };
  });
  const byId = new Map(g.nodes.map(n => [n.id, n]));
  const defOut = (node, slot) => {
    const nd = LG.registered_node_types[node.type] && LG.registered_node_types[node.type].nodeData;
    const t = nd && nd.output && nd.output[slot];
    return t === undefined || t === null ? null : (Array.isArray(t) ? 'COMBO' : String(t));
  };
  const defIn = (node, name) => {
    const nd = LG.registered_node_types[node.type] && LG.registered_node_types[node.type].nodeData;
    if (!nd || !nd.input) return null;
    const s = (nd.input.required && nd.input.required[name]) || (nd.input.optional && nd.input.optional[name]);
    return s ? (Array.isArray(s[0]) ? 'COMBO' : String(s[0])) : null;
  };
  const all = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
  const links = all.filter(Boolean).map(l => {
    const o = byId.get(l.origin_id), t = byId.get(l.target_id);
    const out = o && o.outputs && o.outputs[l.origin_slot], inp = t && t.inputs && t.inputs[l.target_slot];
    const dOut = o ? defOut(o, l.origin_slot) : null, dIn = t && inp ? defIn(t, inp.name) : null;
    return {
      id: l.id, origin_id: l.origin_id, origin_slot: l.origin_slot, target_id: l.target_id,
      target_slot: l.target_slot, type: String(l.type),
      origin_slot_type: out ? String(out.type) : null, target_slot_type: inp ? String(inp.type) : null,
      target_name: inp ? inp.name : null,
      slots_compatible: !!(out && inp && LG.isValidConnection(out.type, inp.type)),
      link_type_compatible: !!(out && inp && LG.isValidConnection(l.type, inp.type) && LG.isValidConnection(out.type, l.type)),
      def_origin_type: dOut, def_target_type: dIn,
      def_compatible: dOut === null || dIn === null ? null : LG.isValidConnection(dOut, dIn),
    };
  });
  const dialogs = window.__fc.pinia._s.get('dialog').dialogStack.map(d => d.key);
  return {nodes, links, dialogs};
}
"""

_FIT_JS = r"""
([left, top, right, bottom]) => {
  const c = app.canvas, g = app.graph;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const add = r => { x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]);
                     x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]); };
  for (const n of g.nodes) add(n.boundingRect);
  for (const gr of (g.groups || g._groups || [])) add(gr.boundingRect || gr._bounding);
  const W = c.canvas.clientWidth - left - right, H = c.canvas.clientHeight - top - bottom;
  const s = Math.min(W / (x1 - x0), H / (y1 - y0), 1.0);
  c.ds.scale = s;
  c.ds.offset = [left / s - x0, top / s - y0];
  c.setDirty(true, true);
  c.draw(true, true);
  return {x: left, y: top, width: Math.ceil((x1 - x0) * s), height: Math.ceil((y1 - y0) * s)};
}
"""


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "") not in ("", "0")


def find_chromium() -> str | None:
    """The Chromium binary to drive: $FREECURE_CHROMIUM, else the first of CHROMIUM_NAMES on PATH."""
    env = os.environ.get(CHROMIUM_ENV)
    if env:
        return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Frontend:
    """One headless Chromium page on a ComfyUI server's frontend."""

    def __init__(self, url: str, chromium: str, ready_node_type: str, viewport=(1600, 900)):
        self.url = url.rstrip("/")
        self.chromium = chromium
        self.ready_node_type = ready_node_type
        self.viewport = {"width": viewport[0], "height": viewport[1]}
        self.events: list[dict] = []  # console errors, page errors, HTTP errors: {seq, kind, text, url}
        self._pw = self._browser = self.page = None
        self.startup_seconds = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout_ms: int = 90_000) -> "Frontend":
        import time

        import requests
        from playwright.sync_api import sync_playwright

        t0 = time.monotonic()
        r = requests.post(self.url + "/api/settings", json=TEST_SETTINGS, timeout=30)
        r.raise_for_status()
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=self.chromium, headless=True,
                                                 args=["--disable-dev-shm-usage"])
        self.browser_version = self._browser.version
        ctx = self._browser.new_context(viewport=self.viewport)
        ctx.add_init_script("localStorage.setItem('vueNodesBannerDismissed', 'true')")
        # Offline and deterministic: only the test server is reachable (the app asks api.comfy.org for news and
        # node-pack info; those requests fail at once instead of waiting for a network).
        ctx.route(lambda u: not u.startswith(self.url + "/"), lambda route: route.abort())
        page = self.page = ctx.new_page()
        page.set_default_timeout(30_000)
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self._event("pageerror", str(e)))
        page.on("response", self._on_response)
        page.goto(self.url + "/", timeout=timeout_ms)
        self._wait_ready(timeout_ms)
        self.startup_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, timeout_ms: int) -> None:
        self.page.wait_for_function(
            "([t]) => window.app && window.app.graph && window.LiteGraph && t in LiteGraph.registered_node_types"
            " && window.app.extensionManager && window.app.extensionManager.workflow",
            arg=[self.ready_node_type], timeout=timeout_ms)
        self.page.evaluate(_PROBES_JS)

    def reload(self, timeout_ms: int = 90_000) -> None:
        """Reload the page (open workflows are not restored: Comfy.Workflow.Persist is off)."""
        self.page.reload(timeout=timeout_ms)
        self._wait_ready(timeout_ms)

    def close(self) -> None:
        for closer in (self._browser and self._browser.close, self._pw and self._pw.stop):
            if closer:
                try:
                    closer()
                except Exception:  # noqa: BLE001 - best effort at teardown
                    pass

    # ------------------------------------------------------------------------------------------ events
    def _seq(self) -> int:
        try:
            return int(self.page.evaluate("window.__fc ? window.__fc.seq : 0"))
        except Exception:  # noqa: BLE001 - the page may be busy navigating
            return -1

    def _event(self, kind: str, text: str, url: str = "") -> None:
        self.events.append({"n": len(self.events), "kind": kind, "text": text, "url": url})

    def _on_console(self, msg) -> None:
        if msg.type == "error":
            self._event("console", msg.text, (msg.location or {}).get("url", ""))

    def _on_response(self, response) -> None:
        if response.status >= 400:
            self._event("http", f"HTTP {response.status}", response.url)

    def mark(self) -> int:
        """A position in the event log; events_since(mark) are the ones after it."""
        return len(self.events)

    def events_since(self, mark: int) -> list[dict]:
        return self.events[mark:]

    # ------------------------------------------------------------------------------------------ loading
    def _load_count(self) -> int:
        return int(self.page.evaluate("window.__fc.seq"))

    def _wait_loaded(self, after_seq: int, name: str, timeout_ms: int = 60_000) -> dict:
        self.page.wait_for_function(
            "([k, name]) => window.__fc.loads.some(l => l.seq > k && l.name === name && l.done)",
            arg=[after_seq, name], timeout=timeout_ms)
        self.page.wait_for_timeout(200)  # let the canvas draw once
        return self.page.evaluate(
            "([k, name]) => { const l = window.__fc.loads.filter(l => l.seq > k && l.name === name).pop();"
            " return {seq: l.seq, name: l.name, error: l.error, missing: l.missing}; }", [after_seq, name])

    def load_graph_data(self, workflow: dict, name: str) -> dict:
        """``app.loadGraphData(workflow, true, true, name)``; returns the load record."""
        k = self._load_count()
        self.page.evaluate("async ([wf, name]) => { try { await app.loadGraphData(wf, true, true, name); }"
                           " catch (e) { /* recorded by the probe */ } }", [workflow, name])
        return self._wait_loaded(k, name)

    def open_template_browser(self, module: str) -> None:
        """Open the Templates dialog (what the Templates button does) and select the pack's category."""
        self.page.evaluate("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
        self.page.get_by_text(module, exact=True).first.click()

    def template_cards(self, names, timeout_ms: int = 10_000) -> dict:
        """{name: card info} for the open Templates dialog: whether the card is there, its title and its thumbnail
        <img> (src, loaded, natural size).  Scrolls each card into view (thumbnails load lazily) and waits until its
        image is loaded (or timeout_ms passed)."""
        info = r"""
        (n) => {
          const card = document.querySelector(`[data-testid="template-workflow-${n}"]`);
          const img = card && card.querySelector('img');
          return card ? {card: true, title: card.querySelector('h3') ? card.querySelector('h3').innerText : null,
                         src: img ? img.src : null, complete: !!(img && img.complete),
                         width: img ? img.naturalWidth : 0, height: img ? img.naturalHeight : 0} : {card: false};
        }
        """
        loaded = ("(n) => { const i = document.querySelector(`[data-testid=\"template-workflow-${n}\"] img`);"
                  " return !!(i && i.complete && i.naturalWidth > 0 && !i.src.includes('default-template')); }")
        cards = {}
        for n in names:
            card = self.page.locator(f'[data-testid="template-workflow-{n}"]')
            try:
                card.scroll_into_view_if_needed(timeout=timeout_ms)
                self.page.wait_for_function(loaded, arg=n, timeout=timeout_ms)
            except Exception:  # noqa: BLE001 - report what is there instead
                pass
            cards[n] = self.page.evaluate(info, n)
        self.page.locator(f'[data-testid="template-workflow-{names[0]}"]').scroll_into_view_if_needed()
        return cards

    def load_from_template_browser(self, module: str, name: str) -> dict:
        """Open the Templates dialog, pick the pack's category and click the workflow's card (what a user does)."""
        k = self._load_count()
        self.open_template_browser(module)
        self.page.locator(f'[data-testid="template-workflow-{name}"]').click()
        return self._wait_loaded(k, name)

    def close_dialogs(self) -> None:
        self.page.evaluate("() => { const d = window.__fc.pinia._s.get('dialog');"
                           " while (d.dialogStack.length) d.closeDialog(); }")

    # ------------------------------------------------------------------------------------------ reading
    def snapshot(self) -> dict:
        return self.page.evaluate(_SNAPSHOT_JS)

    def toasts_since(self, seq: int) -> list[dict]:
        return self.page.evaluate("(k) => window.__fc.toasts.filter(t => t.seq >= k)", seq)

    def screenshot_graph(self, path, margin: int = 16, top: int = 52, bottom: int = 64, viewport=None) -> None:
        """The whole graph, fitted to the page, without the app's panels (focus mode), as a PNG.  The top and bottom
        margins keep the focus-mode button and the canvas's zoom controls out of the picture.  viewport: (w, h) of
        the page for this picture only (a larger page draws the graph larger)."""
        self.close_dialogs()
        if viewport:
            self.page.set_viewport_size({"width": viewport[0], "height": viewport[1]})
        self.page.evaluate("app.extensionManager.focusMode = true")
        try:
            self.page.wait_for_timeout(150)
            clip = self.page.evaluate(_FIT_JS, [margin, top, margin, bottom])
            self.page.wait_for_timeout(150)
            pad = margin  # node badges stick out above the title bars
            clip = {"x": clip["x"] - pad, "y": clip["y"] - pad,
                    "width": clip["width"] + 2 * pad, "height": clip["height"] + 2 * pad}
            self.page.screenshot(path=str(path), clip=clip)
        finally:
            self.page.evaluate("app.extensionManager.focusMode = false")
            if viewport:
                self.page.set_viewport_size(self.viewport)

    def screenshot(self, path) -> None:
        self.page.screenshot(path=str(path))


# ---------------------------------------------------------------------------------------------- checks
def _ui_links(workflow: dict) -> set[tuple]:
    return {tuple(l[:6]) for l in workflow.get("links", [])}


def _overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def graph_problems(snap: dict, workflow: dict, expected_missing=frozenset()) -> list[str]:
    """Every way the frontend's graph ``snap`` (``Frontend.snapshot()`` plus ``load``: the load record, ``toasts``,
    ``errors``) disagrees with the workflow file it was loaded from.  ``expected_missing``: the node types that may
    (and must) be reported missing (the peer packs' nodes)."""
    problems: list[str] = []
    load = snap.get("load") or {}
    if load.get("error"):
        problems.append(f"loadGraphData raised: {load['error'][:500]}")

    # ---- missing node types: what the app reported (its missing-nodes dialog) and what the graph holds
    reported = set(load.get("missing") or [])
    expected_missing = set(expected_missing)
    if reported != expected_missing:
        extra, absent = sorted(reported - expected_missing), sorted(expected_missing - reported)
        if extra:
            problems.append(f"the frontend reports missing node types {extra}")
        if absent:
            problems.append(f"node types {absent} should be missing (peer pack not installed) but are not reported")
    unregistered = {n["type"] for n in snap["nodes"] if not n["registered"]}
    if unregistered - expected_missing:
        problems.append(f"nodes of unregistered types in the graph: {sorted(unregistered - expected_missing)}")
    for n in snap["nodes"]:
        if n["has_errors"] and n["type"] not in expected_missing:
            problems.append(f"node {n['id']} ({n['type']}) is marked has_errors")
    dialogs = list(snap.get("dialogs") or [])
    if expected_missing:
        if "global-missing-nodes" not in dialogs:
            problems.append("no missing-nodes dialog although peer node types are missing")
        dialogs = [d for d in dialogs if d != "global-missing-nodes"]
    if dialogs:
        problems.append(f"dialogs open after loading: {dialogs}")

    # ---- validation messages (schema errors, links the validator patched or dropped)
    for t in snap.get("toasts") or []:
        if t.get("severity") in ("error", "warn", "alert") or t.get("action") == "addAlert":
            problems.append(f"the frontend says ({t.get('severity')}): {t.get('text', '')[:400]}")

    # ---- nodes: the same ids and types as the file
    ui_nodes = {n["id"]: n for n in workflow["nodes"]}
    got_nodes = {n["id"]: n for n in snap["nodes"]}
    if {i: n["type"] for i, n in ui_nodes.items()} != {i: n["type"] for i, n in got_nodes.items()}:
        problems.append(f"nodes differ from the file: file {sorted((i, n['type']) for i, n in ui_nodes.items())}, "
                        f"frontend {sorted((i, n['type']) for i, n in got_nodes.items())}")

    # ---- links: the frontend holds exactly the file's links, both ends agree, types are compatible
    got_links = {(l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"])
                 for l in snap["links"]}
    want_links = _ui_links(workflow)
    if got_links != want_links:
        problems.append(f"links differ from the file: only in the file {sorted(want_links - got_links)}, "
                        f"only in the frontend {sorted(got_links - want_links)}")
    link_ids = {l["id"] for l in snap["links"]}
    for l in snap["links"]:
        o, t = got_nodes.get(l["origin_id"]), got_nodes.get(l["target_id"])
        where = f"link {l['id']} ({l['type']}: node {l['origin_id']} slot {l['origin_slot']} -> " \
                f"node {l['target_id']} slot {l['target_slot']})"
        if o is None or t is None:
            problems.append(f"{where}: {'origin' if o is None else 'target'} node does not exist")
            continue
        if l["origin_slot"] >= len(o["outputs"]):
            problems.append(f"{where}: {o['type']} has no output slot {l['origin_slot']}")
            continue
        if l["target_slot"] >= len(t["inputs"]):
            problems.append(f"{where}: {t['type']} has no input slot {l['target_slot']}")
            continue
        out, inp = o["outputs"][l["origin_slot"]], t["inputs"][l["target_slot"]]
        if l["id"] not in out["links"]:
            problems.append(f"{where}: {o['type']}.{out['name']} does not list the link")
        if inp["link"] != l["id"]:
            problems.append(f"{where}: {t['type']}.{inp['name']} holds link {inp['link']}")
        if not l["slots_compatible"]:
            problems.append(f"{where}: {o['type']}.{out['name']} ({out['type']}) cannot connect to "
                            f"{t['type']}.{inp['name']} ({inp['type']})")
        if not l["link_type_compatible"]:
            problems.append(f"{where}: link type {l['type']} does not fit {out['type']} -> {inp['type']}")
        if t["def"] is not None and t["type"] not in FRONTEND_ONLY_TYPES and l["def_target_type"] is None:
            problems.append(f"{where}: {t['type']} defines no input named {inp['name']!r}")
        if o["def"] is not None and o["type"] not in FRONTEND_ONLY_TYPES and l["def_origin_type"] is None:
            problems.append(f"{where}: {o['type']} defines no output slot {l['origin_slot']}")
        if l["def_compatible"] is False:
            problems.append(f"{where}: by the node definitions {o['type']} gives {l['def_origin_type']} but "
                            f"{t['type']}.{inp['name']} takes {l['def_target_type']}")
    for n in snap["nodes"]:
        for inp in n["inputs"]:
            if inp["link"] is not None and inp["link"] not in link_ids:
                problems.append(f"node {n['id']} ({n['type']}) input {inp['name']} holds unknown link {inp['link']}")

    # ---- widgets: the values survived loading and fit the widgets (registered, backend-defined nodes)
    for n in snap["nodes"]:
        ui = ui_nodes.get(n["id"])
        if ui is None or not n["registered"] or n["type"] in expected_missing:
            continue
        want = ui.get("widgets_values")
        got = n["widgets_values"]
        if (want or None) != (got or None):
            problems.append(f"node {n['id']} ({n['type']}) widget values changed on load: file {want}, "
                            f"frontend {got}")
        if n["def"] is None:
            continue
        for w in n["widgets"]:
            v, label = w["value"], f"node {n['id']} ({n['type']}) widget {w['name']!r}"
            if w["type"] == "combo" and w["values"] is not None and v not in w["values"]:
                if not (isinstance(v, str) and FILE_VALUE.search(v)):
                    problems.append(f"{label}: {v!r} is not one of its options")
            elif w["type"] == "number":
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    problems.append(f"{label}: {v!r} is not a number")
                elif (w["min"] is not None and v < w["min"]) or (w["max"] is not None and v > w["max"]):
                    problems.append(f"{label}: {v} outside [{w['min']}, {w['max']}]")
            elif w["type"] == "toggle" and not isinstance(v, bool):
                problems.append(f"{label}: {v!r} is not a boolean")

    # ---- layout: nodes (title bars included, sizes as the frontend computed them) do not overlap
    boxes = [(n["id"], n["type"], n["bounding"]) for n in snap["nodes"]]
    for i, (ia, ta, a) in enumerate(boxes):
        for ib, tb, b in boxes[i + 1:]:
            if _overlaps(a, b):
                problems.append(f"node {ia} ({ta}) overlaps node {ib} ({tb}) as drawn")

    # ---- console / page errors while it loaded
    for e in snap.get("errors") or []:
        problems.append(f"{e['kind']} error while loading: {e['text'][:400]} {e.get('url', '')}".rstrip())
    return problems


def load_errors(events: list[dict], template_prefix: str) -> list[dict]:
    """The events that count as errors of a workflow load: uncaught page errors, console errors other than the
    browser's "Failed to load resource" lines, and failed requests for the pack's workflow files (``.json`` under
    ``template_prefix``).  Not counted: the thumbnails (the template-browser test checks them), resources of the
    user's that the test server lacks (the reference photo's /api/view preview) and the blocked internet requests
    (those surface as "Failed to load resource" only)."""
    out = []
    for e in events:
        if e["kind"] == "pageerror":
            out.append(e)
        elif e["kind"] == "console" and not e["text"].startswith("Failed to load resource"):
            out.append(e)
        elif e["kind"] == "http" and template_prefix in e["url"] and e["url"].split("?")[0].endswith(".json"):
            out.append(e)
    return out
