"""Run a ComfyUI workflow headless: in an embedded (in-process) ComfyUI, or on one or more running servers.

    python -m freecure_core.run WORKFLOW.json [--set NODE.INPUT=VALUE ...] [--sweep NODE.INPUT=V1,V2 ...]
                                [--repeat N] [--server URL ...] [--out DIR] [--timeout S] [--quiet]

WORKFLOW.json is a UI-format workflow (what the frontend saves; converted with the node definitions of the ComfyUI
that runs it) or an API-format prompt.  ``--set`` edits inputs, ``--sweep`` and ``--repeat`` make a batch (syntax
in ``freecure_core.workflow_format``).  Without ``--server`` the prompts run one after another in this process
(ComfyUI from ``--comfyui``, ``$COMFYUI_PATH`` or this repo's ``.comfyui``; this pack loaded as a custom node);
with ``--server`` (repeatable) they are queued on the servers, each server working through its share concurrently.
Progress is printed per node; every image a SaveImage/PreviewImage node produced is copied into ``--out`` with
``record.json`` (see ``freecure_core.run_record``).  Exit status: 0 all prompts succeeded, 1 some failed (they are
recorded, the others still run), 2 bad arguments or setup, 130 interrupted (Ctrl-C; a second one quits at once).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass

from .run_progress import Printer, Tracker
from .run_record import now_iso, pack_commit, prompt_entry, save_images, write_record
from .server_client import ComfyClient, ServerError, new_prompt_id
from .workflow_format import (WorkflowError, apply_sets, backend_types, expand_sweeps, is_api_format,
                              is_ui_format, ui_to_api)

PACK_DIR = pathlib.Path(__file__).resolve().parents[1]
HISTORY_POLL_S = 2.0  # server mode: how often /history is checked besides the WebSocket messages
HISTORY_GRACE_S = 30.0  # how long a finished (or interrupted) prompt's history entry is waited for


def _where(error: dict) -> str:
    return f"#{error['node_id']} {error['node_type']}: " if error.get("node_id") is not None else ""


class SetupError(RuntimeError):
    """The embedded ComfyUI could not start; the message says what to fix."""


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

    def __init__(self, args, out_dir: pathlib.Path, printer: Printer, record: dict):
        self.args = args
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


# ------------------------------------------------------------------------------------------ arguments
def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m freecure_core.run", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="NODE is a node id, a node title, a class type that occurs once, or * (every node with INPUT).\n"
               "VALUE is JSON where it parses (4, 0.5, true, [\"3\", 0]) else text; null removes the input.\n"
               "Sweep values: V1,V2,... or a JSON list; several sweeps combine as a product.\n"
               "--repeat N: copy r of each prompt adds r to every seed / noise_seed input.\n"
               "Example: python -m freecure_core.run workflows/freecure_face_parsing.json \\\n"
               "    --set EmptyLatentImage.width=768 --sweep '*.seed=1,2,3' --server http://127.0.0.1:8188")
    ap.add_argument("workflow", help="UI-format workflow or API-format prompt (JSON)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="set an input (repeatable, applied in order)")
    ap.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="NODE.INPUT=V1,V2",
                    help="one prompt per value (repeatable: product)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="run each prompt N times with seed offsets")
    ap.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                    help="a running ComfyUI (repeatable: prompts are spread over the servers); default: embedded")
    ap.add_argument("--out", metavar="DIR", help="output folder (default out/run/<timestamp>)")
    ap.add_argument("--timeout", type=float, default=0.0, metavar="S",
                    help="seconds per prompt before it is interrupted and recorded as timeout (0 = no limit)")
    ap.add_argument("--quiet", action="store_true", help="print only each prompt's result and errors")
    emb = ap.add_argument_group("embedded ComfyUI (without --server)")
    emb.add_argument("--comfyui", metavar="PATH", help="ComfyUI checkout (default $COMFYUI_PATH, this repo's "
                     ".comfyui, or the ComfyUI whose custom_nodes holds this pack)")
    emb.add_argument("--extra-model-paths", dest="extra_model_paths", action="append", default=[], metavar="YAML",
                     help="an extra_model_paths.yaml (repeatable)")
    emb.add_argument("--custom-nodes", dest="custom_nodes", action="append", default=[], metavar="DIR",
                     help="another custom node pack, or a folder of packs (repeatable)")
    emb.add_argument("--input-dir", dest="input_dir", metavar="DIR", help="ComfyUI input folder (LoadImage files)")
    emb.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU")
    emb.add_argument("--verbose", action="store_true", help="show ComfyUI's own log (INFO)")
    args = ap.parse_args(argv)
    if args.servers and (args.comfyui or args.extra_model_paths or args.custom_nodes or args.input_dir or args.cpu):
        ap.error("FreeCure: --comfyui/--extra-model-paths/--custom-nodes/--input-dir/--cpu are for the embedded "
                 "ComfyUI; drop them with --server (a server has its own settings)")
    if args.repeat < 1:
        ap.error(f"FreeCure: --repeat must be at least 1, got {args.repeat}")
    return args


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


def make_jobs(prompt: dict, args) -> list[Job]:
    pairs = expand_sweeps(apply_sets(prompt, args.sets), args.sweeps, args.repeat)
    return [Job(i, len(pairs), p, dict(v, sets=list(args.sets))) for i, (p, v) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------ embedded
def run_embedded(run: Run, workflow: dict, fmt: str, jobs: list[Job] | None) -> None:
    from .comfy_bridge.embedded import EmbeddedComfy, EmbeddedError
    args = run.args
    root = pathlib.Path(args.comfyui) if args.comfyui else default_comfyui()
    run.printer.info(f"starting ComfyUI from {root} (embedded) ...")
    t0 = time.monotonic()
    comfy = EmbeddedComfy(root, custom_nodes=args.custom_nodes, extra_model_paths=args.extra_model_paths,
                          input_dir=args.input_dir, cpu=args.cpu, verbose=args.verbose)
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
                result = comfy.run(job.prompt, prompt_id, on_message=tracker.message, timeout=args.timeout or None)
            except EmbeddedError as e:
                raise SetupError(str(e)) from e
            tracker.finish_node()
            images, extra = {}, [_timeout_error(args.timeout)] if result["status"] == "timeout" else []
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
    jobs = make_jobs(prompt, run.args)
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
        deadline = time.monotonic() + run.args.timeout if run.args.timeout else None
        entry, ws, timed_out = _wait_for_prompt(run, client, ws, prompt_id, tracker, deadline)
    except ServerError as e:
        return prompt_entry(job, client.url, version, started, now_iso(), time.monotonic() - t, "error", prompt_id,
                            extra_errors=[{"node_id": None, "node_type": None, "message": str(e),
                                           "type": "server"}]), ws
    late = [_timeout_error(run.args.timeout)] if timed_out else []
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
    clients = [ComfyClient(url) for url in run.args.servers]
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


# ------------------------------------------------------------------------------------------ main
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


def main(argv=None) -> int:
    args = parse_args(argv)
    printer = Printer(quiet=args.quiet)
    try:
        workflow, fmt = load_workflow(args.workflow)
        jobs = make_jobs(workflow, args) if fmt == "api" else None  # UI: after conversion with node definitions
    except WorkflowError as e:
        printer.line(str(e))
        return 2
    out = pathlib.Path(args.out) if args.out else default_out()
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "tool": "python -m freecure_core.run",
        "argv": list(sys.argv[1:] if argv is None else argv),
        "workflow": str(pathlib.Path(args.workflow).resolve()),
        "workflow_format": fmt,
        "mode": "server" if args.servers else "embedded",
        "sets": list(args.sets), "sweeps": list(args.sweeps), "repeat": args.repeat,
        "freecure": pack_commit(),
        "started": now_iso(), "finished": None, "status": "running",
        "prompt_count": len(jobs) if jobs is not None else None,
        "servers": [],
        "converted_prompt": None,
        "prompts": [],
    }
    run = Run(args, out, printer, record)
    write_record(out / "record.json", record)
    code = 0
    try:
        if args.servers:
            _install_sigint(run)
            run_servers(run, workflow, fmt, jobs)
        else:
            _install_sigint(run)
            run_embedded(run, workflow, fmt, jobs)
    except (WorkflowError, ServerError, SetupError) as e:
        printer.line(str(e))
        record["error"] = str(e)
        code = 2
    statuses = [p["status"] for p in record["prompts"]]
    if code == 0:
        code = 130 if run.stop.is_set() else (0 if statuses and all(s == "success" for s in statuses) else 1)
    record.update(finished=now_iso(), status={0: "success", 1: "failed", 2: "error", 130: "interrupted"}[code])
    write_record(out / "record.json", record)
    ok = statuses.count("success")
    printer.line(f"{ok}/{len(statuses)} prompt(s) succeeded; outputs and record.json in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
