"""Evaluation metrics on constructed cases (issue 8): identity cosine, CLIP-T and zero-shot on a tiny CLIP built
from a config, LPIPS, attribute accuracy. No ComfyUI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from freecure_core.eval import attribute_accuracy as aa
from freecure_core.eval.clip_score import ClipScorer, clip_t_from_cosine, preprocess
from freecure_core.eval.face_diversity import LIN_KEYS, LpipsScorer, face_diversity, lpips_state
from freecure_core.eval.identity import IdentityScorer, cosine, crop_box
from freecure_core.parsing.schema import CELEBAMASK_HQ_19
from support import onnx_detector, onnx_recognizer
from support.tiny_eval_models import make_tiny_clip, make_tiny_lpips


# ------------------------------------------------------------------------------------------ identity
def test_cosine_constructed_cases():
    a = np.array([3.0, 0.0, 0.0])
    assert cosine(a, a * 7) == pytest.approx(1.0, abs=1e-12)
    assert cosine(a, np.array([0.0, 2.0, 0.0])) == pytest.approx(0.0, abs=1e-12)
    assert cosine(a, -a) == pytest.approx(-1.0, abs=1e-12)
    with pytest.raises(ValueError, match="different recognizers"):
        cosine(a, np.ones(4))
    with pytest.raises(ValueError, match="zero"):
        cosine(a, np.zeros(3))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    folder = onnx_detector.write_model_pack(tmp_path_factory.mktemp("ifpack"), "antelopev2").parent
    onnx_recognizer.add_recognizer_to_pack(folder)
    return IdentityScorer.load(folder)


def _painted(image, cell=(4, 6)):
    """The astronaut with one stand-in "face" (a blue 32-px cell the stand-in detector finds)."""
    from test_face_analysis import paint  # the face-analysis tests' painter
    return paint(image, {32: cell})[0]


def test_identity_similarity_identical_images_is_one(scorer):
    img = _painted(skdata.astronaut())
    assert scorer.similarity([img], img) == pytest.approx(1.0, abs=1e-6)
    e = scorer.embed(img)
    assert e.shape == (512,) and np.linalg.norm(e) == pytest.approx(1.0, abs=1e-9)
    # the same face elsewhere on another photo: embeddings of the crops, independent numpy reference
    other = _painted(skdata.chelsea()[:, :, :3].copy(), (5, 7))
    ref = scorer.largest_face(img)
    got = scorer.largest_face(other)
    expected = cosine(ref.embedding, got.embedding)
    assert scorer.similarity([img], other) == pytest.approx(expected, abs=1e-6)
    # two references: the normalised mean of the unit embeddings
    mean = ref.embedding / np.linalg.norm(ref.embedding) + got.embedding / np.linalg.norm(got.embedding)
    assert scorer.similarity([img, other], img) == pytest.approx(cosine(mean, ref.embedding), abs=1e-6)


def test_identity_similarity_without_faces(scorer):
    photo = skdata.astronaut()
    assert scorer.similarity([_painted(photo)], photo) is None  # no face in the generated image
    with pytest.raises(ValueError, match="no face found in reference image 2"):
        scorer.similarity([_painted(photo), photo], photo)


def test_identity_scorer_missing_pack(tmp_path):
    with pytest.raises(FileNotFoundError, match="antelopev2"):
        IdentityScorer.load(tmp_path / "antelopev2")


def test_crop_box_clips_and_grows():
    img = np.arange(100 * 80 * 3, dtype=np.uint8).reshape(100, 80, 3)
    np.testing.assert_array_equal(crop_box(img, (10, 20, 30, 60)), img[20:60, 10:30])
    assert crop_box(img, (0, 0, 40, 40), margin=0.5).shape == (60, 60, 3)


# ------------------------------------------------------------------------------------------ CLIP
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return ClipScorer.load(make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny_clip"))


def _reference_cosines(scorer, images, texts):
    """Independent CLIP-T: the towers' pooled outputs through the projections, normalised, dot product."""
    m = scorer.model
    x = preprocess(images, scorer.size)
    tok = scorer.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        h = m.text_model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]).last_hidden_state
        eos = tok["input_ids"].eq(49407).int().argmax(-1)  # first end-of-text token pools the text
        t = m.text_projection(h[torch.arange(h.shape[0]), eos])
        v = m.visual_projection(m.vision_model(pixel_values=x).pooler_output)
    t, v = t / t.norm(dim=-1, keepdim=True), v / v.norm(dim=-1, keepdim=True)
    return (t * v).sum(-1).numpy()


def test_tiny_clip_cosine_matches_an_independent_computation(clip):
    images = [skdata.astronaut(), skdata.chelsea()[:, :, :3].copy()]
    texts = ["a photo of a woman with blonde curly hair", "a photo of a cat"]
    got = clip.text_image(images, texts)
    np.testing.assert_allclose(got, _reference_cosines(clip, images, texts), atol=1e-5)
    assert np.all(np.abs(got) <= 1.0)
    np.testing.assert_allclose(clip.clip_t(images, texts), 100 * np.maximum(got, 0), atol=1e-4)
    # one text for all images; identical inputs give identical scores
    same = clip.text_image([images[0], images[0]], texts[0])
    assert same[0] == pytest.approx(same[1], abs=1e-6) and same[0] == pytest.approx(got[0], abs=1e-5)
    with pytest.raises(ValueError, match="2 images but 3 prompts"):
        clip.text_image(images, texts + ["x"])


def test_clip_t_definition():
    np.testing.assert_allclose(clip_t_from_cosine([0.31, -0.2, 0.0]), [31.0, 0.0, 0.0])


