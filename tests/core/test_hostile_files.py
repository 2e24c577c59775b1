"""Hostile and broken model files, in-process, against every FreeCure loader that reads weights.

* a pickle that would run code when unpickled (its ``__reduce__`` calls ``exec``, which writes a marker file) is
  refused by the BiSeNet parser loader, the SAM loader, the InstantID adapter loader, ``python -m
  freecure_core.convert`` and ``scripts/convert_bisenet.py``, in the zip (.pth), legacy (.bin) and raw-pickle
  formats: the marker is never written and the error says the file holds a pickled object and was refused by
  weights_only loading (never torch's advice to retry with weights_only=False). A control shows the payload is live;
* truncated .safetensors, random bytes, an empty file and a header promising terabytes each give a ValueError that
  names the file and says it is truncated or corrupt (no SafetensorError traceback, nothing huge allocated); so do a
  truncated .pth and broken .onnx detector / recognizer files;
* wrong-architecture files (parser given as SAM, SAM as parser or InstantID adapter, ControlNet as adapter, an
  11-class BiSeNet) are refused saying what the file is not or is.
"""
from __future__ import annotations

import json
import os
import pathlib
import pickle
import re
import struct
import subprocess
import sys

import pytest
import torch

from freecure_core import convert
from freecure_core.identity.instantid_weights import load_instantid
from freecure_core.parsing import bisenet, sam
from support.tiny_instantid import random_instantid_state, write_instantid_bin

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this runs ``exec(code)``: the code writes `marker`. A real attack would do anything else."""

    def __init__(self, marker: pathlib.Path):
        self.code = f"open({str(marker)!r}, 'w').write('code from a model file ran')"

    def __reduce__(self):
        return (exec, (self.code,))


def _write_hostile(path: pathlib.Path, marker: pathlib.Path, fmt: str) -> pathlib.Path:
    """A weights file with a tensor and the payload next to it, in one of three pickle containers."""
    obj = {"state_dict": {"conv.weight": torch.zeros(2, 2)}, "evil": Payload(marker)}
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


def _run_cli(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              [str(ROOT), str(ROOT / "tests")] + os.environ.get("PYTHONPATH", "").split(os.pathsep))))


def _cli_error(*args, script: bool = False) -> str:
    """stderr of a failing CLI run: the module CLI prints only the message; the script (which has no error
    handling of its own) may show a traceback, but its last line is FreeCure's message."""
    done = _run_cli(*args)
    assert done.returncode != 0, (done.stdout, done.stderr)
    if script:
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("ValueError: FreeCure:"), done.stderr
    else:
        assert "Traceback" not in done.stderr, done.stderr
    return done.stderr


LOADERS = {
    "bisenet parser": lambda p: bisenet.load_face_parser(p),
    "sam": lambda p: sam.load_sam(str(p)),
    "instantid adapter": lambda p: load_instantid(str(p)),
    "convert": lambda p: convert.load_tensors(str(p)),
}
CLIS = {  # subprocesses (2-3 s each): the pickle test runs the writers, the broken-file test the inspector
    "convert info": lambda p, tmp: _cli_error("-m", "freecure_core.convert", "info", p),
    "convert to safetensors": lambda p, tmp: _cli_error("-m", "freecure_core.convert", p, tmp / "out.safetensors"),
    "scripts/convert_bisenet.py": lambda p, tmp: _cli_error(ROOT / "scripts" / "convert_bisenet.py", p,
                                                            tmp / "out.safetensors", script=True),
}


def _message(loader: str, path: pathlib.Path, tmp: pathlib.Path) -> str:
    if loader in CLIS:
        return CLIS[loader](path, tmp)
    with pytest.raises(ValueError) as info:
        LOADERS[loader](path)
    return str(info.value)


# ------------------------------------------------------------------------------------------ pickles with code
def test_the_payload_is_live(tmp_path):
    """Control: plain pickle.loads does run the payload, so the refusals below are not vacuous."""
    marker = tmp_path / "marker"
    path = _write_hostile(tmp_path / "evil.pth", marker, "raw")
    pickle.loads(path.read_bytes())
    assert marker.read_text() == "code from a model file ran"


FORMATS = [("zip", ".pth"), ("legacy", ".bin"), ("raw", ".pt")]
PICKLE_CASES = ([(loader, fmt, suffix) for loader in LOADERS for fmt, suffix in FORMATS]
                + [(cli, "zip", ".pth") for cli in ("convert to safetensors", "scripts/convert_bisenet.py")])


@pytest.mark.parametrize("loader,fmt,suffix", PICKLE_CASES, ids=[f"{l}-{f}" for l, f, _ in PICKLE_CASES])
def test_pickle_with_code_is_refused_without_running(tmp_path, loader, fmt, suffix):
    if loader.startswith("sam"):
        pytest.importorskip("segment_anything")
    marker = tmp_path / "marker"
    path = _write_hostile(tmp_path / f"evil{suffix}", marker, fmt)
    text = _message(loader, path, tmp_path)
    assert not marker.exists(), f"{loader} ran code from {path.name}"
    assert path.name in text and "FreeCure" in text, text
    assert "refusing" in text and "weights_only=True" in text, text
    assert "weights_only=False" not in text and "\x1b" not in text, text
    if fmt != "raw":  # torch's own containers: the offending global is named
        assert re.search(r"pickled (builtins\.)?exec object, not only tensors", text), text
        assert "nothing in it was run" in text, text
    assert not (tmp_path / "out.safetensors").exists()


# ------------------------------------------------------------------------------------------ broken files
def _good_safetensors(path: pathlib.Path) -> bytes:
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(64, 64), "b": torch.ones(16)}, path)
    return path.read_bytes()


