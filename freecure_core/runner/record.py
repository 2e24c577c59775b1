"""The headless runner's ``record.json``: what ran, where, with which inputs, and what came out.

Top level: ``tool``, ``argv``, ``workflow`` (path), ``workflow_format`` ("ui"/"api"), ``mode`` ("embedded"/"server"),
``sets``, ``sweeps``, ``repeat``, ``freecure`` ({commit, dirty}: this pack's git state), ``started``/``finished``,
``status`` ("running", "success", "failed", "error", "interrupted"), ``prompt_count``, ``servers`` (each with its
ComfyUI version; embedded: root and the custom node packs loaded), ``converted_prompt`` (a UI workflow in API format,
before sets and sweeps), ``error`` (set-up failures) and ``prompts``, one entry per prompt (``prompt_entry``): index,
prompt_id, server ("embedded" or URL), comfyui_version, status ("success", "error", "rejected", "interrupted",
"timeout", "skipped"), variation ({sweep, repeat, sets}), started/finished/seconds, ``prompt`` (the final API prompt
that ran), ``texts`` (node UI texts by node id), ``outputs`` (images by node id), ``files`` (names in the output
folder) and ``errors`` ({node_id, node_type, message, type[, traceback]}).

``save_images`` copies every image a node reported into the output folder; ``write_record`` writes the record
atomically (the runner rewrites it after every prompt, so an interrupted run still leaves a readable record).
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]  # the pack (this file: freecure_core/runner/record.py)
TRACEBACK_LINES = 12  # last lines of a node's traceback kept in the record


def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def pack_commit() -> dict:
    """This pack's git commit (``commit`` None outside a git checkout) and whether tracked files differ from it."""
    def git(*args):
        return subprocess.run(["git", "-C", str(PACK_DIR), *args], capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _class_type(prompt: dict, node_id) -> str | None:
    return (prompt.get(str(node_id)) or {}).get("class_type") if node_id is not None else None


def errors_from(prompt: dict, messages=(), error=None, node_errors=None) -> list[dict]:
    """Errors as ``{"node_id", "node_type", "message", "type"}`` from a validation refusal or execution messages."""
    out = []
    for node_id, info in (node_errors or {}).items():
        for reason in info.get("errors") or []:
            details = f": {reason['details']}" if reason.get("details") else ""
            out.append({"node_id": str(node_id), "node_type": info.get("class_type") or _class_type(prompt, node_id),
                        "message": f"{reason.get('message', '')}{details}", "type": reason.get("type")})
    if error and not out:
        details = f": {error['details']}" if error.get("details") else ""
        out.append({"node_id": None, "node_type": None, "message": f"{error.get('message', error)}{details}",
                    "type": error.get("type") if isinstance(error, dict) else None})
    for event, data in messages or ():
        if event == "execution_error":
            out.append({"node_id": data.get("node_id"), "node_type": data.get("node_type"),
                        "message": str(data.get("exception_message", "")).strip(),
                        "type": data.get("exception_type"),
                        "traceback": "".join(data.get("traceback") or []).splitlines()[-TRACEBACK_LINES:]})
        elif event == "execution_interrupted":
            out.append({"node_id": data.get("node_id"), "node_type": data.get("node_type"),
                        "message": "interrupted", "type": "interrupted"})
    return out


def texts_from(outputs: dict) -> dict:
    """Node UI texts (``{"text": [...]}`` outputs, as FreeCure nodes report what they did) by node id."""
    return {nid: list(out["text"]) for nid, out in (outputs or {}).items() if isinstance(out, dict) and out.get("text")}


def save_images(outputs: dict, fetch, out_dir: pathlib.Path, index: int) -> dict:
    """Copy every ``images`` entry of the UI outputs into ``out_dir`` as ``<index>_<node>_<filename>``.

    fetch(item) -> bytes reads one entry (embedded: from disk; server: ``/view``).  Returns node id -> list of
    ``{"file", "filename", "subfolder", "type"}``.
    """
    saved = {}
    for nid, out in (outputs or {}).items():
        for item in (out or {}).get("images") or []:
            if not isinstance(item, dict) or "filename" not in item:
                continue
            name = f"{index:03d}_{nid}_{pathlib.Path(item['filename']).name}"
            (out_dir / name).write_bytes(fetch(item))
            saved.setdefault(nid, []).append({"file": name, "filename": item["filename"],
                                              "subfolder": item.get("subfolder", ""),
                                              "type": item.get("type", "output")})
    return saved


def prompt_entry(job, where: str, version, started: str, finished: str, seconds: float, status: str,
                 prompt_id=None, outputs=None, messages=(), error=None, node_errors=None, images=None,
                 extra_errors=()) -> dict:
    """One prompt's entry in record.json."""
    images = images or {}
    return {
        "index": job.index,
        "prompt_id": prompt_id,
        "server": where,
        "comfyui_version": version,
        "status": status,
        "variation": job.variation,
        "started": started,
        "finished": finished,
        "seconds": round(seconds, 3),
        "prompt": job.prompt,
        "texts": texts_from(outputs),
        "outputs": images,
        "files": [item["file"] for items in images.values() for item in items],
        "errors": errors_from(job.prompt, messages, error, node_errors) + list(extra_errors),
    }


def write_record(path: pathlib.Path, record: dict) -> None:
    """Write ``record`` as JSON, atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