def test_preprocess_resizes_short_side_and_centre_crops():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre square is white
    x = preprocess([img], 16, mean=(0, 0, 0), std=(1, 1, 1))
    assert x.shape == (1, 3, 16, 16)
    assert float(x[..., 1:-1].min()) > 0.99 and float(x.min()) > 0.9  # bicubic rings only at the crop edge


def test_zero_shot_is_a_distribution(clip):
    probs = clip.zero_shot(skdata.astronaut(), ["a photo of a person with glasses", "a photo of a person", "a dog"])
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0, abs=1e-6) and (probs > 0).all()
    cos = (clip.image_features([skdata.astronaut()]) @ clip.text_features(
        ["a photo of a person with glasses", "a photo of a person", "a dog"]).T)[0]
    expected = torch.softmax(clip.model.logit_scale.exp() * cos, -1).detach().numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_clip_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*models/clip_eval"):
        ClipScorer.load(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin.*vocab.json"):
        ClipScorer.load(tmp_path / "half")


# ------------------------------------------------------------------------------------------ LPIPS
@pytest.fixture(scope="module")
def lpips(tmp_path_factory):
    return LpipsScorer.load(make_tiny_lpips(tmp_path_factory.mktemp("lpips") / "lpips_alex.safetensors"), size=64)


def test_lpips_identity_symmetry_and_reference(lpips):
    a = skdata.astronaut()
    b = np.ascontiguousarray(a[:, ::-1])
    assert lpips.distance(a, a) == pytest.approx(0.0, abs=1e-7)
    d = lpips.distance(a, b)
    assert d > 0 and d == pytest.approx(lpips.distance(b, a), rel=1e-6)
    # independent computation of the LPIPS formula from the trunk's activations
    net = lpips.net
    x0 = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    x1 = torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255
    x0, x1 = (F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True) * 2 - 1 for x in (x0, x1))
    total = 0.0
    with torch.no_grad():
        h0, h1 = (x0 - net.shift) / net.scale, (x1 - net.shift) / net.scale
        for i, layer in enumerate(net.features[:12]):
            h0, h1 = layer(h0), layer(h1)
            if i in (1, 4, 7, 9, 11):
                k = (1, 4, 7, 9, 11).index(i)
                n0 = h0 / (h0.norm(dim=1, keepdim=True) + 1e-10)
                n1 = h1 / (h1.norm(dim=1, keepdim=True) + 1e-10)
                w = net.lins[k].weight.view(1, -1, 1, 1)
                total += float(((n0 - n1) ** 2 * w).sum(1).mean())
    assert d == pytest.approx(total, rel=1e-5)


def test_face_diversity_is_the_mean_pairwise_distance(lpips):
    a = skdata.astronaut()
    crops = [a[:256, :256], a[256:, 256:], a[:256, 256:]]
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = np.mean([lpips.distance(crops[i], crops[j]) for i, j in pairs])
    assert face_diversity(lpips, crops) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(face_diversity(lpips, crops[:1])) and math.isnan(face_diversity(lpips, [None, crops[0]]))


def test_lpips_files_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="models/lpips"):
        LpipsScorer.load(tmp_path / "alex.pth")
    torch.save({k: torch.zeros(1, 4, 1, 1) for k in LIN_KEYS}, tmp_path / "lin.pth")
    with pytest.raises(ValueError, match="no AlexNet weights"):
        LpipsScorer.load(tmp_path / "lin.pth")
    with pytest.raises(ValueError, match="no LPIPS linear heads"):
        lpips_state({})


def test_lpips_converter_joins_the_two_files(tmp_path, lpips):
    from freecure_core.eval import face_diversity as fd
    net = lpips.net
    torch.save({LIN_KEYS[i]: net.lins[i].weight.detach().clone() for i in range(5)}, tmp_path / "alex.pth")
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}
               | {"classifier.1.weight": torch.zeros(2, 2)}, tmp_path / "alexnet-owt.pth")
    assert fd.main([str(tmp_path / "alex.pth"), str(tmp_path / "alexnet-owt.pth"), str(tmp_path / "j.safetensors")]) == 0
    joined = LpipsScorer.load(tmp_path / "j.safetensors", size=64)
    two = LpipsScorer.load(tmp_path / "alex.pth", tmp_path / "alexnet-owt.pth", size=64)
    a, b = skdata.astronaut(), skdata.astronaut()[::-1].copy()
    assert joined.distance(a, b) == pytest.approx(lpips.distance(a, b), rel=1e-6) == two.distance(a, b)


# ------------------------------------------------------------------------------------------ attributes
def test_attribute_presence_from_a_label_map():
    s = CELEBAMASK_HQ_19
    labels = torch.zeros(100, 100, dtype=torch.long)
    hair = s.ids_for(["hair"])[0]
    labels[:20] = hair  # 20 % hair, no glasses
    got = aa.attribute_presence("a photo of a woman with blonde curly hair, wearing sunglasses, not smiling", labels, s)
    assert got == {"hair": True, "glasses": False}
    assert aa.accuracy(got.values()) == 0.5
    assert aa.attribute_presence("a photo of a man without glasses", labels, s) == {}
    assert math.isnan(aa.accuracy([]))


def test_attribute_zero_shot_uses_the_prompts_words(clip):
    img = skdata.astronaut()
    got = aa.attribute_zero_shot(clip, img, "a photo of a woman with blonde curly hair, wearing sunglasses", "woman")
    assert set(got) == {"hair", "glasses"}
    words = dict(aa.requested_attributes("a photo of a woman with blonde curly hair, wearing sunglasses"))
    p = clip.zero_shot(img, [f"a photo of woman with {words['hair']}", "a photo of woman"])[0]
    assert got["hair"] == pytest.approx(float(p), abs=1e-9)