def _broken(kind: str, path: pathlib.Path) -> pathlib.Path:
    data = _good_safetensors(path)
    if kind == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif kind == "random bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "huge sizes":  # a valid header claiming a 4 TB tensor the file does not hold
        header = json.dumps({"a": {"dtype": "F32", "shape": [1_000_000, 1_000_000],
                                   "data_offsets": [0, 4_000_000_000_000]}}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 64)
    elif kind == "huge header":
        path.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    return path


BROKEN_KINDS = ["truncated", "random bytes", "empty", "huge sizes", "huge header"]
BROKEN_CASES = [(loader, kind) for loader in LOADERS for kind in BROKEN_KINDS] + [("convert info", "truncated")]


@pytest.mark.parametrize("loader,kind", BROKEN_CASES, ids=[f"{l}-{k}" for l, k in BROKEN_CASES])
def test_broken_safetensors_name_the_file_and_say_corrupt(tmp_path, loader, kind):
    if loader.startswith("sam"):
        pytest.importorskip("segment_anything")
    path = _broken(kind, tmp_path / "model.safetensors")
    text = _message(loader, path, tmp_path)
    assert str(path) in text and "truncated or corrupt" in text and "FreeCure" in text, text
    assert "Traceback" not in text


@pytest.mark.parametrize("loader", list(LOADERS))
def test_truncated_and_random_torch_files_say_damaged(tmp_path, loader):
    if loader.startswith("sam"):
        pytest.importorskip("segment_anything")
    path = tmp_path / "model.pth"
    torch.save({"a": torch.zeros(256, 256)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    text = _message(loader, path, tmp_path)
    assert str(path) in text and "truncated or corrupt" in text, text
    path.write_bytes(os.urandom(2048))
    text = _message(loader, path, tmp_path)
    assert str(path) in text and ("damaged" in text or "corrupt" in text), text


@pytest.mark.parametrize("which", ["detector", "recognizer"])
@pytest.mark.parametrize("kind", ["truncated", "random bytes"])
def test_broken_onnx_files_say_corrupt(tmp_path, which, kind):
    pytest.importorskip("onnxruntime")
    from support.onnx_detector import write_model_pack
    from support.onnx_recognizer import add_recognizer_to_pack
    write_model_pack(tmp_path / "models", "antelopev2")
    pack = tmp_path / "models" / "insightface" / "models" / "antelopev2"
    add_recognizer_to_pack(pack)
    if which == "detector":
        from freecure_core.parsing.face_detect import FaceDetector as cls
        path = pack / "scrfd_10g_bnkps.onnx"
    else:
        from freecure_core.identity.arcface import ArcFaceRecognizer as cls
        path = pack / "glintr100.onnx"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] if kind == "truncated" else os.urandom(len(data)))
    with pytest.raises(ValueError) as info:
        cls.load(path, ["CPUExecutionProvider"])
    text = str(info.value)
    assert text.startswith("FreeCure:") and str(path) in text and "truncated, corrupt or not an ONNX model" in text


# ------------------------------------------------------------------------------------------ wrong architecture
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One small file of each kind FreeCure meets: BiSeNet parser, SAM, InstantID adapter, ControlNet."""
    tmp = tmp_path_factory.mktemp("kinds")
    out = {}
    bisenet.save_bisenet(bisenet.random_bisenet(0), tmp / "parser.safetensors")
    out["parser"] = tmp / "parser.safetensors"
    segment_anything = pytest.importorskip("segment_anything")
    del segment_anything
    from segment_anything.build_sam import _build_sam
    model = _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
    torch.save({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "sam.pth")
    out["sam"] = tmp / "sam.pth"
    write_instantid_bin(tmp / "adapter.bin", random_instantid_state(layers=2))
    out["adapter"] = tmp / "adapter.bin"
    from safetensors.torch import save_file
    save_file({"controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3),
               "controlnet_down_blocks.0.weight": torch.zeros(32, 32, 1, 1),
               "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(32, 64)},
              tmp / "controlnet.safetensors")
    out["controlnet"] = tmp / "controlnet.safetensors"
    return out


WRONG = [  # (file kind, loader, what the message must say)
    ("parser", "sam", r"not an original segment-anything \(SAM v1\) checkpoint.*found conv_out\."),
    ("adapter", "sam", r"not an original segment-anything"),
    ("sam", "bisenet parser", r"not a BiSeNet face-parsing checkpoint.*unexpected key\(s\): image_encoder"),
    ("adapter", "bisenet parser", r"non-tensor entries \['image_proj', 'ip_adapter'\]; it is not a BiSeNet state dict"),
    ("controlnet", "bisenet parser", r"not a BiSeNet face-parsing checkpoint"),
    ("sam", "instantid adapter", r"SAM segmentation checkpoint.*not an InstantID adapter.*models/instantid/"),
    ("parser", "instantid adapter", r"BiSeNet face parser.*not an InstantID adapter"),
    ("controlnet", "instantid adapter", r"ControlNet \(InstantID's IdentityNet belongs in ComfyUI/models/controlnet/"),
]


@pytest.mark.parametrize("kind,loader,message", WRONG, ids=[f"{k} as {l}" for k, l, _ in WRONG])
def test_wrong_architecture_is_named(files, kind, loader, message):
    with pytest.raises(ValueError, match=message) as info:
        LOADERS[loader](files[kind])
    assert str(info.value).startswith("FreeCure:"), info.value


def test_bisenet_with_another_class_count_is_refused(tmp_path):
    path = tmp_path / "eleven.safetensors"
    bisenet.save_bisenet(bisenet.random_bisenet(0, n_classes=11), path)
    with pytest.raises(ValueError, match=r"11-class parser; FreeCure needs the 19-class CelebAMask-HQ BiSeNet"):
        bisenet.load_face_parser(path)
