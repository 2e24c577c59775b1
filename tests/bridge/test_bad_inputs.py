"""Bad inputs in-process (ComfyUI imported, the pack loaded as ComfyUI loads it).

* file names from a prompt never leave ComfyUI's model folders: '../..', absolute and Windows-style paths are refused
  by every FreeCure file resolver before any folder is searched, and a sentinel file outside the models folder
  (a valid parser) is never loaded; ComfyUI's own lookup does not find it either;
* fixed-choice inputs (face_detector, provider, device, layers, sampler_name, ...) are checked on every node, V3 and
  V1, before the node runs: ComfyUI does not check V3 combo values at queue time, so a prompt could send a path
  as face_detector or 'TPU' as provider; the error names the node, the input and its choices;
* optional dependencies absent (sys.modules tricks): without onnxruntime the parser loader's 'auto' detector parses
  whole images and says what to install, an explicit detector and the InstantID face analysis name
  `pip install onnxruntime`; without segment-anything SAM Refine names `pip install segment-anything` before
  looking for a checkpoint;
* SAM Refine's region mask must match the image (size and batch), checked before a model is loaded.
"""
from __future__ import annotations

import sys

import pytest
import torch

import folder_paths
from freecure_core.comfy_bridge import face_parsing, model_paths
from freecure_core.parsing.bisenet import random_bisenet, save_bisenet
from support.comfy_folders import models_dir
from support.pack_loader import pack_nodes

