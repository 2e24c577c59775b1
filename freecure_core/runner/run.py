"""The headless runner's engine: a workflow's prompts run in an embedded (in-process) ComfyUI, or spread over one or
more running servers, with progress lines, the output images copied out and ``record.json`` written.

``run_workflow(workflow, options, out)`` is the public entry: the command line (``freecure_core.runner.cli``, i.e.
``python -m freecure_core.run``) and the benchmark protocol (``freecure_core.eval.protocol``) both call it.
``RunOptions`` holds what the command line's flags say (sets, sweeps, repeat, servers, timeout, the embedded
ComfyUI's settings); ``Job`` is one prompt of the batch, for callers that make their own prompts.
``RunResult`` is what comes back: the exit status, the record and, for a setup failure, its message.
"""
from __future__ import annotations

import json
import os
import pathlib
import queue
import signal
import threading
import time
from dataclasses import dataclass, field

from .progress import Printer, Tracker
from .record import now_iso, pack_commit, prompt_entry, save_images, write_record
from .server_client import ComfyClient, ServerError, new_prompt_id
from .workflow_format import (WorkflowError, apply_sets, backend_types, expand_sweeps, is_api_format,
                              is_ui_format, ui_to_api)

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]  # the pack (this file: freecure_core/runner/run.py)
HISTORY_POLL_S = 2.0  # server mode: how often /history is checked besides the WebSocket messages
HISTORY_GRACE_S = 30.0  # how long a finished (or interrupted) prompt's history entry is waited for


def _where(error: dict) -> str:
    return f"#{error['node_id']} {error['node_type']}: " if error.get("node_id") is not None else ""


class SetupError(RuntimeError):
    """The embedded ComfyUI could not start; the message says what to fix."""


@dataclass
class RunOptions:
    """How a workflow is run: what ``python -m freecure_core.run``'s flags say (its ``--help`` has the details).

    ``sets``/``sweeps``/``repeat`` make the batch from an API prompt or a converted UI workflow (syntax in
    ``freecure_core.runner.workflow_format``); with ``servers`` the prompts are spread over those ComfyUI servers,
    without them they run in an embedded ComfyUI set up by ``comfyui`` (default ``default_comfyui()``),
    ``extra_model_paths``, ``custom_nodes``, ``input_dir``, ``cpu`` and ``verbose`` (ComfyUI's own log).
    ``timeout``: seconds per prompt before it is interrupted and recorded as timeout (0 = no limit).
    """
    sets: list[str] = field(default_factory=list)
    sweeps: list[str] = field(default_factory=list)
    repeat: int = 1
    servers: list[str] = field(default_factory=list)
    timeout: float = 0.0
    comfyui: str | None = None
    extra_model_paths: list[str] = field(default_factory=list)
    custom_nodes: list[str] = field(default_factory=list)
    input_dir: str | None = None
    cpu: bool = False
    verbose: bool = False


@dataclass
class RunResult:
    """What ``run_workflow`` did: ``code`` is the command line's exit status (0 every prompt succeeded, 1 some did
    not, 2 setup failed, 130 interrupted), ``record`` what ``out/record.json`` holds (``record["prompts"]``: one
    entry per prompt, see ``freecure_core.runner.record``), ``error`` the setup failure's message (code 2)."""
    code: int
    record: dict
    out: pathlib.Path
    error: str | None = None


@dataclass
class Job:
    """One prompt of the batch."""
    index: int
    total: int
    prompt: dict
    variation: dict

    def tag(self, where: str) -> str:
        return f"{self.index + 1}/{self.total} {where}"


class Run:
    """The batch's shared state: output folder, record, stop flag (Ctrl-C), printer."""

    def __init__(self, options: RunOptions, out_dir: pathlib.Path, printer: Printer, record: dict):
        self.options = options
        self.out = out_dir
        self.printer = printer
        self.record = record
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.interrupt = None  # embedded: stops the running prompt (server mode interrupts per prompt)

    def add(self, entry: dict) -> None:
        with self.lock:
            self.record["prompts"].append(entry)
            self.record["prompts"].sort(key=lambda e: e["index"])
            write_record(self.out / "record.json", self.record)
        files = f", {len(entry['files'])} file(s)" if entry["files"] else ""
        errs = "".join(f"\n    {_where(e)}{e['message']}" for e in entry["errors"])
        self.printer.line(f"[{entry['index'] + 1}/{self.record['prompt_count']} {entry['server']}] "
                          f"{entry['status']} in {entry['seconds']:.1f}s{files}{errs}")

    def skip(self, job: Job, where: str) -> None:
        t = now_iso()
        self.add(prompt_entry(job, where, None, t, t, 0.0, "skipped"))


