"""ArcFace alignment and recognizer, checked against scikit-image and a stand-in ONNX recognizer whose output
is known in closed form (see tests/support/onnx_recognizer.py)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from freecure_core.identity import arcface  # noqa: E402
from freecure_core.identity.arcface import (ARCFACE_DST, ArcFaceRecognizer, find_recognizer_file,  # noqa: E402
                                            norm_crop, similarity_transform)
from support import onnx_detector, onnx_recognizer as standin  # noqa: E402


def _skimage_similarity(src, dst):
    from skimage.transform import SimilarityTransform
    if hasattr(SimilarityTransform, "from_estimate"):
        return SimilarityTransform.from_estimate(src, dst).params[:2]
    t = SimilarityTransform()
    assert t.estimate(src, dst)
    return t.params[:2]


def _crops(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("arcface")
    return {"plain": standin.build_standin_recognizer(root / "plain.onnx"),
            "sub": standin.build_standin_recognizer(root / "sub.onnx", with_sub=True),
            "fixed": standin.build_standin_recognizer(root / "fixed.onnx", dynamic_batch=False, embedding_dim=64,
                                                      seed=3)}


# --- alignment -----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_similarity_transform_matches_skimage(seed):
    rng = np.random.default_rng(seed)
    src = ARCFACE_DST.astype(np.float64) * rng.uniform(0.5, 4) + rng.uniform(-50, 200, 2)
    src = src + rng.normal(0, 3, src.shape)  # not an exact similarity: the least-squares fit matters
    if seed % 2:
        src[:, 0] = -src[:, 0]  # mirrored points: the fit must stay a rotation, not a reflection
    m = similarity_transform(src, ARCFACE_DST)
    np.testing.assert_allclose(m, _skimage_similarity(src, ARCFACE_DST.astype(np.float64)), atol=1e-6)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_transform_recovers_exact_transform():
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.random.default_rng(0).uniform(0, 100, (5, 2))
    m = similarity_transform(src, src @ rot.T + shift)
    np.testing.assert_allclose(m, np.concatenate([rot, shift[:, None]], axis=1), atol=1e-9)


def test_similarity_transform_rejects_degenerate_points():
    with pytest.raises(ValueError, match="FreeCure: cannot align"):
        similarity_transform(np.ones((5, 2)), ARCFACE_DST)
    with pytest.raises(ValueError, match="FreeCure: similarity_transform needs"):
        similarity_transform(np.ones((5, 2)), np.ones((4, 2)))


@pytest.mark.parametrize("size", [112, 224])
def test_norm_crop_of_template_keypoints_is_identity(size):
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    crop = norm_crop(image, ARCFACE_DST * (size / 112), size=size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, image)


def test_norm_crop_scales_and_shifts():
    """Keypoints at 2 x template + (30, 40): the crop samples the image at 2 p + (30, 40)."""
    h, w = 300, 320
    ys, xs = np.mgrid[:h, :w]
    image = np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=-1).astype(np.uint8)  # linear ramps
    crop = norm_crop(image, ARCFACE_DST * 2 + np.array([30, 40], np.float32))
    np.testing.assert_allclose(similarity_transform(ARCFACE_DST * 2 + [30, 40], ARCFACE_DST),
                               [[0.5, 0, -15], [0, 0.5, -20]], atol=1e-6)
    assert crop[10, 20].tolist() == image[40 + 20, 30 + 40].tolist()  # pixel (x=20, y=10) -> (70, 60)
    assert crop[100, 5].tolist() == image[40 + 200, 30 + 10].tolist()


def test_norm_crop_outside_is_black_and_checks_inputs():
    image = np.full((50, 50, 3), 200, np.uint8)
    crop = norm_crop(image, ARCFACE_DST - 60)  # the face at the top-left corner: crop (x, y) -> image (x-60, y-60)
    assert crop[0, 0].tolist() == [0, 0, 0]
    assert crop[80, 80].tolist() == [200, 200, 200]
    with pytest.raises(ValueError, match="FreeCure: norm_crop needs 5 keypoints"):
        norm_crop(image, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="FreeCure: norm_crop expects an RGB uint8"):
        norm_crop(image.astype(np.float32), ARCFACE_DST)


# --- finding the file ----------------------------------------------------------------------------

def test_find_recognizer_file(tmp_path):
    for name in ("scrfd_10g_bnkps.onnx", "det_10g.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"FreeCure: no face recognizer in .*glintr100\.onnx or "
                                                r"w600k_r50\.onnx"):
        find_recognizer_file(tmp_path)
    (tmp_path / "my_arcface.onnx").write_bytes(b"")
    assert find_recognizer_file(tmp_path).name == "my_arcface.onnx"
    (tmp_path / "w600k_r50.onnx").write_bytes(b"")
    assert find_recognizer_file(tmp_path).name == "w600k_r50.onnx"
    (tmp_path / "glintr100.onnx").write_bytes(b"")
    assert find_recognizer_file(tmp_path).name == "glintr100.onnx"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_recognizer_file(tmp_path / "missing")


# --- the recognizer ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, mean_std", [("plain", (127.5, 127.5)), ("sub", (0.0, 1.0))])
def test_embed_matches_reference(models, kind, mean_std):
    rec = ArcFaceRecognizer.load(models[kind])
    assert (rec.input_mean, rec.input_std) == mean_std
    assert rec.embedding_dim == 512 and rec.batch_size is None
    crops = _crops(3)
    emb = rec.embed(crops)
    assert emb.shape == (3, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, standin.reference_embed(crops), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rec.embed(crops[1]), emb[1:2], rtol=1e-6, atol=1e-6)  # one crop, no batch axis


def test_wrong_normalisation_would_be_caught(models):
    """The stand-in is sensitive to the normalisation: feeding the Sub/Mul graph normalised pixels differs."""
    rec = ArcFaceRecognizer.load(models["sub"])
    rec.input_mean, rec.input_std = 127.5, 127.5
    crops = _crops(1)
    assert not np.allclose(rec.embed(crops), standin.reference_embed(crops), atol=1e-2)


def test_channel_order_is_rgb(models):
    rec = ArcFaceRecognizer.load(models["plain"])
    red, blue = np.zeros((112, 112, 3), np.uint8), np.zeros((112, 112, 3), np.uint8)
    red[..., 0] = 255
    blue[..., 2] = 255
    e_red, e_blue = rec.embed(red), rec.embed(blue)
    assert not np.allclose(e_red, e_blue, atol=1e-2)
    np.testing.assert_allclose(e_red, standin.reference_embed(red), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e_blue, standin.reference_embed(blue), rtol=1e-5, atol=1e-5)


def test_fixed_batch_model_runs_in_chunks(models):
    rec = ArcFaceRecognizer.load(models["fixed"])
    assert rec.batch_size == 1 and rec.embedding_dim == 64
    crops = _crops(3, seed=5)
    np.testing.assert_allclose(rec.embed(crops), standin.reference_embed(crops, 64, seed=3), rtol=1e-5, atol=1e-5)
    assert rec.embed(crops[:0]).shape == (0, 64)


def test_providers_are_what_runs(models, caplog):
    rec = ArcFaceRecognizer.load(models["plain"], providers=["CPUExecutionProvider"])
    assert rec.providers == list(rec.session.get_providers()) == ["CPUExecutionProvider"]
    default = ArcFaceRecognizer.load(models["plain"])
    assert default.providers == list(default.session.get_providers())
    assert default.providers[0] in ort.get_available_providers()


def test_normalisation_defaults_without_onnx(models, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    assert arcface.graph_normalisation(models["sub"]) == (127.5, 127.5)


def test_load_errors(models, tmp_path):
    with pytest.raises(FileNotFoundError, match="FreeCure: face recognizer file .* not found"):
        ArcFaceRecognizer.load(tmp_path / "nope.onnx")
    det = onnx_detector.build_standin_detector(tmp_path / "det_10g.onnx")
    with pytest.raises(ValueError, match=r"FreeCure: .*det_10g\.onnx is not an ArcFace recognizer"):
        ArcFaceRecognizer.load(det)


def test_embed_rejects_bad_input(models):
    rec = ArcFaceRecognizer.load(models["plain"])
    with pytest.raises(ValueError, match="FreeCure: embed expects aligned RGB uint8 crops"):
        rec.embed(np.zeros((2, 100, 100, 3), np.uint8))
    with pytest.raises(ValueError, match="norm_crop first"):
        rec.embed(np.zeros((112, 112, 3), np.float32))
