"""Opening an ONNX model with onnxruntime: the one place FreeCure does it (face detector, face recognizer).

onnxruntime is imported only when a model is opened, so importing this module never needs it; a missing
package gives an ImportError naming `pip install onnxruntime` (or `onnxruntime-gpu`). Providers default to
CUDA then CPU among those this onnxruntime build offers; what a session really runs on is always read back
from `session.get_providers()` (onnxruntime-gpu without a usable CUDA silently builds a CPU session), and
a fallback is logged. Missing, truncated or non-ONNX files give clear FileNotFoundError / ValueError
messages naming the file. No ComfyUI imports.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("FreeCure")

PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime(needed_by: str = "this model", advice: str = ""):
    """The onnxruntime module; ImportError "FreeCure: <needed_by> needs onnxruntime: pip install onnxruntime
    (or onnxruntime-gpu)<advice>" when it is not installed."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"FreeCure: {needed_by} needs onnxruntime: pip install onnxruntime "
                          f"(or onnxruntime-gpu){advice}") from e
    return onnxruntime


def default_providers(available: list[str]) -> list[str]:
    """CUDA then CPU, keeping only those this onnxruntime build offers (all of `available` if none match)."""
    chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    return chosen or list(available)


def open_session(path, what: str, providers: list[str] | None = None, advice: str = "",
                 source: str = "the insightface pack"):
    """(onnxruntime session, providers asked for) for the .onnx file `path`; `what` names the model in errors
    ("face detector"). providers default to default_providers(this build's providers).

    FileNotFoundError when the file is missing; ImportError (with `advice`) without onnxruntime; ValueError
    when onnxruntime cannot read it (truncated, corrupt, not ONNX), telling to copy it again from `source`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FreeCure: {what} file {path} not found")
    ort = import_onnxruntime(f"the {what}", advice)
    available = list(ort.get_available_providers())
    wanted = list(providers) if providers else default_providers(available)
    try:
        session = ort.InferenceSession(str(path), providers=wanted)
    except Exception as e:  # truncated download, random bytes, not an ONNX graph
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"FreeCure: onnxruntime cannot load the {what} {path} ({first}); the file is "
                         f"truncated, corrupt or not an ONNX model: copy it again from {source}") from e
    return session, wanted


def log_providers(what: str, path, wanted: list[str], running: list[str]) -> None:
    """Log the provider a session runs on (`running`, from session.get_providers()); a warning when it is not
    the first one asked for."""
    name = Path(path).name
    if running and running[0] != wanted[0]:
        log.warning("FreeCure: %s %s asked for %s but runs on %s", what, name, wanted[0], running[0])
    else:
        log.info("FreeCure: %s %s runs on %s", what, name, running[0] if running else "?")
