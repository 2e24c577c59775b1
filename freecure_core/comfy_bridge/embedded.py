"""An in-process ComfyUI for the headless runner (``python -m freecure_core.run`` without ``--server``).

``EmbeddedComfy(root, ...).start()`` imports ComfyUI from its checkout the way its ``main.py`` does (command-line
flags parsed once, extra model paths, built-in extra nodes, custom nodes: this pack from its own folder, the
custom node folders ComfyUI knows, and any ``custom_nodes`` given), without the HTTP server.  ``run(prompt, ...)``
validates and executes one API prompt with ComfyUI's own ``validate_prompt`` and ``PromptExecutor``; a minimal
stand-in for ``server.PromptServer.instance`` forwards the executor's messages ("executing", "progress",
"executed", "execution_error", ...) to a callback.  ``interrupt()`` stops the running prompt (the runner calls it
on Ctrl-C).  ComfyUI is imported inside ``start()``: this module must be importable before ComfyUI is on sys.path.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import threading

PACK_DIR = pathlib.Path(__file__).resolve().parents[2]
CLIENT_ID = "freecure-run"


class EmbeddedError(RuntimeError):
    """ComfyUI could not be started in-process; the message says what to fix."""


class _ServerStandIn:
    """What ComfyUI's executor and nodes use of ``PromptServer.instance``: messages go to ``on_message``."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.supports = ["custom_nodes_from_web"]
        self.loop = None
        self.prompt_queue = None
        self.on_message = None
        try:  # custom node packs may register HTTP routes at import; they are accepted and never served
            from aiohttp import web
            self.routes, self.app = web.RouteTableDef(), web.Application()
        except ImportError:
            self.routes = self.app = None

    def send_sync(self, event, data, sid=None):
        if isinstance(event, str) and self.on_message is not None:
            self.on_message(event, data)

    def send_progress_text(self, text, node_id, sid=None):
        if self.on_message is not None:
            self.on_message("progress_text", {"node": node_id, "text": text if isinstance(text, str) else
                                              bytes(text).decode(errors="replace")})

    def queue_updated(self):
        pass


def _not_execution_errors(record: logging.LogRecord) -> bool:
    """Drops ComfyUI's execution.py log (node tracebacks, validation details): the runner prints and records them."""
    return pathlib.Path(record.pathname).name != "execution.py"


def _is_pack(path: pathlib.Path) -> bool:
    return (path.is_dir() and (path / "__init__.py").is_file()) or (path.is_file() and path.suffix == ".py")


def _pack_paths(folder: pathlib.Path) -> list[pathlib.Path]:
    """The custom node modules in a custom_nodes-style folder, as ComfyUI's loader lists them."""
    out = []
    for entry in sorted(os.listdir(os.path.realpath(folder))):
        path = folder / entry
        if entry == "__pycache__" or entry.endswith(".disabled"):
            continue
        if path.is_dir() or path.suffix == ".py":
            out.append(path)
    return out


# Every key some supported ComfyUI's executor reads from ``cache_args`` (its main.py builds the same dict): 0.3.75 reads
# "lru" and "ram", 0.33 also "ram_inactive"; each ignores keys it does not read.  Zero: keep the last outputs only.
_CLASSIC_CACHE_ARGS = {"lru": 0, "ram": 0, "ram_inactive": 0}


def _make_executor(execution, server, version):
    """ComfyUI's ``PromptExecutor`` with the classic cache, built as that version's main.py builds it."""
    try:
        return execution.PromptExecutor(server, cache_type=execution.CacheType.CLASSIC,
                                        cache_args=dict(_CLASSIC_CACHE_ARGS))
    except (TypeError, AttributeError, KeyError) as e:
        raise EmbeddedError(f"FreeCure: ComfyUI {version}'s execution.PromptExecutor cannot be built the way the "
                            f"runner knows ({type(e).__name__}: {e}); run this ComfyUI as a server and use "
                            f"--server URL, or use a ComfyUI version listed in the FreeCure README") from e


