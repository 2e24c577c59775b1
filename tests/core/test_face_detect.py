"""SCRFD face detector: finding the file, providers, and decoding checked against a stand-in ONNX detector
whose detections are known analytically (see tests/support/onnx_detector.py)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from freecure_core.parsing.face_detect import FaceDetector, find_detector_file  # noqa: E402
from support import onnx_detector as standin  # noqa: E402

# One painted square per stride: (row, col) of the cell in the network input grid.
CELLS = {8: (5, 10), 16: (4, 10), 32: (4, 6)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """<tmp>/insightface/models/{antelopev2,buffalo_l}/ with the stand-in under each pack's file name."""
    root = tmp_path_factory.mktemp("models")
    standin.write_model_pack(root, "antelopev2")
    standin.write_model_pack(root, "buffalo_l")
    return root / "insightface" / "models"


@pytest.fixture(scope="module")
def detector(models):
    return FaceDetector.load(find_detector_file(models / "antelopev2"))


def painted(h: int, w: int, net: int = 640, cells=CELLS):
    """A black (h, w) image with one pure-colour square per stride, and the boxes the detector must return.

    The image is letterboxed as insightface does (standin.letterbox_scales); each square covers its stride
    cell's pixels scaled back to the image, rounded outwards (so the cell is fully coloured after resizing).
    """
    image, boxes = standin.paint_cells(np.zeros((h, w, 3), np.uint8), [(s, r, c) for s, (r, c) in cells.items()],
                                       (net, net))
    return image, dict(zip(cells, boxes))


def _by_size(faces):
    return sorted(faces, key=lambda f: f.box[2] - f.box[0])  # stride 8, 16, 32


# --- finding the file and loading ---------------------------------------------------------------

def test_find_detector_file_in_both_pack_layouts(models):
    assert find_detector_file(models / "antelopev2").name == "scrfd_10g_bnkps.onnx"
    assert find_detector_file(models / "buffalo_l").name == "det_10g.onnx"


def test_find_detector_file_falls_back_to_det_or_scrfd_prefix(tmp_path):
    (tmp_path / "1k3d68.onnx").write_bytes(b"x")  # other pack members are ignored
    (tmp_path / "det_2.5g.onnx").write_bytes(b"x")
    assert find_detector_file(tmp_path).name == "det_2.5g.onnx"


def test_find_detector_file_errors_name_folder_and_files(tmp_path):
    (tmp_path / "glintr100.onnx").write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as e:
        find_detector_file(tmp_path)
    assert str(tmp_path) in str(e.value) and "scrfd_10g_bnkps.onnx" in str(e.value) and "det_10g.onnx" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_detector_file(tmp_path / "antelopev2")


def test_load_reads_signature_and_real_providers(detector):
    assert detector.input_name == "input.1" and detector.input_size == (640, 640)
    assert detector.output_names == ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    assert detector.providers == detector.session.get_providers()
    assert detector.providers[0] in ort.get_available_providers()


def test_silent_cpu_fallback_is_reported(models, monkeypatch, caplog):
    """onnxruntime-gpu without a usable CUDA builds a CPU session: .providers and the log must say so."""
    real_session = ort.InferenceSession
    asked = {}

    def session(path, providers=None, **kw):
        asked["providers"] = providers
        return real_session(path, providers=["CPUExecutionProvider"], **kw)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    with caplog.at_level(logging.INFO, logger="FreeCure"):
        det = FaceDetector.load(find_detector_file(models / "buffalo_l"))
    assert asked["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert det.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text and "runs on CPUExecutionProvider" in caplog.text


# --- decoding ------------------------------------------------------------------------------------

@pytest.mark.parametrize("h, w", [(960, 1280), (1280, 960), (240, 320), (700, 1000)],
                         ids=["landscape-down", "portrait-down", "upscaled", "scale-0.64"])
def test_detect_decodes_boxes_and_keypoints_in_image_pixels(detector, h, w):
    image, expected = painted(h, w)
    faces = detector.detect(image)
    assert len(faces) == 3
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    for s, face in zip((8, 16, 32), _by_size(faces)):
        x0, y0, x1, y1 = expected[s]
        np.testing.assert_allclose(face.box, expected[s], atol=1e-3)
        assert face.score > 0.9
        corners_and_centre = [(x0, y0), (x1, y0), (x0, y1), (x1, y1), ((x0 + x1) / 2, (y0 + y1) / 2)]
        assert face.kps.shape == (5, 2)
        np.testing.assert_allclose(face.kps, corners_and_centre, atol=1e-3)


def test_nms_drops_the_overlapping_second_anchor(detector):
    image, expected = painted(960, 1280)
    assert len(detector.detect(image, nms_iou=0.4)) == 3
    faces = detector.detect(image, nms_iou=0.8)  # IoU of the two anchors is 1 / 1.44 = 0.69
    assert len(faces) == 6
    for s in (8, 16, 32):
        x0, y0, x1, y1 = expected[s]
        g = 0.1 * (x1 - x0)
        pair = [f for f in faces if abs(f.box[0] - x0) < g + 1e-3 and abs(f.box[1] - y0) < g + 1e-3]
        first, second = sorted(pair, key=lambda f: -f.score)
        np.testing.assert_allclose(first.box, expected[s], atol=1e-3)
        np.testing.assert_allclose(second.box, (x0 - g, y0 - g, x1 + g, y1 + g), atol=1e-3)
        assert second.score == pytest.approx(first.score * standin.ANCHOR1_FACTOR, rel=1e-4)


def test_threshold_and_plain_photo(detector):
    from skimage import data
    assert detector.detect(data.astronaut()) == []  # no pure-colour cells in a photo
    image, _ = painted(960, 1280)
    assert detector.detect(image, threshold=0.9999) == []


@pytest.mark.parametrize("variant", [dict(order="interleaved"), dict(order="reversed"), dict(batch_dim=True),
                                     dict(with_kps=False), dict(dynamic=True)],
                         ids=["interleaved", "reversed", "batch-dim", "no-kps", "dynamic"])
def test_outputs_are_matched_by_shape_not_position(tmp_path, variant):
    det = FaceDetector.load(standin.build_standin_detector(tmp_path / "det_variant.onnx", **variant))
    image, expected = painted(960, 1280)
    faces = _by_size(det.detect(image))
    assert len(faces) == 3
    for s, face in zip((8, 16, 32), faces):
        np.testing.assert_allclose(face.box, expected[s], atol=1e-3)
        assert (face.kps is None) == (variant.get("with_kps") is False)


def test_dynamic_model_uses_max_size(tmp_path):
    det = FaceDetector.load(standin.build_standin_detector(tmp_path / "det_dyn.onnx", dynamic=True))
    assert det.input_size is None and det.network_size(320) == (320, 320) and det.network_size(300) == (320, 320)
    image, expected = painted(480, 640, net=320)  # scale 0.5 into a 320 x 320 input
    faces = _by_size(det.detect(image, max_size=320))
    assert len(faces) == 3
    for s, face in zip((8, 16, 32), faces):
        np.testing.assert_allclose(face.box, expected[s], atol=1e-3)


def test_detect_rejects_wrong_images(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detector.detect(np.zeros((64, 64), np.uint8))


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        FaceDetector.load(tmp_path / "missing.onnx")
