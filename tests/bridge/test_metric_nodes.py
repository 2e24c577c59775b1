"""Evaluation nodes in-process (issue 8): models listed and loaded from ComfyUI folders (models/clip_eval,
models/lpips, models/insightface), values equal to freecure_core.eval computed directly, clear errors."""
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from support import onnx_recognizer
from support.comfy_folders import models_dir
from support.pack_loader import pack_nodes
from support.tiny_eval_models import make_tiny_clip, make_tiny_lpips

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROMPT = "a photo of a woman with blonde curly hair, wearing sunglasses"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    subprocess.run([sys.executable, str(ROOT / "tests" / "e2e" / "make_parsing_models.py"), str(root)], check=True)
    onnx_recognizer.add_recognizer_to_pack(root / "models" / "insightface" / "models" / "antelopev2")
    make_tiny_clip(root / "models" / "clip_eval" / "tiny_clip")
    make_tiny_lpips(root / "models" / "lpips" / "lpips_alex.safetensors")
    return root


@pytest.fixture(scope="module")
def nodes(models_root):
    with models_dir(models_root / "models", ("face_parsing", "facedetection", "sams", "insightface", "clip_eval", "lpips")):
        yield pack_nodes("freecure_pack_metrics")


def _portrait(models_root) -> torch.Tensor:
    img = Image.open(models_root / "input" / "astronaut_640.png").convert("RGB")
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)[None]


def _u8(t: torch.Tensor, i=0) -> np.ndarray:
    """The pixels ComfyUI's SaveImage (and the peer packs) make of an IMAGE: x 255, truncated."""
    return (t[i].numpy() * np.float32(255)).astype(np.uint8)


def test_loaders_list_and_load_from_comfy_folders(nodes, models_root):
    info = nodes["FreeCureCLIPScoreLoader"].GET_NODE_INFO_V1()
    assert info["input"]["required"]["clip_folder"][1]["options"] == ["tiny_clip"]
    assert info["category"] == "FreeCure/evaluate"
    clip = nodes["FreeCureCLIPScoreLoader"].execute(clip_folder="tiny_clip").result[0]
    assert clip.name == "tiny_clip" and clip.size == 32
    with pytest.raises(FileNotFoundError, match="models/clip_eval/clip-vit-large-patch14/"):
        nodes["FreeCureCLIPScoreLoader"].execute(clip_folder="clip-vit-large-patch14")
    with pytest.raises(ValueError, match="not allowed"):
        nodes["FreeCureCLIPScoreLoader"].execute(clip_folder="../../x")
    lp = nodes["FreeCureLPIPSLoader"].execute(lpips_file="lpips_alex.safetensors", alexnet_file="none", size=64)
    assert lp.result[0].size == 64
    with pytest.raises(FileNotFoundError, match="models/lpips/"):
        nodes["FreeCureLPIPSLoader"].execute(lpips_file="alex.pth", alexnet_file="none", size=64)


def test_identity_similarity_node(nodes, models_root):
    fa = nodes["FreeCureInstantIDFaceAnalysis"].execute(provider="CPU").result[0]
    ref = _portrait(models_root)
    blank = torch.zeros_like(ref)
    out = nodes["FreeCureIdentitySimilarity"].execute(face_analysis=fa, reference=ref, images=torch.cat([ref, blank]))
    mean, text = out.result
    assert mean == pytest.approx(50.0, abs=1e-4)  # 100 for the same photo, 0 for the image without a face
    assert "face found in 1" in text and "100.00, —" in text and out.ui["text"] == [text]
    with pytest.raises(ValueError, match="no face found in reference image 1"):
        nodes["FreeCureIdentitySimilarity"].execute(face_analysis=fa, reference=blank, images=ref)


def test_prompt_consistency_and_attribute_nodes(nodes, models_root):
    from freecure_core.eval.attribute_accuracy import attribute_zero_shot
    clip = nodes["FreeCureCLIPScoreLoader"].execute(clip_folder="tiny_clip").result[0]
    images = torch.cat([_portrait(models_root), _portrait(models_root).flip(2)])
    mean, text = nodes["FreeCurePromptConsistency"].execute(clip_scorer=clip, images=images, prompt=PROMPT).result
    expected = [float(clip.clip_t([_u8(images, i)], [PROMPT])[0]) for i in range(2)]
    assert mean == pytest.approx(np.mean(expected), abs=1e-6) and "over 2 image(s)" in text
    with pytest.raises(ValueError, match="needs the prompt"):
        nodes["FreeCurePromptConsistency"].execute(clip_scorer=clip, images=images, prompt=" ")

    acc, text = nodes["FreeCureAttributeAccuracy"].execute(clip_scorer=clip, images=images, prompt=PROMPT,
                                                           subject="a woman").result
    probs = [p for i in range(2) for p in attribute_zero_shot(clip, _u8(images, i), PROMPT, "a woman").values()]
    assert acc == pytest.approx(np.mean([p > 0.5 for p in probs])) and "requested: hair, glasses" in text
    # with a face parse of the same images: parsed regions join the judgements
    loader = nodes["FreeCureFaceParserLoader"].execute(parser="tiny_bisenet.safetensors", face_detector="none",
                                                       device="cpu").result[0]
    parse = nodes["FreeCureFaceParse"].execute(face_parser=loader, image=images, mode="whole image",
                                               crop_margin=0.5).result[0]
    acc2, text2 = nodes["FreeCureAttributeAccuracy"].execute(clip_scorer=clip, images=images, prompt=PROMPT,
                                                             subject="a woman", face_parse=parse).result
    assert "parsed regions present" in text2 and 0.0 <= acc2 <= 1.0
    nothing, text3 = nodes["FreeCureAttributeAccuracy"].execute(clip_scorer=clip, images=images, prompt="a woman",
                                                                subject="a woman").result
    assert math.isnan(nothing) and "asks for no face attribute" in text3
    with pytest.raises(ValueError, match="2 label maps for 1 images"):
        nodes["FreeCureAttributeAccuracy"].execute(clip_scorer=clip, images=images[:1], prompt=PROMPT,
                                                   subject="a woman", face_parse=parse)


def test_face_diversity_node(nodes, models_root):
    from freecure_core.eval.identity import IdentityScorer, crop_box
    fa = nodes["FreeCureInstantIDFaceAnalysis"].execute(provider="CPU").result[0]
    lp = nodes["FreeCureLPIPSLoader"].execute(lpips_file="lpips_alex.safetensors", alexnet_file="none",
                                              size=64).result[0]
    a = _portrait(models_root)
    b = a.clone()
    b[0, :, :, 1] = b[0, :, :, 1] * 0.5  # other colours, the stand-in face square untouched (pure blue)
    value, text = nodes["FreeCureFaceDiversity"].execute(lpips=lp, face_analysis=fa,
                                                         images=torch.cat([a, b, torch.zeros_like(a)])).result
    scorer = IdentityScorer(fa)
    crops = [crop_box(_u8(t), scorer.largest_face(_u8(t)).box, 0.1) for t in (a, b)]
    assert value == pytest.approx(100 * lp.distance(*crops), rel=1e-6) and "from 2 face(s) in 3 image(s)" in text
    single, text = nodes["FreeCureFaceDiversity"].execute(lpips=lp, face_analysis=fa, images=a).result
    assert math.isnan(single) and "at least two faces" in text