# ------------------------------------------------------------------------------------------ workflow and batch
def default_comfyui() -> pathlib.Path:
    """--comfyui's default: $COMFYUI_PATH, this repo's .comfyui, or the ComfyUI this pack is installed in."""
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"])
    candidates = [PACK_DIR / ".comfyui"]
    if PACK_DIR.parent.name == "custom_nodes":
        candidates.append(PACK_DIR.parent.parent)
    for path in candidates:
        if (path / "main.py").is_file():
            return path
    return candidates[0]


def default_out() -> pathlib.Path:
    """--out's default: a new folder out/run/<timestamp> (relative to the working directory)."""
    base = pathlib.Path("out") / "run" / time.strftime("%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def load_workflow(path: str) -> tuple[dict, str]:
    """(workflow, "ui" | "api") from a JSON file; ``{"prompt": {...}}`` bodies count as API format."""
    try:
        obj = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as e:
        raise WorkflowError(f"FreeCure: cannot read the workflow {path} ({e}); pass a workflow JSON file") from e
    if isinstance(obj, dict) and is_api_format(obj.get("prompt")):
        obj = obj["prompt"]
    if is_api_format(obj):
        return obj, "api"
    if is_ui_format(obj):
        return obj, "ui"
    raise WorkflowError(f"FreeCure: {path} is neither a UI-format workflow (with 'nodes') nor an API-format prompt "
                        f"(node id -> class_type/inputs); export it from ComfyUI with Save or Export (API)")


def make_jobs(prompt: dict, options: RunOptions) -> list[Job]:
    """The batch of an API prompt: ``options``' sets applied, then its sweeps and repeats expanded."""
    pairs = expand_sweeps(apply_sets(prompt, options.sets), options.sweeps, options.repeat)
    return [Job(i, len(pairs), p, dict(v, sets=list(options.sets))) for i, (p, v) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------ embedded
def run_embedded(run: Run, workflow: dict, fmt: str, jobs: list[Job] | None) -> None:
    from ..comfy_bridge.embedded import EmbeddedComfy, EmbeddedError
    options = run.options
    root = pathlib.Path(options.comfyui) if options.comfyui else default_comfyui()
    run.printer.info(f"starting ComfyUI from {root} (embedded) ...")
    t0 = time.monotonic()
    comfy = EmbeddedComfy(root, custom_nodes=options.custom_nodes, extra_model_paths=options.extra_model_paths,
                          input_dir=options.input_dir, cpu=options.cpu, verbose=options.verbose)
    run.interrupt = comfy.interrupt
    try:
        try:
            comfy.start()
        except EmbeddedError as e:
            raise SetupError(str(e)) from e
        if comfy.failed_modules:
            run.printer.info(f"ComfyUI: built-in node modules not loaded (missing optional dependencies): "
                             f"{', '.join(comfy.failed_modules)}")
        run.printer.info(f"ComfyUI {comfy.version} ready in {time.monotonic() - t0:.1f}s "
                         f"({len(comfy.loaded_packs)} custom node pack(s))")
        run.record["servers"] = [{"server": "embedded", "comfyui_version": comfy.version, "root": str(root),
                                  "custom_nodes": comfy.loaded_packs}]
        if jobs is None:
            jobs = convert_and_expand(run, workflow, comfy.object_info(backend_types(workflow)))
        for job in jobs:
            if run.stop.is_set():
                run.skip(job, "embedded")
                continue
            tracker = Tracker(run.printer, job.tag("embedded"), job.prompt)
            prompt_id = new_prompt_id()
            started, t = now_iso(), time.monotonic()
            try:
                result = comfy.run(job.prompt, prompt_id, on_message=tracker.message, timeout=options.timeout or None)
            except EmbeddedError as e:
                raise SetupError(str(e)) from e
            tracker.finish_node()
            images, extra = {}, [_timeout_error(options.timeout)] if result["status"] == "timeout" else []
            try:
                images = save_images(result["outputs"], comfy.fetch, run.out, job.index)
            except OSError as e:
                extra.append({"node_id": None, "node_type": None, "message": f"saving outputs failed: {e}",
                              "type": "output"})
            status = "error" if result["status"] == "success" and extra else result["status"]
            run.add(prompt_entry(job, "embedded", comfy.version, started, now_iso(), time.monotonic() - t, status,
                                 prompt_id, result["outputs"], result["messages"], result["error"],
                                 result["node_errors"], images, extra))
    finally:
        comfy.close()


def _timeout_error(seconds: float) -> dict:
    return {"node_id": None, "node_type": None, "message": f"no result within --timeout {seconds:g}s; interrupted",
            "type": "timeout"}


def convert_and_expand(run: Run, workflow: dict, object_info: dict) -> list[Job]:
    prompt = ui_to_api(workflow, object_info)
    run.record["converted_prompt"] = prompt
    jobs = make_jobs(prompt, run.options)
    run.record["prompt_count"] = len(jobs)
    return jobs


# ------------------------------------------------------------------------------------------ servers
def _wait_for_prompt(run: Run, client: ComfyClient, ws, prompt_id: str, tracker: Tracker, deadline):
    """Follow one queued prompt until its history entry exists; returns (entry or None, ws, timed_out)."""
    timed_out = interrupted = False
    next_poll = time.monotonic() + HISTORY_POLL_S
    finished_at = None
    while True:
        now = time.monotonic()
        if (run.stop.is_set() or (deadline and now > deadline)) and not interrupted:
            timed_out = not run.stop.is_set()
            interrupted = True
            finished_at = finished_at or now
            client.post_json("/queue", {"delete": [prompt_id]})  # still queued behind other clients' prompts
            client.interrupt(prompt_id)
        if ws is not None and finished_at is None:
            try:
                msg = ws.recv_json(min(1.0, max(0.05, next_poll - now)))
            except (ConnectionError, OSError):
                run.printer.line(f"[{client.url}] WebSocket closed; following prompts by polling /history")
                ws = None
                continue
            if msg:
                data = msg.get("data") or {}
                if isinstance(data, dict) and data.get("prompt_id") == prompt_id:
                    tracker.message(msg.get("type"), data)
                    if msg.get("type") == "executing" and data.get("node") is None:
                        finished_at = time.monotonic()
                if time.monotonic() < next_poll and finished_at is None:
                    continue
        else:
            time.sleep(0.2)
        if time.monotonic() >= next_poll or finished_at is not None:
            next_poll = time.monotonic() + HISTORY_POLL_S
            entry = client.history(prompt_id)
            if entry is not None:
                tracker.finish_node()
                return entry, ws, timed_out
            if finished_at is not None and time.monotonic() - finished_at > HISTORY_GRACE_S:
                return None, ws, timed_out


def run_on_server(run: Run, client: ComfyClient, ws, client_id: str, version, job: Job):
    """Queue one prompt, follow it, download its images; returns (record entry, ws)."""
    tracker = Tracker(run.printer, job.tag(client.url), job.prompt)
    started, t = now_iso(), time.monotonic()
    prompt_id = new_prompt_id()
    try:
        code, body = client.queue(job.prompt, client_id, prompt_id)
        if code != 200 or "prompt_id" not in body:
            return prompt_entry(job, client.url, version, started, now_iso(), time.monotonic() - t, "rejected",
                                prompt_id, error=body.get("error") or {"message": f"HTTP {code}: {body}"},
                                node_errors=body.get("node_errors")), ws
        prompt_id = body["prompt_id"]
        refused = body.get("node_errors") or {}  # some outputs refused at validation; ComfyUI runs the others
        deadline = time.monotonic() + run.options.timeout if run.options.timeout else None
        entry, ws, timed_out = _wait_for_prompt(run, client, ws, prompt_id, tracker, deadline)
    except ServerError as e:
        return prompt_entry(job, client.url, version, started, now_iso(), time.monotonic() - t, "error", prompt_id,
                            extra_errors=[{"node_id": None, "node_type": None, "message": str(e),
                                           "type": "server"}]), ws
    late = [_timeout_error(run.options.timeout)] if timed_out else []
    if entry is None:
        return prompt_entry(job, client.url, version, started, now_iso(), time.monotonic() - t,
                            "timeout" if timed_out else "interrupted", prompt_id, node_errors=refused,
                            extra_errors=late), ws
    status_info = entry.get("status") or {}
    messages = status_info.get("messages") or []
    events = {m[0] for m in messages}
    if timed_out and "execution_success" not in events:
        status = "timeout"
    elif "execution_interrupted" in events:
        status = "interrupted"
    else:
        status = "success" if status_info.get("status_str") == "success" and not refused else "error"
    outputs, extra, images = entry.get("outputs") or {}, late if status == "timeout" else [], {}
    try:
        images = save_images(outputs, client.view, run.out, job.index)
    except (ServerError, OSError) as e:
        status = "error"
        extra.append({"node_id": None, "node_type": None, "message": f"downloading outputs failed: {e}",
                      "type": "output"})
    return prompt_entry(job, client.url, version, started, now_iso(), time.monotonic() - t, status, prompt_id,
                        outputs, messages, node_errors=refused, images=images, extra_errors=extra), ws


def server_worker(run: Run, client: ComfyClient, version, jobs: queue.Queue) -> None:
    """Take prompts from the shared queue until it is empty (or Ctrl-C), one at a time, on one server."""
    client_id = new_prompt_id()
    ws = None
    try:
        ws = client.websocket(client_id)
    except (ServerError, OSError) as e:
        run.printer.line(f"[{client.url}] no WebSocket ({e}); following prompts by polling /history")
    try:
        while True:
            try:
                job = jobs.get_nowait()
            except queue.Empty:
                return
            if run.stop.is_set():
                run.skip(job, client.url)
                continue
            entry, ws = run_on_server(run, client, ws, client_id, version, job)
            run.add(entry)
    finally:
        if ws is not None:
            ws.close()


def run_servers(run: Run, workflow: dict, fmt: str, jobs: list[Job] | None) -> None:
    clients = [ComfyClient(url) for url in run.options.servers]
    versions = {}
    for client in clients:
        versions[client.url] = client.system_stats().get("system", {}).get("comfyui_version")
        run.printer.info(f"server {client.url}: ComfyUI {versions[client.url]}")
    run.record["servers"] = [{"server": c.url, "comfyui_version": versions[c.url]} for c in clients]
    if jobs is None:
        info = clients[0].object_info(backend_types(workflow))
        jobs = convert_and_expand(run, workflow, info)
    todo: queue.Queue = queue.Queue()
    for job in jobs:
        todo.put(job)
    threads = [threading.Thread(target=server_worker, args=(run, c, versions[c.url], todo), daemon=True,
                                name=f"freecure-run {c.url}") for c in clients]
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        for th in threads:
            th.join(timeout=0.2)


# ------------------------------------------------------------------------------------------ the run
def _install_sigint(run: Run):
    """First Ctrl-C: stop after interrupting the running prompt(s); second: quit at once."""
    def handler(signum, frame):
        if run.stop.is_set():
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            raise KeyboardInterrupt
        run.stop.set()
        run.printer.line("stopping: interrupting the running prompt(s); Ctrl-C again to quit at once")
        if run.interrupt is not None:
            run.interrupt()
    signal.signal(signal.SIGINT, handler)


def run_workflow(workflow: dict, options: RunOptions | None = None, out: str | pathlib.Path | None = None, *,
                 jobs: list[Job] | None = None, printer: Printer | None = None,
                 record_head: dict | None = None) -> RunResult:
    """Run a workflow's prompts (embedded ComfyUI, or ``options.servers``) and copy their images into ``out``.

    workflow: an API-format prompt, or a UI-format workflow (converted with the node definitions of the ComfyUI that
    runs it).  options: ``RunOptions`` (default: one prompt, embedded ComfyUI).  out: the output folder (default
    ``default_out()``), created; ``record.json`` there is rewritten after every prompt.  jobs: the prompts to run,
    made by the caller (``Job`` with its own ``variation``); then ``options``' sets, sweeps and repeat are not
    applied.  Default: the workflow with them applied.  printer: where progress goes (default: stdout).
    record_head: the first fields of record.json (the command line: ``tool``, ``argv``, ``workflow``).

    Installs a SIGINT handler for the run: the first Ctrl-C interrupts the running prompt(s) and skips the rest
    (code 130), a second one quits at once.  Raises ``WorkflowError``, before anything is written, when a set or
    sweep does not fit an API-format workflow; later failures (a UI workflow that does not convert, an unreachable
    server, an embedded ComfyUI that does not start) are recorded and returned as ``error`` with code 2.
    """
    options = options if options is not None else RunOptions()
    printer = printer if printer is not None else Printer()
    fmt = "api" if is_api_format(workflow) else "ui"
    if jobs is None and fmt == "api":
        jobs = make_jobs(workflow, options)  # UI: after conversion with the node definitions
    out = pathlib.Path(out) if out is not None else default_out()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        **(record_head or {}),
        "workflow_format": fmt,
        "mode": "server" if options.servers else "embedded",
        "sets": list(options.sets), "sweeps": list(options.sweeps), "repeat": options.repeat,
        "freecure": pack_commit(),
        "started": now_iso(), "finished": None, "status": "running",
        "prompt_count": len(jobs) if jobs is not None else None,
        "servers": [],
        "converted_prompt": None,
        "prompts": [],
    }
    run = Run(options, out, printer, record)
    write_record(out / "record.json", record)
    code, error = 0, None
    try:
        _install_sigint(run)
        if options.servers:
            run_servers(run, workflow, fmt, jobs)
        else:
            run_embedded(run, workflow, fmt, jobs)
    except (WorkflowError, ServerError, SetupError) as e:
        error = record["error"] = str(e)
        code = 2
    statuses = [p["status"] for p in record["prompts"]]
    if code == 0:
        code = 130 if run.stop.is_set() else (0 if statuses and all(s == "success" for s in statuses) else 1)
    record.update(finished=now_iso(), status={0: "success", 1: "failed", 2: "error", 130: "interrupted"}[code])
    write_record(out / "record.json", record)
    return RunResult(code, record, out, error)
