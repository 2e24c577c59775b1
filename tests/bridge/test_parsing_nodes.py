"""Stage-2 nodes in-process: loader (real files in ComfyUI folders), face-crop parsing, attribute masks."""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from support.comfy_folders import models_dir
from support.pack_loader import pack_nodes

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    subprocess.run([sys.executable, str(ROOT / "tests" / "e2e" / "make_parsing_models.py"), str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def nodes(models_root):
    with models_dir(models_root / "models", ("face_parsing", "facedetection", "sams", "insightface")):
        yield pack_nodes("freecure_pack_stage2")


def load_image(models_root, size=None):
    """The 640² test portrait; with size (H, W) it is doubled and cut to that non-square frame (both sides
    <= 1280, so the detector sees it at scale 1/2 and the marked face square stays one detector cell)."""
    img = Image.open(models_root / "input" / "astronaut_640.png").convert("RGB")
    t = torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)[None]
    if size is not None:
        t = t.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)[:, :size[0], :size[1]].contiguous()
    return t


def test_loader_lists_and_loads_files_from_comfy_folders(nodes):
    info = nodes["FreeCureFaceParserLoader"].GET_NODE_INFO_V1()
    assert info["input"]["required"]["parser"][1]["options"] == ["tiny_bisenet.safetensors"]
    loaded = nodes["FreeCureFaceParserLoader"].execute(parser="tiny_bisenet.safetensors", face_detector="auto",
                                                       device="cpu").result[0]
    assert loaded.detector is not None and loaded.detector.providers[0] == "CPUExecutionProvider"
    with pytest.raises(FileNotFoundError, match="models/face_parsing/"):
        nodes["FreeCureFaceParserLoader"].execute(parser="79999_iter.pth", face_detector="none", device="cpu")
    with pytest.raises(FileNotFoundError, match="insightface/models/buffalo_l/"):
        nodes["FreeCureFaceParserLoader"].execute(parser="tiny_bisenet.safetensors", face_detector="buffalo_l",
                                                  device="cpu")


@pytest.mark.parametrize("size", [None, (832, 1280), (1280, 832)])
def test_face_crop_parse_and_attribute_mask(nodes, models_root, size):
    image = load_image(models_root, size)
    loaded = nodes["FreeCureFaceParserLoader"].execute(parser="tiny_bisenet.safetensors", face_detector="auto",
                                                       device="cpu").result[0]
    parse, preview = nodes["FreeCureFaceParse"].execute(face_parser=loaded, image=image, mode="face crop",
                                                        crop_margin=0.5).result
    assert parse.mode == "face crop" and len(parse.faces[0]) == 1
    assert parse.labels.shape == image.shape[:3] and preview.shape == image.shape
    out = nodes["FreeCureAttributeMask"].execute(face_parse=parse, prompt="blonde curly hair, no glasses",
                                                 attributes="", grow=0, feather=0.0, image=image)
    mask, overlay, info = out.result
    assert mask.shape == image.shape[:3] and overlay.shape == image.shape
    assert "hair" in info and "ignored (negated): glasses" in info
    hair_id = parse.schema.id("hair")
    assert torch.equal(mask > 0.5, parse.labels == hair_id)
    # the detected face is where the marked square is, in full-resolution pixels
    scale = 1 if size is None else 2
    assert np.allclose(parse.faces[0][0].box, [192 * scale, 96 * scale, 224 * scale, 128 * scale], atol=1.0)
    # only the crop around the face was parsed and pasted back: far corners stay background
    assert int(parse.labels[0, -1, -1]) == 0 or size is None


def test_manual_attributes_grow_feather_and_empty_warning(nodes, models_root):
    image = load_image(models_root)
    loaded = nodes["FreeCureFaceParserLoader"].execute(parser="tiny_bisenet.safetensors", face_detector="none",
                                                       device="cpu").result[0]
    parse = nodes["FreeCureFaceParse"].execute(face_parser=loaded, image=image, mode="face crop",
                                               crop_margin=0.5).result[0]
    assert parse.mode == "whole image"
    run = lambda **kw: nodes["FreeCureAttributeMask"].execute(face_parse=parse, prompt="", **kw).result[0]
    present = [a for a in parse.schema.attributes
               if 0 < int((parse.labels[..., None] == torch.tensor(parse.schema.ids_for([a]))).any(-1).sum()) < 640 * 640 // 2]
    base = run(attributes=present[0], grow=0, feather=0.0)
    grown = run(attributes=present[0], grow=4, feather=0.0)
    soft = run(attributes=present[0], grow=0, feather=3.0)
    assert grown.sum() > base.sum() and torch.equal(grown[base > 0.5], base[base > 0.5])
    assert 0 <= float(soft.min()) and float(soft.max()) <= 1 and ((soft > 0) & (soft < 1)).any()
    empty = nodes["FreeCureAttributeMask"].execute(face_parse=parse, prompt="a portrait, smiling", attributes="",
                                                   grow=0, feather=0.0)
    assert float(empty.result[0].sum()) == 0 and "WARNING: the mask is empty" in empty.result[2]
    assert empty.ui["text"] == [empty.result[2]]
    with pytest.raises(ValueError, match="unknown attribute"):
        nodes["FreeCureAttributeMask"].execute(face_parse=parse, prompt="", attributes="hair, wings", grow=0,
                                               feather=0.0)


def test_sam_refine_node(nodes, models_root):
    image = load_image(models_root)
    sam = nodes["FreeCureSAMRefine"]
    assert sam.GET_NODE_INFO_V1()["input"]["required"]["sam_model"][1]["options"] == ["tiny_sam_vit_b_keys.pth"]
    region = torch.zeros(1, 640, 640)
    region[:, 80:200, 150:300] = 1
    common = dict(image=image, sam_model="tiny_sam_vit_b_keys.pth", device="cpu")
    refined = sam.execute(combine="intersect", region=region, **common).result[0]
    assert refined.shape == (1, 640, 640) and bool(((refined == 0) | (refined == 1)).all())
    assert float(refined[region == 0].sum()) == 0  # intersect stays inside the region
    boxed = sam.execute(combine="replace", box="150,80,300,200", **common).result[0]
    pointed = sam.execute(combine="replace", points="200,120,1; 20,20,0", **common).result[0]
    assert boxed.shape == pointed.shape == (1, 640, 640)
    with pytest.raises(ValueError, match="something to segment"):
        sam.execute(combine="replace", **common)
    with pytest.raises(ValueError, match="x0,y0,x1,y1"):
        sam.execute(combine="replace", box="1,2,3", **common)
