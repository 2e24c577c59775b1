"""Locate the ComfyUI checkout used by the tests and import it in CPU mode.

ComfyUI parses its command line once, when ``comfy.cli_args`` is first
imported, and only if ``comfy.options.enable_args_parsing()`` was called
before.  ``import_comfy()`` does that with a controlled ``sys.argv`` (``--cpu``
plus any extra flags) so in-process tests always run on the CPU, then puts the
real ``sys.argv`` back so pytest is not confused.  ``import_comfy(cpu=False)``
leaves ``--cpu`` out, so ComfyUI picks its GPU (bench/gpu_check.py); the test
suite never passes it.

Safe to call any number of times; only the first call does work.
"""
from __future__ import annotations

import os
import pathlib
import sys
import threading

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

_lock = threading.Lock()
_state: dict = {"done": False, "args": None}


def comfy_root() -> pathlib.Path:
    """The ComfyUI directory: ``$COMFYUI_PATH`` if set, else ``<repo>/.comfyui``."""
    env = os.environ.get("COMFYUI_PATH")
    root = pathlib.Path(env).expanduser() if env else REPO_ROOT / ".comfyui"
    return root.resolve()


def comfy_available() -> bool:
    """True when ``comfy_root()`` looks like a ComfyUI checkout (for skip markers)."""
    root = comfy_root()
    return (root / "main.py").is_file() and (root / "comfy").is_dir()


def _ensure_on_path(root: pathlib.Path) -> None:
    s = str(root)
    # Front of sys.path: ComfyUI's top-level modules (nodes, utils, app, ...)
    # must win over same-named things elsewhere.
    if s in sys.path:
        if sys.path[0] != s:
            sys.path.remove(s)
            sys.path.insert(0, s)
    else:
        sys.path.insert(0, s)


def import_comfy(*extra_args: str, cpu: bool = True):
    """Make ``import comfy.*`` work, in CPU mode (``cpu=False``: on ComfyUI's own device choice, e.g. CUDA).
    Returns the ``comfy`` package.

    ``extra_args`` are more ComfyUI CLI flags (e.g. ``--use-pytorch-cross-attention``).
    They only take effect on the first call in a process; a later call asking
    for different flags, or ``cpu=False`` after a CPU import, raises
    ``RuntimeError`` rather than silently ignoring them (a later plain
    ``import_comfy()`` returns whatever was imported first, as the test helpers
    that call it expect).
    """
    wanted = (("--cpu",) if cpu else ()) + tuple(a for a in extra_args if a != "--cpu")
    with _lock:
        if _state["done"]:
            if (extra_args or not cpu) and set(wanted) != set(_state["args"]):
                raise RuntimeError(
                    f"ComfyUI already imported with args {_state['args']}; cannot switch to {wanted}")
            import comfy  # noqa: F401  (namespace package)
            return sys.modules["comfy"]

        root = comfy_root()
        if not (root / "comfy").is_dir():
            raise RuntimeError(
                f"ComfyUI not found at {root} (set COMFYUI_PATH or run scripts/bootstrap.sh)")
        _ensure_on_path(root)

        if "comfy.cli_args" in sys.modules:
            # Someone imported ComfyUI before us, without our argv.  Force CPU
            # as well as we can; model_management may already have chosen.
            if cpu:
                sys.modules["comfy.cli_args"].args.cpu = True
        else:
            import comfy.options
            comfy.options.enable_args_parsing()
            saved = sys.argv
            sys.argv = [saved[0] if saved else "comfy", *wanted]
            try:
                import comfy.cli_args  # parses sys.argv exactly once, here
            finally:
                sys.argv = saved
        import comfy.model_management  # noqa: F401  (picks the device from args)

        _state["done"] = True
        _state["args"] = wanted
        return sys.modules["comfy"]
