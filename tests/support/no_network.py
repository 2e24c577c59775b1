"""Test-only network guard: sockets may reach this machine (127.0.0.1, ::1, localhost, unix sockets) and nothing else.

``install(log_path)`` patches ``socket.socket.connect`` / ``connect_ex`` / ``sendto``, ``socket.getaddrinfo`` and
``socket.create_connection`` in the running process: a connection or name lookup for any other address raises
``NetworkBlocked`` (an ``OSError``, so libraries see an ordinary network failure) and, when a log path is given
(argument or ``$FREECURE_NO_NETWORK_LOG``), appends one line per attempt: the address and the innermost frames of
the caller, so a test can tell who tried.

For subprocesses (the e2e ComfyUI servers, model scripts, CLIs), ``server_env(env, site_dir, log_path, hide)``
returns an environment whose PYTHONPATH starts with ``site_dir``, where ``write_site_dir`` put a
``sitecustomize.py`` that installs the guard when Python starts (logging to ``$FREECURE_NO_NETWORK_LOG``) and makes
the modules listed in ``$FREECURE_HIDE_MODULES`` unimportable as if they were not installed (``hide_modules``), so
one sitecustomize serves both the network guard and the optional-dependency tests. Each guarded process records
its pid in the log (``guarded_pids``), so a test can check that a server really ran guarded.
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import pathlib
import socket
import sys
import threading
import time
import traceback

LOG_ENV = "FREECURE_NO_NETWORK_LOG"
HIDE_ENV = "FREECURE_HIDE_MODULES"
INSTALLED = "guard installed"
LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
SUPPORT_DIR = pathlib.Path(__file__).resolve().parent

_state: dict = {"installed": False, "log": None, "originals": {}}
_lock = threading.Lock()


class NetworkBlocked(ConnectionRefusedError):
    """A connection (or name lookup) to something other than this machine, refused by the test guard."""


def is_local(host) -> bool:
    """True for loopback IPs (127.0.0.0/8, ::1), localhost names, and '' / None (the local host for bind/lookup)."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip().strip("[]").lower()
    if not host or host in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _address_host(sock, address):
    """The host of a socket address, or None for address families that never leave the machine."""
    family = getattr(sock, "family", None)
    if family is not None and family not in (socket.AF_INET, socket.AF_INET6):
        return None  # AF_UNIX, netlink, ...: local by nature
    if isinstance(address, (tuple, list)) and address:
        return address[0]
    return address


def _record(entry: dict) -> None:
    path = _state["log"]
    if path:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"time": time.time(), "pid": os.getpid(), **entry}) + "\n")
        except OSError:
            pass


def _refuse(what: str, target) -> None:
    frames = traceback.extract_stack()[:-2][-30:]  # without _refuse and the patched function
    where = " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(frames))
    with _lock:
        _record({"what": what, "target": repr(target), "stack": where})
    raise NetworkBlocked(f"FreeCure tests: network access blocked ({what} {target!r}); the test suite may only "
                         "reach 127.0.0.1 / ::1 / localhost")


def install(log_path: str | os.PathLike | None = None) -> bool:
    """Install the guard in this process (idempotent). Returns True when this call installed it."""
    with _lock:
        if log_path is None:
            log_path = os.environ.get(LOG_ENV) or None
        if log_path is not None:
            _state["log"] = os.fspath(log_path)
        if _state["installed"]:
            return False
        orig = _state["originals"]
        orig.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex,
                    sendto=socket.socket.sendto, getaddrinfo=socket.getaddrinfo,
                    create_connection=socket.create_connection)

        def connect(self, address):
            host = _address_host(self, address)
            if host is not None and not is_local(host):
                _refuse("connect", address)
            return orig["connect"](self, address)

        def connect_ex(self, address):
            host = _address_host(self, address)
            if host is not None and not is_local(host):
                _refuse("connect_ex", address)
            return orig["connect_ex"](self, address)

        def sendto(self, data, *args):
            address = args[-1] if args else None
            host = _address_host(self, address)
            if host is not None and not is_local(host):
                _refuse("sendto", address)
            return orig["sendto"](self, data, *args)

        def getaddrinfo(host, *args, **kwargs):
            if not is_local(host):
                _refuse("getaddrinfo", host)
            return orig["getaddrinfo"](host, *args, **kwargs)

        def create_connection(address, *args, **kwargs):
            host = address[0] if isinstance(address, (tuple, list)) and address else address
            if not is_local(host):
                _refuse("create_connection", address)
            return orig["create_connection"](address, *args, **kwargs)

        socket.socket.connect = connect
        socket.socket.connect_ex = connect_ex
        socket.socket.sendto = sendto
        socket.getaddrinfo = getaddrinfo
        socket.create_connection = create_connection
        _state["installed"] = True
        _record({"what": INSTALLED})  # lets a test check that a subprocess really runs guarded
        return True