PACK = "freecure_pack_bad_inputs"
FOLDERS = ("face_parsing", "facedetection", "sams", "instantid", "insightface")
HOSTILE_NAMES = ["../../outside/parser.safetensors", "../outside/parser.safetensors", "/etc/passwd",
                 "..\\..\\outside\\parser.safetensors", "sub/../../outside/parser.safetensors",
                 "C:\\Windows\\win.ini", "facedetection/../../outside/parser.safetensors"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A ComfyUI models folder with a parser, an antelopev2 stand-in pack, and a valid parser OUTSIDE it."""
    root = tmp_path_factory.mktemp("bad_inputs")
    models = root / "models"
    (models / "face_parsing").mkdir(parents=True)
    save_bisenet(random_bisenet(0), models / "face_parsing" / "parser.safetensors")
    (root / "outside").mkdir()
    save_bisenet(random_bisenet(0), root / "outside" / "parser.safetensors")  # loads fine if anything reads it
    from support.onnx_detector import write_model_pack
    from support.onnx_recognizer import add_recognizer_to_pack
    write_model_pack(models, "antelopev2")
    add_recognizer_to_pack(models / "insightface" / "models" / "antelopev2")
    return models


@pytest.fixture(scope="module")
def nodes(models):
    with models_dir(models, FOLDERS):
        yield pack_nodes(PACK)


# ------------------------------------------------------------------------------------------ paths
RESOLVERS = {"face_parsing": model_paths.parser_path, "sams": model_paths.sam_path,
             "instantid": model_paths.instantid_path}


@pytest.mark.parametrize("folder", list(RESOLVERS))
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_paths_out_of_the_model_folders_are_refused_before_any_lookup(nodes, monkeypatch, folder, name):
    looked = []
    monkeypatch.setattr(folder_paths, "get_full_path", lambda *a: looked.append(a))
    with pytest.raises(ValueError) as info:
        RESOLVERS[folder](name)
    text = str(info.value)
    assert text.startswith("FreeCure:") and repr(name) in text and "is not allowed" in text, text
    assert f"ComfyUI/models/{folder}/" in text and "'..' are refused" in text, text
    assert looked == []


def test_comfyui_lookup_does_not_escape_either_and_subfolders_still_work(nodes, models):
    """Defence in depth: ComfyUI 0.3.75's get_full_path re-roots '../' and absolute names inside the folder."""
    outside = models.parent / "outside" / "parser.safetensors"
    assert outside.is_file()
    for name in ("../outside/parser.safetensors", str(outside)):
        assert folder_paths.get_full_path("face_parsing", name) is None
    (models / "face_parsing" / "sub").mkdir(exist_ok=True)
    (models / "face_parsing" / "sub" / "p.safetensors").write_bytes((models / "face_parsing" /
                                                                     "parser.safetensors").read_bytes())
    assert model_paths.parser_path("sub/p.safetensors") == str(models / "face_parsing" / "sub" / "p.safetensors")


@pytest.mark.parametrize("name", ["../outside/parser.safetensors", "../../outside/parser.safetensors"])
def test_the_loader_node_never_loads_the_sentinel_outside(nodes, name):
    with pytest.raises(ValueError, match="is not allowed"):
        nodes["FreeCureFaceParserLoader"].execute(parser=name, face_detector="none", device="cpu")


@pytest.mark.parametrize("pack", ["../../../outside", "/tmp", "antelopev2/../../x", "buffalo_s"])
def test_detector_pack_names_are_not_paths(nodes, pack):
    with pytest.raises(ValueError, match="face_detector .* is not one of auto, antelopev2, buffalo_l"):
        model_paths.detector_folder(pack)
    with pytest.raises(ValueError, match=r"FreeCure Face Parser Loader: face_detector .* is not one of its choices"):
        nodes["FreeCureFaceParserLoader"].execute(parser="parser.safetensors", face_detector=pack, device="cpu")


# ------------------------------------------------------------------------------------------ combo values
def test_every_fixed_choice_input_is_checked_v3_and_v1(nodes):
    specs, spec_mod = sys.modules[PACK + ".nodes"].SPECS, sys.modules[PACK + ".nodes.spec"]
    combos = [(s, i) for s in specs for i in s.inputs if i.kind == "COMBO" and not callable(i.options)]
    checked = set()
    for spec, combo in combos:
        kwargs = {i.name: (i.default if i.default is not None else i.options[0]) if (i.kind == "COMBO" and not
                           callable(i.options)) else None for i in spec.inputs}
        kwargs[combo.name] = "../../not-a-choice"
        for node in (nodes[spec.node_id], spec_mod.to_v1(spec)()):
            with pytest.raises(ValueError) as info:
                node.execute(**kwargs)
            text = str(info.value)
            assert text.startswith(f"FreeCure: {spec.display_name}: {combo.name} '../../not-a-choice' is not one "
                                   "of its choices"), text
            assert str(list(combo.options() if callable(combo.options) else combo.options)[0]) in text
        checked.add((spec.node_id, combo.name))
    assert {("FreeCureFaceParserLoader", "face_detector"), ("FreeCureInstantIDFaceAnalysis", "provider"),
            ("FreeCureSampler", "sampler_name"), ("FreeCureFASAConfig", "layers")} <= checked


# ------------------------------------------------------------------------------------------ optional deps
def test_without_onnxruntime_auto_parses_whole_images_and_explicit_detectors_say_what_to_install(nodes,
                                                                                                monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    loaded = face_parsing.load_face_parser("parser.safetensors", "auto", "cpu")
    assert loaded.detector is None and "pip install onnxruntime" in loaded.note and "whole images" in loaded.note
    with pytest.raises(ImportError, match="pip install onnxruntime"):
        nodes["FreeCureFaceParserLoader"].execute(parser="parser.safetensors", face_detector="antelopev2",
                                                  device="cpu")
    with pytest.raises(ImportError, match=r"InstantID face analysis needs onnxruntime: pip install onnxruntime"):
        nodes["FreeCureInstantIDFaceAnalysis"].execute(provider="CPU")


def test_without_segment_anything_sam_refine_says_what_to_install_first(nodes, monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    image = torch.rand(1, 32, 32, 3)
    with pytest.raises(ImportError, match="pip install segment-anything"):  # not "sam_vit_b... not found"
        nodes["FreeCureSAMRefine"].execute(image=image, sam_model="sam_vit_b_01ec64.pth", combine="replace",
                                           device="cpu", box="1,1,20,20")


@pytest.mark.parametrize("region,message", [
    (torch.ones(1, 16, 16), r"region mask is 16x16 but the image is 32x24"),
    (torch.ones(3, 24, 32), r"region has 3 masks for 2 images"),
    (torch.ones(24, 32, 3), r"region mask is 3x32 but the image is 32x24"),
])
def test_sam_region_must_match_the_image_before_a_model_is_loaded(nodes, region, message):
    with pytest.raises(ValueError, match=message):
        nodes["FreeCureSAMRefine"].execute(image=torch.rand(2, 24, 32, 3), sam_model="missing.pth",
                                           combine="union", device="cpu", region=region)