class EmbeddedComfy:
    """ComfyUI running in this process; one prompt at a time."""

    name = "embedded"

    def __init__(self, root, *, custom_nodes=(), extra_model_paths=(), input_dir=None, cpu=False,
                 work_dir=None, verbose=False):
        self.root = pathlib.Path(root).expanduser().resolve()
        self.custom_nodes = [pathlib.Path(p).expanduser().resolve() for p in custom_nodes]
        self.extra_model_paths = [pathlib.Path(p).expanduser().resolve() for p in extra_model_paths]
        self.input_dir = pathlib.Path(input_dir).expanduser().resolve() if input_dir else None
        self.cpu = cpu
        self.verbose = verbose
        self._own_work_dir = work_dir is None
        self.work_dir = pathlib.Path(work_dir or tempfile.mkdtemp(prefix="freecure-run-"))
        self.version = None
        self.failed_modules: list[str] = []
        self.loaded_packs: list[str] = []
        self._server = _ServerStandIn()
        self._executor = None

    # ------------------------------------------------------------------------------------------ start-up
    def _import_comfy(self):
        if not ((self.root / "main.py").is_file() and (self.root / "comfy").is_dir()):
            raise EmbeddedError(f"FreeCure: no ComfyUI at {self.root}; pass --comfyui PATH (a ComfyUI checkout) "
                                f"or set COMFYUI_PATH")
        root = str(self.root)
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)  # ComfyUI's top-level modules (nodes, utils, app, ...) must win
        if "comfy.cli_args" not in sys.modules:
            import comfy.options
            comfy.options.enable_args_parsing()
            saved = sys.argv
            sys.argv = [saved[0] if saved else "freecure-run"] + (["--cpu"] if self.cpu else [])
            try:
                import comfy.cli_args  # noqa: F401  (parses sys.argv once, here)
            finally:
                sys.argv = saved
        elif self.cpu:
            sys.modules["comfy.cli_args"].args.cpu = True
        if not self.cpu:
            try:  # as main.py: picks the CUDA allocator before torch loads
                importlib.import_module("cuda_malloc")
            except Exception:  # noqa: BLE001  (optional tuning only)
                pass

    def _apply_paths(self):
        import folder_paths
        import utils.extra_config
        default_yaml = self.root / "extra_model_paths.yaml"
        for yaml_path in ([default_yaml] if default_yaml.is_file() else []) + self.extra_model_paths:
            if not yaml_path.is_file():
                raise EmbeddedError(f"FreeCure: extra model paths file {yaml_path} not found; fix "
                                    f"--extra-model-paths")
            utils.extra_config.load_extra_path_config(str(yaml_path))
        (self.work_dir / "output").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "temp").mkdir(parents=True, exist_ok=True)
        folder_paths.set_output_directory(str(self.work_dir / "output"))
        folder_paths.set_temp_directory(str(self.work_dir / "temp"))
        if self.input_dir is not None:
            if not self.input_dir.is_dir():
                raise EmbeddedError(f"FreeCure: input directory {self.input_dir} not found; fix --input-dir")
            folder_paths.set_input_directory(str(self.input_dir))

    def _install_progress_hook(self):
        import comfy.model_management
        import comfy.utils
        from comfy_execution.progress import get_progress_state
        from comfy_execution.utils import get_executing_context
        stand_in = self._server

        def hook(value, total, preview_image, prompt_id=None, node_id=None):
            context = get_executing_context()
            if context is not None:
                prompt_id = prompt_id or context.prompt_id
                node_id = node_id or context.node_id
            comfy.model_management.throw_exception_if_processing_interrupted()
            prompt_id = prompt_id or stand_in.last_prompt_id
            node_id = node_id or stand_in.last_node_id
            get_progress_state().update_progress(node_id, value, total, preview_image)
            stand_in.send_sync("progress", {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id})

        comfy.utils.set_progress_bar_global_hook(hook)

    async def _load_custom_nodes(self, base_names):
        import folder_paths
        import nodes
        seen = set()

        async def load(path: pathlib.Path, required=False):
            real = os.path.realpath(path)
            if real in seen:
                return
            seen.add(real)
            ok = await nodes.load_custom_node(str(path), base_names, module_parent="custom_nodes")
            if ok:
                self.loaded_packs.append(str(path))
            elif required:
                raise EmbeddedError(f"FreeCure: the custom node pack {path} did not load (its error is logged "
                                    f"above); fix it or leave it out")

        await load(PACK_DIR, required=True)
        for folder in folder_paths.get_folder_paths("custom_nodes"):
            if os.path.isdir(folder):
                for path in _pack_paths(pathlib.Path(folder)):
                    await load(path)
        for path in self.custom_nodes:
            if not path.exists():
                raise EmbeddedError(f"FreeCure: custom node path {path} not found; fix --custom-nodes")
            for pack in ([path] if _is_pack(path) else _pack_paths(path)):
                await load(pack, required=True)

    def start(self) -> "EmbeddedComfy":
        """Import ComfyUI, register its nodes and the custom nodes; returns self."""
        logger = logging.getLogger()
        if not logger.handlers:
            logging.basicConfig(format="%(message)s", stream=sys.stderr)
            if not self.verbose:
                logger.handlers[0].addFilter(_not_execution_errors)
        level = logging.INFO if self.verbose else logging.WARNING
        # ComfyUI's own modules and built-in extras warn about optional dependencies (torchaudio, ...) with
        # tracebacks: quiet while they import (the modules that failed get one summary line), not for custom nodes
        logger.setLevel(level if self.verbose else logging.ERROR)
        try:
            self._import_comfy()
            self._apply_paths()
            importlib.import_module("comfy.model_management")  # picks the device from the parsed flags
            import comfy.utils
            import comfyui_version
            import execution
            import hook_breaker_ac10a0
            import nodes
            import server
            self.version = comfyui_version.__version__
            server.PromptServer.instance = self._server
            comfy.utils.set_progress_bar_enabled(False)  # the runner prints steps itself
            self._install_progress_hook()
            hook_breaker_ac10a0.save_functions()
            self.failed_modules = list(asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False,
                                                                          init_api_nodes=False)) or [])
        finally:
            logger.setLevel(level)
        try:
            asyncio.run(self._load_custom_nodes(set(nodes.NODE_CLASS_MAPPINGS)))
        finally:
            hook_breaker_ac10a0.restore_functions()
        self._executor = _make_executor(execution, self._server, self.version)
        return self

    # ------------------------------------------------------------------------------------------ queries
    def object_info(self, types) -> dict:
        """``/object_info``-style entries of the given node types (types not registered are left out)."""
        import nodes
        info = {}
        for name in types:
            cls = nodes.NODE_CLASS_MAPPINGS.get(name)
            if cls is None:
                continue
            if hasattr(cls, "GET_NODE_INFO_V1"):  # V3 node
                info[name] = cls.GET_NODE_INFO_V1()
                continue
            spec = cls.INPUT_TYPES()
            info[name] = {"input": spec, "input_order": {k: list(v) for k, v in spec.items()},
                          "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
                          "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}
        return info

    def fetch(self, item: dict) -> bytes:
        """Bytes of an output file (an ``images`` entry: filename, subfolder, type)."""
        import folder_paths
        base = folder_paths.get_directory_by_type(item.get("type", "output"))
        if base is None:
            raise EmbeddedError(f"FreeCure: unknown output type {item.get('type')!r}")
        return (pathlib.Path(base) / item.get("subfolder", "") / item["filename"]).read_bytes()

    def close(self) -> None:
        """Remove the private output/temp folder (when this object made it); copy what you need first."""
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ running
    def interrupt(self) -> None:
        """Stop the running prompt at its next check (sampling steps check often); safe from a signal handler."""
        model_management = sys.modules.get("comfy.model_management")
        if model_management is not None:  # nothing runs before ComfyUI is imported
            model_management.interrupt_current_processing(True)

    def run(self, prompt: dict, prompt_id: str, on_message=None, timeout: float | None = None) -> dict:
        """Validate and execute one API prompt.

        Returns ``{"status": "success"|"error"|"rejected"|"interrupted"|"timeout", "outputs": {node: ui},
        "messages": [[event, data], ...], "error": validation error or None, "node_errors": {...}}``.
        """
        import execution
        if self._executor is None:
            raise EmbeddedError("FreeCure: EmbeddedComfy.run before start()")
        self._server.on_message = on_message
        self._server.last_prompt_id = prompt_id
        try:
            valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
            if not valid:
                return {"status": "rejected", "outputs": {}, "messages": [], "error": error,
                        "node_errors": node_errors}
            timed_out = threading.Event()
            timer = None
            if timeout:
                def expire():
                    timed_out.set()
                    self.interrupt()
                timer = threading.Timer(timeout, expire)
                timer.daemon = True
                timer.start()
            try:
                self._executor.execute(prompt, prompt_id, {"client_id": CLIENT_ID}, outputs)
            except (KeyError, TypeError, AttributeError) as e:  # node errors are caught inside; this is the runner's
                raise EmbeddedError(f"FreeCure: ComfyUI {self.version}'s executor failed outside any node "
                                    f"({type(e).__name__}: {e}); the embedded runner does not support this ComfyUI "
                                    f"version: run it as a server and use --server URL") from e
            finally:
                if timer is not None:
                    timer.cancel()
            messages = [[event, data] for event, data in self._executor.status_messages]
            events = {event for event, _ in messages}
            if timed_out.is_set() and "execution_success" not in events:
                status = "timeout"
            elif "execution_interrupted" in events:
                status = "interrupted"
            elif node_errors:  # outputs refused at validation were left out; the others ran
                status = "error"
            else:
                status = "success" if self._executor.success and "execution_error" not in events else "error"
            result = getattr(self._executor, "history_result", None) or {}
            return {"status": status, "outputs": result.get("outputs", {}), "messages": messages, "error": None,
                    "node_errors": node_errors}
        finally:
            self._server.on_message = None