def uninstall() -> None:
    """Put the original socket functions back (for a test that installed the guard itself)."""
    with _lock:
        if not _state["installed"]:
            return
        orig = _state["originals"]
        socket.socket.connect, socket.socket.connect_ex = orig["connect"], orig["connect_ex"]
        socket.socket.sendto = orig["sendto"]
        socket.getaddrinfo, socket.create_connection = orig["getaddrinfo"], orig["create_connection"]
        _state["installed"] = False


def installed() -> bool:
    return _state["installed"]


@contextlib.contextmanager
def guarded(log_path: str | os.PathLike | None = None):
    """The guard for a block: installed if it was not (removed again after), attempts logged to `log_path`
    meanwhile (the previous log path is restored)."""
    before = _state["log"]
    mine = install(log_path)
    if log_path is not None:
        _state["log"] = os.fspath(log_path)
    try:
        yield
    finally:
        _state["log"] = before
        if mine:
            uninstall()


def _entries(log_path) -> list[dict]:
    try:
        text = pathlib.Path(log_path).read_text(encoding="utf-8")
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def attempts(log_path: str | os.PathLike) -> list[dict]:
    """The blocked attempts recorded in a log file (empty when there is none)."""
    return [e for e in _entries(log_path) if e["what"] != INSTALLED]


def guarded_pids(log_path: str | os.PathLike) -> set[int]:
    """The processes that installed the guard while logging to this file."""
    return {e["pid"] for e in _entries(log_path) if e["what"] == INSTALLED}


# ------------------------------------------------------------------------------------------ hidden modules
def hide_modules(names) -> None:
    """Make the top-level packages `names` unimportable in this process, as if they were not installed: ``import``
    raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None (a None entry in sys.modules)."""
    names = [n.strip() for n in names if n.strip()]
    for loaded in [m for m in sys.modules if m.split(".", 1)[0] in names]:
        del sys.modules[loaded]
    for name in names:
        sys.modules[name] = None


# ------------------------------------------------------------------------------------------ subprocesses
_SITECUSTOMIZE = '''\
# Written by tests/support/no_network.py for a test subprocess: network guard (and hidden modules).
import os as _os
import sys as _sys
_sys.path.insert(0, {support!r})
try:
    import no_network as _nn
finally:
    _sys.path.remove({support!r})
_nn.install(_os.environ.get(_nn.LOG_ENV) or None)
_hide = [n for n in _os.environ.get(_nn.HIDE_ENV, "").split(",") if n.strip()]
if _hide:
    _nn.hide_modules(_hide)
'''


def write_site_dir(directory: str | os.PathLike) -> pathlib.Path:
    """Write `directory`/sitecustomize.py (guard + optional hidden modules, configured by environment)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(support=str(SUPPORT_DIR)))
    return directory


def server_env(env: dict, site_dir: str | os.PathLike, log_path: str | os.PathLike | None = None,
               hide: tuple[str, ...] = ()) -> dict:
    """A copy of `env` whose Python starts with the guard (sitecustomize from `site_dir`, written if missing),
    logging refused attempts to `log_path`, with the modules in `hide` unimportable."""
    site_dir = pathlib.Path(site_dir)
    if not (site_dir / "sitecustomize.py").is_file():
        write_site_dir(site_dir)
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join([str(site_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if log_path is not None:
        env[LOG_ENV] = os.fspath(log_path)
    if hide:
        env[HIDE_ENV] = ",".join(hide)
    else:
        env.pop(HIDE_ENV, None)
    return env
