"""InstantID face analysis: stand-in SCRFD detector (tests/support/onnx_detector.py) plus stand-in ArcFace
recognizer (tests/support/onnx_recognizer.py) in an antelopev2-shaped folder."""
from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from freecure_core.identity import face_analysis as fa  # noqa: E402
from freecure_core.identity.arcface import ARCFACE_DST, norm_crop  # noqa: E402
from freecure_core.identity.face_analysis import AnalyzedFace, FaceAnalysis  # noqa: E402
from freecure_core.parsing.face_detect import Face  # noqa: E402
from support import onnx_detector, onnx_recognizer  # noqa: E402

# One painted square per stride (row, col of its cell in the 640 network grid): blue 32 px, green 16, red 8.
CELLS = {32: (4, 6), 16: (20, 10), 8: (60, 50)}


def _pack(root, name="antelopev2", recognizer=True, **detector_kw):
    folder = onnx_detector.write_model_pack(root, name, **detector_kw).parent
    if recognizer:
        onnx_recognizer.add_recognizer_to_pack(folder)
    return folder


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    return FaceAnalysis.load(_pack(tmp_path_factory.mktemp("fa")))


@pytest.fixture(scope="module")
def astronaut():
    return skdata.astronaut()  # (512, 512, 3) RGB uint8


def paint(image, cells=CELLS, net=640):
    """A copy of image with the stand-in's pure-colour squares, and the image-pixel box of each (by stride)."""
    image, boxes = onnx_detector.paint_cells(image, [(s, r, c) for s, (r, c) in cells.items()], (net, net))
    return image, dict(zip(cells, boxes))


class FakeDetector:
    """Finds one face only when the network size is at most `finds_below` (None: never); records sizes."""

    def __init__(self, finds_below=448, input_size=None, kps=True):
        self.finds_below, self.input_size, self.kps = finds_below, input_size, kps
        self.providers = ["FakeProvider"]
        self.calls = []

    def network_size(self, max_size=640):
        side = max(32, int(math.ceil(max_size / 32)) * 32)
        return self.input_size or (side, side)

    def detect(self, image, threshold=0.5, nms_iou=0.4, max_size=640):
        self.calls.append(max_size)
        if self.finds_below is None or max_size > self.finds_below:
            return []
        kps = ARCFACE_DST + 100
        return [Face(box=(90.0, 100.0, 200.0, 230.0), score=0.9, kps=kps if self.kps else None)]


# --- analyze ---------------------------------------------------------------------------------------

def test_analyze_astronaut(analysis, astronaut):
    image, boxes = paint(astronaut)
    faces = analysis.analyze(image)
    assert len(faces) == 3 and all(isinstance(f, AnalyzedFace) for f in faces)
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]
    assert areas == sorted(areas, reverse=True) and areas[0] > areas[1] > areas[2]
    h, w = image.shape[:2]
    for face, s in zip(faces, (32, 16, 8)):
        np.testing.assert_allclose(face.box, boxes[s], atol=1e-3)
        assert face.kps.shape == (5, 2) and face.kps.dtype == np.float32
        assert (face.kps >= 0).all() and (face.kps[:, 0] < w).all() and (face.kps[:, 1] < h).all()
        x0, y0, x1, y1 = face.box
        np.testing.assert_allclose(face.kps[4], ((x0 + x1) / 2, (y0 + y1) / 2), atol=1e-3)  # cell centre
        assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
        expected = onnx_recognizer.reference_embed(norm_crop(image, face.kps))[0]
        np.testing.assert_allclose(face.embedding, expected, rtol=1e-5, atol=1e-5)
        assert 0.5 < face.score <= 1.0


def test_analyze_photo_without_faces(analysis, astronaut):
    assert analysis.analyze(astronaut) == []  # the stand-in only "sees" painted squares


def test_analyze_rejects_non_uint8(analysis, astronaut):
    with pytest.raises(ValueError, match="FreeCure: face analysis expects uint8"):
        analysis.analyze(astronaut.astype(np.float32) / 255)


def test_describe_and_providers(analysis):
    p = analysis.providers
    assert p == {"detector": list(analysis.detector.session.get_providers()),
                 "recognizer": list(analysis.recognizer.session.get_providers())}
    assert analysis.describe() == (f"antelopev2: detector on {p['detector'][0]}, "
                                   f"recognizer on {p['recognizer'][0]}")


def test_load_with_explicit_providers(tmp_path):
    fan = FaceAnalysis.load(_pack(tmp_path), providers=["CPUExecutionProvider"])
    assert fan.providers == {"detector": ["CPUExecutionProvider"], "recognizer": ["CPUExecutionProvider"]}
    assert fan.describe() == "antelopev2: detector on CPUExecutionProvider, recognizer on CPUExecutionProvider"


# --- retrying at smaller sizes ---------------------------------------------------------------------

def test_retry_at_smaller_sizes(analysis, astronaut):
    det = FakeDetector(finds_below=448)
    faces = FaceAnalysis(det, analysis.recognizer).analyze(astronaut)
    assert det.calls == [640, 576, 512, 448]
    assert len(faces) == 1 and faces[0].box == (90.0, 100.0, 200.0, 230.0)


def test_retry_gives_up_after_all_sizes(analysis, astronaut):
    det = FakeDetector(finds_below=None)
    assert FaceAnalysis(det, analysis.recognizer).analyze(astronaut) == []
    assert det.calls == list(fa.DET_SIZES)


