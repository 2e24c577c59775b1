"""Progress lines for the headless runner: ComfyUI's execution messages turned into one line per event.

A ``Tracker`` follows one prompt: "executing" starts a node (and finishes the one before), "progress" prints a step
counter (about ten lines per node at most), "executed" prints the node's UI texts, errors and interrupts are
printed as they happen (the runner's result line repeats errors, also with ``quiet``).  Every line starts with the
prompt's tag, e.g. ``[2/3 http://127.0.0.1:8188]``.
Thread-safe: several servers' trackers share one ``Printer``.
"""
from __future__ import annotations

import sys
import threading
import time

TEXT_CHARS = 300  # longest UI text printed on one line (the record keeps all of it)


class Printer:
    """Serialized, flushed output lines; ``quiet`` keeps only results, errors and warnings."""

    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.stream, flush=True)

    def info(self, text: str) -> None:
        if not self.quiet:
            self.line(text)


class Tracker:
    """Lines for one prompt's messages (events as ComfyUI names them, data as it sends them)."""

    def __init__(self, printer: Printer, tag: str, prompt: dict):
        self.printer = printer
        self.tag = tag
        self.prompt = prompt
        self.current = None
        self.started = 0.0
        self.last_step = 0

    def _label(self, node_id) -> str:
        node = self.prompt.get(str(node_id)) or {}
        return f"#{node_id} {node.get('class_type', '?')}"

    def say(self, text: str) -> None:
        self.printer.info(f"[{self.tag}] {text}")

    def finish_node(self) -> None:
        if self.current is not None:
            self.say(f"{self._label(self.current)} done in {time.monotonic() - self.started:.2f}s")
            self.current = None

    def message(self, event: str, data: dict) -> None:
        data = data or {}
        if event == "execution_start":
            self.say("started")
        elif event == "execution_cached":
            cached = data.get("nodes") or []
            if cached:
                self.say(f"{len(cached)} node(s) cached: {', '.join('#' + str(n) for n in cached)}")
        elif event == "executing":
            self.finish_node()
            node = data.get("node")
            if node is not None:
                self.current, self.started, self.last_step = node, time.monotonic(), 0
                self.say(f"{self._label(node)} ...")
        elif event == "progress":
            value, total = data.get("value", 0), data.get("max", 0) or 0
            stride = max(1, total // 10)
            if value >= total or value - self.last_step >= stride:
                self.last_step = value
                self.say(f"{self._label(data.get('node', self.current))} step {value}/{total}")
        elif event == "executed":
            for text in ((data.get("output") or {}).get("text") or []):
                text = str(text).replace("\n", " | ")
                more = "..." if len(text) > TEXT_CHARS else ""
                self.say(f"{self._label(data.get('node'))}: {text[:TEXT_CHARS]}{more}")
        elif event == "execution_error":
            self.current = None
            self.say(f"ERROR in {self._label(data.get('node_id'))}: {data.get('exception_type', '')}: "
                     f"{str(data.get('exception_message', '')).strip()}")
        elif event == "execution_interrupted":
            self.current = None
            self.say(f"interrupted at {self._label(data.get('node_id'))}")
        elif event == "execution_success":
            self.finish_node()
