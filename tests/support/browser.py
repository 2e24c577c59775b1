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
type-compatibility verdict ``LiteGraph.isValidConnection``, node definitions) with node ids as the frontend saves them,
and what the frontend reports to the user after a load; ``graph_problems()`` compares it to the workflow file and lists
every disagreement as a sentence.

Frontend versions (read at run time from the page, by feature, not by version number):

* graph ids: 1.49 holds node ids as strings in memory (``"2"``) and saves them as numbers; ids are read from
  ``node.serialize()``, the form a saved workflow has, on every frontend;
* how a load reports problems: 1.32 opens the ``global-missing-nodes`` dialog for missing node types; 1.49 opens no
  dialog but an error overlay ("N errors found") whose errors panel lists missing node packs, missing models and
  missing media (pinia stores ``missingNodesError``, ``missingModel``, ``missingMedia``, counted by
  ``executionError.totalErrorCount``) and flags the nodes (``has_errors``).  ``snapshot()['report']`` holds
  what the page shows (``kind``: ``dialog`` or ``errors_panel``);
* a missing model or input file that 1.49 reports (the test server has none of the user's files) is accepted only for
  a combo input whose value is a file name that is not among the server's options; any other report is a problem;
* the workflow validator (``Comfy.Validation.Workflows``) is on by default in 1.32 and off in 1.49: the test user's
  settings turn it on, so both validate and report the links they patch or drop;
* subgraph blueprints (``subgraphs/*.json`` of a pack, ``GET /global_subgraphs``): both add them to the node library
  as ``SubgraphBlueprint.<id>``; ``add_blueprint()`` puts one on the graph the way the node library does.
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
# workflows restored on a reload, and the workflow validator on (1.32's default; 1.49 ships it off, and a user who
# turns it on must not see it patch our files).
TEST_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "LiteGraph.Canvas.MinFontSizeForLOD": 0,
    "Comfy.Workflow.Persist": False,
    "Comfy.Validation.Workflows": True,
}
MISSING_NODES_DIALOG = "global-missing-nodes"  # 1.32's dialog key
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20  # a subgraph's input and output nodes as links name them

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
(sgId) => {
  const root = app.graph, LG = window.LiteGraph;
  const g = sgId ? root.subgraphs && root.subgraphs.get(sgId) : root;
  if (!g) return null;
  const specType = s => Array.isArray(s) ? (Array.isArray(s[0]) ? 'COMBO' : String(s[0])) : null;
  const sers = new Map(g.nodes.map(n => [n.id, n.serialize()]));
  // ids as the frontend saves them (1.49 holds "2" in memory and saves 2); a subgraph's io nodes (-10/-20) as numbers
  const idOf = x => sers.has(x) ? sers.get(x).id : (typeof x === 'string' && /^-?\d+$/.test(x) ? Number(x) : x);
  const nodes = g.nodes.map(n => {
    const nd = LG.registered_node_types[n.type] && LG.registered_node_types[n.type].nodeData;
    let def = null;
    if (nd) {
      const inputs = {};
      for (const grp of ['required', 'optional'])
        for (const [k, s] of Object.entries((nd.input && nd.input[grp]) || {})) inputs[k] = specType(s);
      def = {inputs, outputs: (nd.output || []).map(t => Array.isArray(t) ? 'COMBO' : String(t))};
    }
    const ser = sers.get(n.id);
    const sub = typeof n.isSubgraphNode === 'function' && n.isSubgraphNode() && n.subgraph ? n.subgraph : null;
    return {
      id: ser.id, type: n.type, title: n.title, has_errors: !!n.has_errors,
      registered: n.type in LG.registered_node_types, def, subgraph_id: sub ? sub.id : null,
      inputs: (n.inputs || []).map(i => ({name: i.name, type: String(i.type), link: i.link == null ? null : i.link,
                                          widget: i.widget && i.widget.name ? i.widget.name : null})),
      outputs: (n.outputs || []).map(o => ({name: o.name, type: String(o.type), links: o.links || []})),
      widgets: (n.widgets || []).filter(w => w.serialize !== false && !(w.options && w.options.serialize === false))
        .map(w => ({name: w.name, type: w.type, value: w.value,
                    values: w.options && Array.isArray(w.options.values) ? w.options.values : null,
                    min: w.options && w.options.min != null ? w.options.min : null,
                    max: w.options && w.options.max != null ? w.options.max : null})),
      widgets_values: ser.widgets_values === undefined ? null : ser.widgets_values,
      properties: ser.properties || {},
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
  // a subgraph's own input/output slots (the ends of its io links)
  const io = sgId ? {inputs: (g.inputs || []).map(s => ({name: s.name, type: String(s.type)})),
                     outputs: (g.outputs || []).map(s => ({name: s.name, type: String(s.type)}))} : null;
  const all = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
  const links = all.filter(Boolean).map(l => {
    const o = byId.get(l.origin_id), t = byId.get(l.target_id);
    const ioOut = !o && io && io.inputs[l.origin_slot], ioIn = !t && io && io.outputs[l.target_slot];
    const out = o ? o.outputs && o.outputs[l.origin_slot] : ioOut;
    const inp = t ? t.inputs && t.inputs[l.target_slot] : ioIn;
    const dOut = o ? defOut(o, l.origin_slot) : null, dIn = t && inp ? defIn(t, inp.name) : null;
    return {
      id: l.id, origin_id: idOf(l.origin_id), origin_slot: l.origin_slot, target_id: idOf(l.target_id),
      target_slot: l.target_slot, type: String(l.type),
      origin_slot_type: out ? String(out.type) : null, target_slot_type: inp ? String(inp.type) : null,
      target_name: inp ? inp.name : null, target_widget: t && inp && inp.widget ? inp.widget.name || null : null,
      slots_compatible: !!(out && inp && LG.isValidConnection(out.type, inp.type)),
      link_type_compatible: !!(out && inp && LG.isValidConnection(l.type, inp.type) && LG.isValidConnection(out.type, l.type)),
      def_origin_type: dOut, def_target_type: dIn,
      def_compatible: dOut === null || dIn === null ? null : LG.isValidConnection(dOut, dIn),
    };
  });
  if (sgId) return {nodes, links, io};

  // what the page reports to the user after a load
  const pinia = window.__fc.pinia, store = k => pinia._s.get(k);
  const dialogs = store('dialog').dialogStack.map(d => d.key);
  const plain = v => v == null ? null : JSON.parse(JSON.stringify(v));
  let report;
  if (store('missingNodesError')) {       // 1.4x: error overlay + errors panel
    const ee = store('executionError'), mn = store('missingNodesError'), mm = store('missingModel'),
          md = store('missingMedia');
    const overlay = document.querySelector('[data-testid="error-overlay"]');
    const cand = c => ({node_id: String(c.nodeId), node_type: c.nodeType, widget: c.widgetName, name: c.name,
                        directory: c.directory || c.mediaType || null, missing: c.isMissing});
    const err = mn.missingNodesError;
    report = {
      kind: 'errors_panel', dialogs,
      missing_nodes: err ? (err.nodeTypes || []).map(t => typeof t === 'string' ? {type: t, node_id: null}
                            : {type: t.type, node_id: t.nodeId == null ? null : String(t.nodeId)}) : [],
      missing_nodes_title: err ? err.message || null : null,
      missing_models: (mm.missingModelCandidates || []).filter(c => c.isMissing !== false).map(cand),
      missing_media: md ? (md.missingMediaCandidates || []).filter(c => c.isMissing !== false).map(cand) : [],
      counts: {total: ee.totalErrorCount, missing_nodes: mn.missingNodeCount, missing_models: mm.missingModelCount,
               missing_media: md ? md.missingMediaCount : 0},
      node_errors: plain(ee.lastNodeErrors), execution_error: plain(ee.lastExecutionError),
      prompt_error: plain(ee.lastPromptError),
      overlay: overlay && overlay.offsetParent !== null ? overlay.innerText.replace(/\s+/g, ' ').trim() : null,
    };
  } else {                                 // 1.32: dialogs
    report = {kind: 'dialog', dialogs};
  }
  return {nodes, links, dialogs, report};
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
        self.frontend_version = None  # window.__COMFYUI_FRONTEND_VERSION__, e.g. "1.32.9"

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
        self.frontend_version = self.page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ || null")

    @property
    def reports_in_errors_panel(self) -> bool:
        """True where a load reports missing nodes/models/media in the error overlay and errors panel (1.4x),
        False where it opens dialogs (1.32); feature-detected from the app's stores."""
        return bool(self.page.evaluate("!!window.__fc.pinia._s.get('missingNodesError')"))

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
        # 1.4x checks each model/media file the graph names against the server after configuring it: wait until
        # every candidate has its verdict
        self.page.wait_for_function(
            "() => { const s = window.__fc.pinia._s; const mm = s.get('missingModel'), md = s.get('missingMedia');"
            " const open = st => (st && (st.missingModelCandidates || st.missingMediaCandidates) || [])"
            "   .some(c => c.isMissing === undefined);"
            " return !(mm && (mm.isRefreshingMissingModels || open(mm))) && !(md && open(md)); }",
            timeout=timeout_ms)
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
        """Close every dialog and, on 1.4x, the error overlay and the right-side panel (the errors tab)."""
        self.page.evaluate("() => { const s = window.__fc.pinia._s, d = s.get('dialog');"
                           " while (d.dialogStack.length) d.closeDialog();"
                           " const ee = s.get('executionError');"
                           " if (ee && ee.dismissErrorOverlay) ee.dismissErrorOverlay();"
                           " const rp = s.get('rightSidePanel');"
                           " if (rp && rp.isOpen && rp.closePanel) rp.closePanel(); }")

    # ------------------------------------------------------------------------------------------ reading
    def snapshot(self, subgraph_id: str | None = None) -> dict:
        """The root graph (with what the page reports), or one subgraph definition's interior (with ``io``: its
        input and output slots)."""
        return self.page.evaluate(_SNAPSHOT_JS, subgraph_id)

    # ------------------------------------------------------------------------------------------ subgraph blueprints
    def blueprint_support(self) -> str | None:
        """None where this frontend turns the server's global subgraphs into node-library entries and can add them
        to a graph (the subgraph store's ``getBlueprint``), else why not."""
        return self.page.evaluate(
            "() => { const s = window.__fc.pinia._s.get('subgraph');"
            " if (!s) return 'the frontend has no subgraph store';"
            " if (typeof s.getBlueprint !== 'function') return 'the frontend subgraph store has no getBlueprint';"
            " return null; }")

    def blueprint_library_entries(self, prefix: str = "SubgraphBlueprint.") -> dict:
        """{node-def name: {display_name, category, python_module}} of the node library's subgraph blueprints."""
        return self.page.evaluate(
            "(p) => Object.fromEntries(window.__fc.pinia._s.get('nodeDef').visibleNodeDefs"
            "  .filter(d => d.name.startsWith(p))"
            "  .map(d => [d.name, {display_name: d.display_name, category: d.category || null,"
            "                      python_module: d.python_module || null}]))", prefix)

    def wait_for_library_entries(self, names, timeout_ms: int = 30_000) -> None:
        try:
            self.page.wait_for_function(
                "(names) => { const v = new Set(window.__fc.pinia._s.get('nodeDef').visibleNodeDefs.map(d => d.name));"
                " return names.every(n => v.has(n)); }", list(names), timeout=timeout_ms)
        except Exception:  # noqa: BLE001 - the caller reports what is missing
            pass

    def add_blueprint(self, def_name: str | None = None, data: dict | None = None, pos=(200, 200)) -> dict:
        """Put the node library's blueprint ``def_name`` on the current graph as the library does when it is
        clicked: the blueprint's nodes and subgraph definitions deserialised at ``pos`` (``data``: a blueprint's JSON
        to put there the same way instead).  Returns {node_id, subgraph_id, type, error, seq}."""
        return self.page.evaluate(
            """async ([name, data, pos]) => {
              const fc = window.__fc;
              const res = {seq: fc.seq, node_id: null, subgraph_id: null, type: null, error: null};
              try {
                const bp = structuredClone(name ? fc.pinia._s.get('subgraph').getBlueprint(name) : data);
                const items = {nodes: bp.nodes, subgraphs: bp.definitions && bp.definitions.subgraphs};
                const added = app.canvas._deserializeItems(items, {position: pos});
                const node = added && added.nodes.values().next().value;
                if (!node) throw new Error('the blueprint was added, but no node came out of it');
                res.node_id = node.serialize().id;
                res.type = node.type;
                res.subgraph_id = typeof node.isSubgraphNode === 'function' && node.isSubgraphNode() && node.subgraph
                  ? node.subgraph.id : null;
                app.canvas.setDirty(true, true);
              } catch (e) { res.error = String(e && e.stack || e); }
              await new Promise(r => setTimeout(r, 300));
              return res;
            }""", [def_name, data, list(pos)])

    def graph_to_prompt(self) -> dict:
        """``app.graphToPrompt()`` of the current graph: {output: {id: {class_type}}, error}."""
        return self.page.evaluate(
            "async () => { try { const p = await app.graphToPrompt();"
            " const out = Object.entries(p.output).map(([k, v]) => [k, {class_type: v.class_type}]);"
            " return {output: Object.fromEntries(out), error: null};"
            " } catch (e) { return {output: null, error: String(e && e.stack || e)}; } }")

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
def _link_tuple(l) -> tuple:
    """A link as (id, origin_id, origin_slot, target_id, target_slot, type), from a workflow's list form or a
    subgraph definition's object form."""
    if isinstance(l, dict):
        return (l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"])
    return tuple(l[:6])


def _ui_links(workflow: dict) -> set[tuple]:
    return {_link_tuple(l) for l in workflow.get("links", [])}


def _overlaps(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _missing_file_problem(entry: dict, nodes_by_id: dict, what: str) -> str | None:
    """Why a missing model/media report of the 1.4x errors panel is not acceptable, or None: it must name a combo
    widget of a node in the graph whose value is that file's name, a file name, and not among the server's options
    (the test server has none of the user's files; anything else the frontend calls missing is a real problem)."""
    label = (f"the frontend reports a missing {what} {entry.get('name')!r} for node {entry.get('node_id')} "
             f"({entry.get('node_type')}) input {entry.get('widget')!r}")
    node = nodes_by_id.get(str(entry.get("node_id")))
    if node is None:
        return f"{label}, a node not in the graph"
    w = next((w for w in node["widgets"] if w["name"] == entry.get("widget")), None)
    if w is None:
        return f"{label}, which has no such widget"
    v = w["value"]
    if w["type"] != "combo":
        return f"{label}, which is a {w['type']} widget, not a file list"
    if v != entry.get("name"):
        return f"{label}, but the widget holds {v!r}"
    if not (isinstance(v, str) and FILE_VALUE.search(v)):
        return f"{label}, which is not a file name"
    if w["values"] is not None and v in w["values"]:
        return f"{label}, which the server lists"
    return None


def _report_problems(snap: dict, expected_missing: set) -> tuple[list[str], set[str]]:
    """What the page shows after a load, against what it should show: the missing-nodes report (1.32's dialog or
    1.4x's error overlay and errors panel) exactly when peer node types are missing, nothing else open, and on 1.4x
    no error but missing nodes and missing user files.  Returns the problems and the ids of the nodes whose error
    flag the accepted reports explain (missing user files)."""
    problems: list[str] = []
    explained: set[str] = set()
    report = snap.get("report") or {"kind": "dialog", "dialogs": snap.get("dialogs") or []}
    dialogs = list(report.get("dialogs") or [])
    if report["kind"] == "dialog":  # 1.32
        shown = MISSING_NODES_DIALOG in dialogs
        surface = f"dialog {MISSING_NODES_DIALOG!r}"
        listed = None
        dialogs = [d for d in dialogs if d != MISSING_NODES_DIALOG]
    else:  # 1.4x: no dialog; the error overlay counts the errors, the errors panel lists the missing node packs
        listed = sorted({m["type"] for m in report.get("missing_nodes") or []})
        shown = bool(listed)
        surface = (f"error overlay {report.get('overlay')!r}, errors panel "
                   f"{report.get('missing_nodes_title') or 'Missing Node Packs'!r}: {listed}")
    if expected_missing:
        if not shown:
            problems.append(f"no missing-nodes report ({surface}) although peer node types are missing")
        elif listed is not None and set(listed) != set(expected_missing):
            problems.append(f"the missing-nodes report lists {listed}, expected {sorted(expected_missing)}")
        if report["kind"] == "errors_panel" and not report.get("overlay"):
            problems.append("no error overlay although peer node types are missing")
    elif shown:
        problems.append(f"the missing-nodes report is shown after loading ({surface})")
    if dialogs:
        problems.append(f"dialogs open after loading: {dialogs}")
    if report["kind"] != "errors_panel":
        return problems, explained

    nodes_by_id = {str(n["id"]): n for n in snap["nodes"]}
    for what, key in (("model", "missing_models"), ("file", "missing_media")):
        for entry in report.get(key) or []:
            why = _missing_file_problem(entry, nodes_by_id, what)
            if why:
                problems.append(why)
            else:
                explained.add(str(entry["node_id"]))
    for key, what in (("node_errors", "node errors"), ("execution_error", "an execution error"),
                      ("prompt_error", "a prompt error")):
        if report.get(key):
            problems.append(f"the frontend reports {what}: {str(report[key])[:400]}")
    c = report.get("counts") or {}
    other = (c.get("total") or 0) - sum(c.get(k) or 0 for k in ("missing_nodes", "missing_models", "missing_media"))
    if other:
        problems.append(f"the error overlay counts {other} error(s) besides missing nodes and files: "
                        f"{report.get('overlay')!r}")
    if report.get("overlay") and not (expected_missing or explained or other):
        problems.append(f"error overlay shown after loading: {report['overlay']!r}")
    return problems, explained


def _quarantine_problems(node: dict, label: str) -> list[str]:
    """1.49 moves promoted-widget entries (``properties.proxyWidgets``) it does not resolve to
    ``properties.proxyWidgetErrorQuarantine`` with the value the host held.  An entry is lost only when the node no
    longer shows that widget with that value: 1.49 quarantines the entries naming the subgraph's own widget inputs
    (``["-1", name]``) while it shows those widgets natively."""
    problems = []
    widgets = {w["name"]: w["value"] for w in node.get("widgets") or []}
    for q in (node.get("properties") or {}).get("proxyWidgetErrorQuarantine") or []:
        entry = q.get("originalEntry") or [None, None]
        name = entry[1] if len(entry) > 1 else None
        if name not in widgets or ("hostValue" in q and q["hostValue"] is not None and widgets[name] != q["hostValue"]):
            problems.append(f"{label}: the frontend could not resolve promoted widget {entry} "
                            f"({q.get('reason')}; the node shows {sorted(widgets)})")
    return problems


def _io_link_problems(l: dict, where: str, io: dict) -> list[str]:
    """A subgraph interior's link from its input node or to its output node: the slot exists and the types fit."""
    if l["origin_id"] == SUBGRAPH_INPUT_ID and l["origin_slot"] >= len(io["inputs"]):
        return [f"{where}: the subgraph has no input slot {l['origin_slot']}"]
    if l["target_id"] == SUBGRAPH_OUTPUT_ID and l["target_slot"] >= len(io["outputs"]):
        return [f"{where}: the subgraph has no output slot {l['target_slot']}"]
    if not l["slots_compatible"]:
        return [f"{where}: {l['origin_slot_type']} cannot connect to {l['target_slot_type']}"]
    return []


def graph_problems(snap: dict, workflow: dict, expected_missing=frozenset(), *, proxy_links=frozenset(),
                   layout: bool = True) -> list[str]:
    """Every way the frontend's graph ``snap`` (``Frontend.snapshot()`` plus ``load``: the load record, ``toasts``,
    ``errors``) disagrees with the workflow file it was loaded from.  ``expected_missing``: the node types that may
    (and must) be reported missing (the peer packs' nodes).

    For a subgraph's interior (``snap`` from ``snapshot(subgraph_id)``, ``workflow`` its definition): links to its
    input/output nodes are checked against its slots, and ``proxy_links`` ((node id, widget name) pairs the
    blueprint promotes) are the inner widget inputs a frontend may feed from a subgraph input it adds for them."""
    problems: list[str] = []
    load = snap.get("load") or {}
    io = snap.get("io")
    if load.get("error"):
        problems.append(f"loadGraphData raised: {load['error'][:500]}")

    # ---- missing node types: what the app reported (its missing-nodes report) and what the graph holds
    expected_missing = set(expected_missing)
    if io is None:
        reported = set(load.get("missing") or [])
        if reported != expected_missing:
            extra, absent = sorted(reported - expected_missing), sorted(expected_missing - reported)
            if extra:
                problems.append(f"the frontend reports missing node types {extra}")
            if absent:
                problems.append(f"node types {absent} should be missing (peer pack not installed) but are not reported")
    unregistered = {n["type"] for n in snap["nodes"] if not n["registered"] and not n.get("subgraph_id")}
    if unregistered - expected_missing:
        problems.append(f"nodes of unregistered types in the graph: {sorted(unregistered - expected_missing)}")
    if io is None:
        report_problems, explained = _report_problems(snap, expected_missing)
        problems += report_problems
    else:
        explained = set()
    for n in snap["nodes"]:
        if n["has_errors"] and n["type"] not in expected_missing and str(n["id"]) not in explained:
            problems.append(f"node {n['id']} ({n['type']}) is marked has_errors")
        problems += _quarantine_problems(n, f"node {n['id']} ({n['type']})")

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
    added = {(l["id"], l["origin_id"], l["origin_slot"], l["target_id"], l["target_slot"], l["type"])
             for l in snap["links"] if io is not None and l["origin_id"] == SUBGRAPH_INPUT_ID
             and (l["target_id"], l["target_widget"]) in proxy_links}
    if got_links - added != want_links - added:
        problems.append(f"links differ from the file: only in the file {sorted(want_links - got_links)}, "
                        f"only in the frontend {sorted(got_links - want_links - added)}")
    link_ids = {l["id"] for l in snap["links"]}
    io_ids = (SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID) if io is not None else ()
    for l in snap["links"]:
        o, t = got_nodes.get(l["origin_id"]), got_nodes.get(l["target_id"])
        where = f"link {l['id']} ({l['type']}: node {l['origin_id']} slot {l['origin_slot']} -> " \
                f"node {l['target_id']} slot {l['target_slot']})"
        if (o is None and l["origin_id"] in io_ids) or (t is None and l["target_id"] in io_ids):
            if (o is None and l["origin_id"] not in io_ids) or (t is None and l["target_id"] not in io_ids):
                problems.append(f"{where}: {'origin' if o is None else 'target'} node does not exist")
            else:
                problems += _io_link_problems(l, where, io)
            continue
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
    boxes = [(n["id"], n["type"], n["bounding"]) for n in snap["nodes"]] if layout else []
    for i, (ia, ta, a) in enumerate(boxes):
        for ib, tb, b in boxes[i + 1:]:
            if _overlaps(a, b):
                problems.append(f"node {ia} ({ta}) overlaps node {ib} ({tb}) as drawn")

    # ---- console / page errors while it loaded
    for e in snap.get("errors") or []:
        problems.append(f"{e['kind']} error while loading: {e['text'][:400]} {e.get('url', '')}".rstrip())
    return problems


def blueprint_node_problems(node: dict, blueprint_node: dict, definition: dict) -> list[str]:
    """The node a subgraph blueprint became on the graph (``snapshot()`` node) against the blueprint's node and its
    subgraph definition: a subgraph node, the definition's inputs and outputs (a frontend may add inputs for the
    widgets it promotes), every promoted widget (``properties.proxyWidgets``) resolvable, every widget value the
    file gives kept."""
    problems: list[str] = []
    label = f"blueprint node ({definition.get('name')!r})"
    if not node.get("subgraph_id"):
        problems.append(f"{label} is not a subgraph node (type {node['type']!r})")
    got_in = [(i["name"], i["type"]) for i in node["inputs"]]
    want_in = [(i["name"], str(i["type"])) for i in definition.get("inputs") or []]
    if got_in[:len(want_in)] != want_in:
        problems.append(f"{label} inputs {got_in}, the definition has {want_in}")
    got_out = [(o["name"], o["type"]) for o in node["outputs"]]
    want_out = [(o["name"], str(o["type"])) for o in definition.get("outputs") or []]
    if got_out != want_out:
        problems.append(f"{label} outputs {got_out}, the definition has {want_out}")
    inner = {str(n["id"]): n for n in definition.get("nodes") or []}
    sub_inputs = {i["name"] for i in definition.get("inputs") or []}
    shown = [w["name"] for w in node.get("widgets") or []]
    proxies = (blueprint_node.get("properties") or {}).get("proxyWidgets") or []
    for entry in proxies:
        nid, wname = str(entry[0]), entry[1]
        if nid == "-1":
            if wname not in sub_inputs:
                problems.append(f"{label} promotes widget {wname!r} of the subgraph, which has no such input")
            elif wname not in shown:
                problems.append(f"{label} does not show its widget {wname!r} (it shows {shown})")
        elif nid not in inner:
            problems.append(f"{label} promotes widget {wname!r} of node {nid}, which the subgraph lacks")
    if len(shown) < len(proxies):
        problems.append(f"{label} shows widgets {shown}, fewer than the {len(proxies)} it promotes")
    want = blueprint_node.get("widgets_values") or []
    got = node.get("widgets_values") or []
    lost = [(i, v, got[i] if i < len(got) else None) for i, v in enumerate(want)
            if v is not None and (i >= len(got) or got[i] != v)]
    if lost:
        problems.append(f"{label} widget values changed on load: file {want}, frontend {got}")
    if node.get("has_errors"):
        problems.append(f"{label} is marked has_errors")
    return problems + _quarantine_problems(node, label)


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