def test_fixed_size_detector_tries_once(analysis, astronaut):
    det = FakeDetector(finds_below=None, input_size=(640, 640))
    assert FaceAnalysis(det, analysis.recognizer).analyze(astronaut) == []
    assert det.calls == [640]


def test_sizes_giving_the_same_network_input_are_tried_once(analysis, astronaut):
    det = FakeDetector(finds_below=None)
    FaceAnalysis(det, analysis.recognizer).analyze(astronaut, det_sizes=(640, 630, 320, 300))
    assert det.calls == [640, 320]
    with pytest.raises(ValueError, match="FreeCure: det_sizes must be positive"):
        FaceAnalysis(det, analysis.recognizer).analyze(astronaut, det_sizes=())


def test_dynamic_detector_retries(tmp_path, astronaut):
    fan = FaceAnalysis.load(_pack(tmp_path, dynamic=True))
    assert fan.detector.input_size is None
    sizes = []
    detect = fan.detector.detect
    fan.detector.detect = lambda image, **kw: sizes.append(kw["max_size"]) or detect(image, **kw)
    assert fan.analyze(astronaut) == []
    assert sizes == list(fa.DET_SIZES)
    image, boxes = paint(astronaut)
    sizes.clear()
    faces = fan.analyze(image)
    assert sizes == [640] and len(faces) == 3
    np.testing.assert_allclose(faces[0].box, boxes[32], atol=1e-3)


# --- embed_faces -----------------------------------------------------------------------------------

def test_embed_faces_averages_largest_faces(analysis, astronaut):
    first, _ = paint(astronaut)
    second, _ = paint(astronaut[::-1].copy(), cells={16: (8, 30), 8: (40, 40)})
    embedding, kps, faces = analysis.embed_faces([first, second])
    largest = [analysis.analyze(first)[0], analysis.analyze(second)[0]]
    assert len(faces) == 2
    for got, want in zip(faces, largest):
        np.testing.assert_allclose(got.box, want.box)
    np.testing.assert_allclose(embedding, (largest[0].embedding + largest[1].embedding) / 2, rtol=1e-6, atol=1e-6)
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    np.testing.assert_array_equal(kps, largest[0].kps)
    # a (B, H, W, 3) batch and a single image work too
    np.testing.assert_allclose(analysis.embed_faces(np.stack([first, second]))[0], embedding)
    np.testing.assert_allclose(analysis.embed_faces(first)[0], largest[0].embedding)


def test_embed_faces_names_the_image_without_a_face(analysis, astronaut):
    image, _ = paint(astronaut)
    with pytest.raises(ValueError, match=r"FreeCure: no face found in reference image 2 \(of 3\); use a photo "
                                         r"where the face is clearly visible, or crop closer"):
        analysis.embed_faces([image, astronaut, image])
    with pytest.raises(ValueError, match="FreeCure: no reference image"):
        analysis.embed_faces([])
    with pytest.raises(ValueError, match="for the reference image 2"):
        analysis.embed_faces([image, image.astype(np.float32)])


# --- errors ----------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FreeCure: .* not found; put the insightface antelopev2 pack "
                                                r"\(scrfd_10g_bnkps\.onnx, glintr100\.onnx, .*never downloads"):
        FaceAnalysis.load(tmp_path / "insightface" / "models" / "antelopev2")


def test_folder_with_only_a_detector(tmp_path):
    folder = _pack(tmp_path, recognizer=False)
    with pytest.raises(FileNotFoundError) as e:
        FaceAnalysis.load(folder)
    msg = str(e.value)
    assert msg.startswith("FreeCure: ") and "face recognizer (glintr100.onnx)" in msg
    assert "face detector" not in msg and "found scrfd_10g_bnkps.onnx" in msg and "never downloads" in msg


def test_nested_pack_folder_hint(tmp_path):
    inner = _pack(tmp_path / "outer", name="antelopev2")
    outer = tmp_path / "antelopev2"
    inner.parent.rename(outer)  # <tmp>/antelopev2/antelopev2/*.onnx, as the zip unpacks
    with pytest.raises(FileNotFoundError, match=r"no face detector .* and no face recognizer .*found antelopev2/"
                                                r".*subfolder antelopev2/: move them up"):
        FaceAnalysis.load(outer)


def test_detector_without_keypoints(tmp_path, analysis, astronaut):
    with pytest.raises(ValueError, match="FreeCure: scrfd_10g_bnkps.onnx gives no facial keypoints, but InstantID "
                                         "needs a detector with 5 keypoints"):
        FaceAnalysis.load(_pack(tmp_path, with_kps=False))
    with pytest.raises(ValueError, match="InstantID needs a detector with 5 keypoints"):
        FaceAnalysis(FakeDetector(finds_below=640, kps=False), analysis.recognizer).analyze(astronaut)


def test_missing_onnxruntime(tmp_path, monkeypatch):
    def no_ort():
        raise ImportError("no onnxruntime")
    monkeypatch.setattr(fa, "import_onnxruntime", no_ort)
    with pytest.raises(ImportError, match="FreeCure: InstantID face analysis needs onnxruntime: pip install "
                                          "onnxruntime"):
        FaceAnalysis.load(_pack(tmp_path))
