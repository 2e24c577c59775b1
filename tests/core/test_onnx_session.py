"""Opening ONNX models (freecure_core/onnx_session.py): provider choice and the errors for a missing package
or a missing / broken file. The real sessions are tested through the detector and recognizer tests."""
from __future__ import annotations

import sys

import pytest

from freecure_core import onnx_session


def test_default_providers_prefer_cuda_then_cpu():
    default_providers = onnx_session.default_providers
    assert default_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert default_providers(["CPUExecutionProvider", "TensorrtExecutionProvider", "CUDAExecutionProvider"]) \
        == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_without_onnxruntime_the_error_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"FreeCure: the face detector needs onnxruntime: pip install onnxruntime "
                                          r"\(or onnxruntime-gpu\), or choose"):
        onnx_session.import_onnxruntime("the face detector", ", or choose face_detector 'none' to parse whole images")


def test_a_missing_file_is_named_before_onnxruntime_is_needed(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(FileNotFoundError, match="FreeCure: face detector file .*missing.onnx not found"):
        onnx_session.open_session(tmp_path / "missing.onnx", "face detector")


def test_a_broken_file_says_corrupt(tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not an onnx graph")
    with pytest.raises(ValueError, match="FreeCure: onnxruntime cannot load the face recognizer .*truncated, corrupt "
                                         "or not an ONNX model: copy it again from the insightface pack"):
        onnx_session.open_session(path, "face recognizer", ["CPUExecutionProvider"])
