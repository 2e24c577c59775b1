"""Face analysis parity with insightface 0.7.3 (issue 17): on the same antelopev2-shaped folder and the same photos,
the pack's boxes, detection scores, 5 keypoints, ArcFace alignment matrices, aligned crops and 512-d embeddings
equal what InstantID/PuLID users get from ``insightface.app.FaceAnalysis(name="antelopev2", root=...)``,
``prepare(ctx_id=0, det_size=(640, 640))`` and ``get(bgr)`` with ``det_model.input_size`` set to each size in
turn, as the peer packs do (ComfyUI_InstantID's extractFeatures, PuLID_ComfyUI).

The models are the stand-ins of tests/support (onnx_detector: SCRFD with det_10g's exact inputs/outputs, finding
pure-colour squares; onnx_recognizer: ArcFace with glintr100's signature), checked first to be routed by
insightface's model_zoo as the real files are. The photos are skimage's astronaut resized to square, landscape,
portrait, small (upscaled), large and very tall frames, with painted "faces" for the 640, 448 and 192 networks,
a 2 x 2 block of equal faces (equal scores, touching boxes) and a face nested in another (NMS cases).

Tolerances: none (exact equality). Both sides run the same .onnx file with the same onnxruntime CPU session
options, and the pack now does insightface's float32 arithmetic step by step (int() letterbox size, cv2 bilinear
resize, one det_scale for both axes, greedy NMS on +1-pixel areas, skimage's Umeyama in float32, cv2's
(x - mean) * float32(1 / std) blob, one face per recognizer run), so the blobs fed to the networks are
bit-identical and any difference is a divergence, not rounding noise. Before the pack followed insightface, these
photos gave other face counts (207 for insightface's 204 at 640), up to 10 of insightface's faces per size had no
counterpart within 3 px, most faces came in another order, boxes and keypoints were off by up to 2.6 px and scores
by up to 0.28. The measured maxima are printed per size (run with -s).
"""
from __future__ import annotations

import functools
import logging
import os

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")
# insightface imports its app, whose albumentations asks pypi.org for a newer version unless told not to (the
# suite's no-network guard fails the session on any such attempt).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
pytest.importorskip("insightface")
if_app = pytest.importorskip("insightface.app")  # also needs albumentations / albucore (requirements-peers.txt)

from insightface.model_zoo import model_zoo  # noqa: E402
from insightface.utils import face_align  # noqa: E402

from freecure_core.identity import face_analysis as fa  # noqa: E402
from freecure_core.identity.arcface import ARCFACE_DST, ArcFaceRecognizer, norm_crop, similarity_transform  # noqa: E402
from freecure_core.identity.face_analysis import FaceAnalysis  # noqa: E402
from support import onnx_detector, onnx_recognizer  # noqa: E402

# skimage 0.26 deprecates SimilarityTransform.estimate, which insightface's face_align calls.
pytestmark = pytest.mark.filterwarnings("ignore:.*estimate.*:FutureWarning")

CPU = ["CPUExecutionProvider"]
IMAGES = {"astronaut-512": (512, 512), "landscape-700x1000": (700, 1000), "portrait-1000x700": (1000, 700),
          "small-300x420": (300, 420), "large-1333x2000": (1333, 2000), "tall-900x250": (900, 250)}
# Painted faces, one band of the photo per network size they are drawn for (y as a fraction of the content).
BANDS = {640: 0.1, 448: 0.45, 192: 0.75}
SIZES = list(fa.DET_SIZES) + ["fixed"]  # every size the pack tries, and the fixed 640 x 640 export
QUANTITIES = ("box", "score", "kps", "align", "crop", "embedding")
TOLERANCE = dict.fromkeys(QUANTITIES, 0.0)


def cells_for(image_hw, net):
    """(stride, row, col) cells of a net x net input: one face per stride in the net's band; at 640 also a 2 x 2
    block of stride-16 faces and a stride-8 face inside the stride-32 one."""
    sy, sx, _ = onnx_detector.letterbox_scales(image_hw, (net, net))
    new_h, new_w = int(round(image_hw[0] * sy)), int(round(image_hw[1] * sx))

    def cell(s, fx, fy):
        return (s, min(int(fy * new_h / s), max(0, new_h // s - 2)), min(int(fx * new_w / s), max(0, new_w // s - 2)))

    cells = [cell(s, fx, BANDS[net]) for s, fx in ((32, 0.1), (16, 0.45), (8, 0.75))]
    if net == 640:
        _, r, c = cell(16, 0.8, 0.28)
        cells += [(16, r + i, c + j) for i in (0, 1) for j in (0, 1)]
        _, r, c = cells[0]
        cells.append((8, 4 * r + 1, 4 * c + 1))
    return cells


@functools.lru_cache(maxsize=None)
def photo(h: int, w: int) -> np.ndarray:
    """The astronaut resized to (h, w) with the faces of every band painted in, RGB uint8."""
    image = cv2.resize(skdata.astronaut(), (w, h), interpolation=cv2.INTER_AREA)
    for net in BANDS:
        image, _ = onnx_detector.paint_cells(image, cells_for((h, w), net), (net, net))
    image.flags.writeable = False
    return image


def bgr(rgb: np.ndarray) -> np.ndarray:
    """The BGR copy of an RGB image, as the peer packs hand images to insightface."""
    return np.ascontiguousarray(rgb[..., ::-1])


def peer_area(face) -> np.float32:
    """A face's box area as the peer packs sort faces: float32 arithmetic on insightface's float32 bbox."""
    return (face.bbox[2] - face.bbox[0]) * (face.bbox[3] - face.bbox[1])


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    """{"dynamic"|"fixed": <root>/insightface/models/antelopev2/} holding the stand-in detector and recognizer."""
    out = {}
    for kind in ("dynamic", "fixed"):
        root = tmp_path_factory.mktemp(kind)
        folder = onnx_detector.write_model_pack(root, "antelopev2", dynamic=kind == "dynamic").parent
        onnx_recognizer.add_recognizer_to_pack(folder)
        out[kind] = folder
    return out


@pytest.fixture(scope="module")
def engines(packs):
    """{kind: (the pack's FaceAnalysis, insightface's FaceAnalysis)} on the same folder, CPU, as users load them."""
    out = {}
    for kind, folder in packs.items():
        app = if_app.FaceAnalysis(name="antelopev2", root=str(folder.parents[1]), providers=CPU)
        app.prepare(ctx_id=0, det_size=(640, 640))
        out[kind] = FaceAnalysis.load(folder, providers=CPU), app
    return out


def insightface_get(app, image_bgr, size, det_thresh=0.5):
    """insightface's faces at one detection size, set as the peer packs set it (det_model.input_size)."""
    det = app.det_model
    saved = det.input_size, det.det_thresh
    try:
        if size != "fixed":
            det.input_size = (size, size)
        det.det_thresh = det_thresh
        return app.get(image_bgr)
    finally:
        det.input_size, det.det_thresh = saved


def diffs(pack_faces, ref_faces, image_rgb) -> dict:
    """Max absolute differences per quantity between the pack's AnalyzedFaces and insightface's faces, in order."""
    assert len(pack_faces) == len(ref_faces)
    out = dict.fromkeys(QUANTITIES, 0.0)
    image_bgr = bgr(image_rgb)
    for f, r in zip(pack_faces, ref_faces):
        out["box"] = max(out["box"], float(np.abs(np.float32(f.box) - r.bbox).max()))
        out["score"] = max(out["score"], abs(float(np.float32(f.score) - r.det_score)))
        out["kps"] = max(out["kps"], float(np.abs(f.kps - r.kps).max()))
        m = similarity_transform(f.kps, ARCFACE_DST)
        out["align"] = max(out["align"], float(np.abs(m - face_align.estimate_norm(r.kps)).max()))
        crop = norm_crop(image_rgb, f.kps).astype(np.int16)
        ref_crop = face_align.norm_crop(image_bgr, r.kps)[..., ::-1].astype(np.int16)
        out["crop"] = max(out["crop"], float(np.abs(crop - ref_crop).max()))
        out["embedding"] = max(out["embedding"], float(np.abs(f.embedding - r.embedding).max()))
    return out


def check(measured: dict, what: str) -> None:
    """Print the measured maxima and assert each is within TOLERANCE."""
    print(f"\n{what}: " + ", ".join(f"{k} {measured[k]:.3g}" for k in QUANTITIES))
    for k in QUANTITIES:
        assert measured[k] <= TOLERANCE[k], f"{what}: {k} differs from insightface by {measured[k]}"


# --- routing ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
def test_standins_are_routed_as_the_real_antelopev2_files(packs, engines, kind):
    """model_zoo sends a file with >= 5 outputs to its SCRFD decoder (RetinaFace in 0.7.3) and a 112 x 112
    single-input model to ArcFaceONNX, as it does scrfd_10g_bnkps.onnx and glintr100.onnx; the pack loads the
    same two files and reads the same detector layout and recognizer normalisation."""
    folder = packs[kind]
    pack, app = engines[kind]
    assert sorted(app.models) == ["detection", "recognition"]
    det, rec = app.models["detection"], app.models["recognition"]
    assert type(det).__name__ == "RetinaFace" and det.model_file == str(pack.detector.path)
    assert (det.fmc, det._feat_stride_fpn, det._num_anchors, det.use_kps) == (3, [8, 16, 32], 2, True)
    assert (det.input_mean, det.input_std) == (127.5, 128.0)
    assert det.input_size == (640, 640)  # the graph's when fixed, prepare's det_size when dynamic
    assert (pack.detector.input_size is None) == (kind == "dynamic")
    assert type(rec).__name__ == "ArcFaceONNX" and rec.model_file == str(pack.recognizer.path)
    assert rec.input_size == (112, 112) and rec.output_shape[-1] == 512
    assert (rec.input_mean, rec.input_std) == (pack.recognizer.input_mean, pack.recognizer.input_std) == (127.5, 127.5)
    # the recognizer alone, and the MXNet-style variant whose graph normalises itself
    sub = onnx_recognizer.build_standin_recognizer(folder.parent / "mxnet" / "glintr100.onnx", with_sub=True)
    routed = model_zoo.get_model(str(sub), providers=CPU)
    assert type(routed).__name__ == "ArcFaceONNX"
    mine = ArcFaceRecognizer.load(sub, providers=CPU)
    assert (routed.input_mean, routed.input_std) == (mine.input_mean, mine.input_std) == (0.0, 1.0)


# --- every detection size -------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
def test_faces_equal_insightface_at_each_detection_size(engines, size):
    """At one detection size: the detector's faces in insightface's order, then analyze()'s faces (largest first,
    as the peer packs sort them) with their alignment, crops and embeddings, on every photo."""
    pack, app = engines["fixed" if size == "fixed" else "dynamic"]
    max_size = 640 if size == "fixed" else size
    measured, count = dict.fromkeys(QUANTITIES, 0.0), 0
    for name, (h, w) in IMAGES.items():
        image = photo(h, w)
        ref = insightface_get(app, bgr(image), size)
        det = pack.detector.detect(image, max_size=max_size)
        assert len(det) == len(ref), f"{name}: {len(det)} faces, insightface {len(ref)}"
        for f, r in zip(det, ref):  # the detector alone keeps insightface's (score) order
            np.testing.assert_array_equal(np.float32(f.box), r.bbox, err_msg=name)
            assert np.float32(f.score) == r.det_score and f.kps.dtype == np.float32
            np.testing.assert_array_equal(f.kps, r.kps, err_msg=name)
        faces = pack.analyze(image, det_sizes=(max_size,))
        expected = sorted(ref, key=peer_area)[::-1]
        for k, v in diffs(faces, expected, image).items():
            measured[k] = max(measured[k], v)
        count += len(faces)
    assert count >= 3, f"size {size}: only {count} faces compared"
    check(measured, f"size {size} ({count} faces on {len(IMAGES)} photos)")


def test_photo_without_faces(engines):
    pack, app = engines["dynamic"]
    image = skdata.astronaut()
    for size in fa.DET_SIZES:
        assert insightface_get(app, bgr(image), size) == [] and pack.analyze(image, det_sizes=(size,)) == []


@pytest.mark.parametrize("nms", [0.4, 0.7])
@pytest.mark.parametrize("size", [640, 448, 192, "fixed"])
def test_nms_equals_insightface(engines, size, nms):
    """The detector with insightface's NMS threshold changed: 0.7 separates the two conventions (+1-pixel areas
    and keeping overlaps <= the threshold, insightface's, drops an anchor's grown twin of a box under ~40 px;
    plain IoU keeps it), and the 2 x 2 block and nested faces overlap."""
    pack, app = engines["fixed" if size == "fixed" else "dynamic"]
    det = app.det_model
    saved = det.input_size, det.nms_thresh
    try:
        if size != "fixed":
            det.input_size = (size, size)
        det.nms_thresh = nms
        for name, (h, w) in IMAGES.items():
            image = photo(h, w)
            ref, ref_kps = det.detect(bgr(image), max_num=0, metric="default")
            got = pack.detector.detect(image, nms_iou=nms, max_size=640 if size == "fixed" else size)
            assert len(got) == len(ref), f"{name}: {len(got)} faces, insightface {len(ref)}"
            if got:
                np.testing.assert_array_equal(np.float32([f.box for f in got]), ref[:, :4], err_msg=name)
                np.testing.assert_array_equal(np.float32([f.score for f in got]), ref[:, 4], err_msg=name)
                np.testing.assert_array_equal(np.stack([f.kps for f in got]), ref_kps, err_msg=name)
    finally:
        det.input_size, det.nms_thresh = saved


# --- the retry loop and the face the peer packs pick -------------------------------------------------

def peer_pick(app, image_rgb, sizes, det_thresh=0.5):
    """(size, face): the first size at which insightface finds a face and the largest face there, by the peer packs'
    rule (sorted by area, last one); (None, None) when no size finds one."""
    for size in sizes:
        faces = insightface_get(app, bgr(image_rgb), size, det_thresh)
        if faces:
            return size, sorted(faces, key=peer_area)[-1]
    return None, None


def retry_photo():
    """A landscape photo whose only face is a blue square on the 448 grid: with a 0.99 detection threshold no
    640, 576 or 512 cell is covered enough, so both insightface's loop and the pack's go down to 448."""
    image = cv2.resize(skdata.astronaut(), (1000, 700), interpolation=cv2.INTER_AREA)
    return onnx_detector.paint_cells(image, [(32, 1, 1)], (448, 448))[0]


def test_retry_loop_stops_where_the_peer_packs_stop(engines, caplog):
    pack, app = engines["dynamic"]
    image = retry_photo()
    size, ref = peer_pick(app, image, fa.DET_SIZES, det_thresh=0.99)
    assert size is not None and size < 640  # the case really retries
    with caplog.at_level(logging.INFO, logger="FreeCure"):
        faces = pack.analyze(image, threshold=0.99)
    assert f"face found at detection size {size}" in caplog.text
    check(diffs(faces[:1], [ref], image), f"retry photo, found at {size}")
    # default threshold: every photo stops at the first size, the peers' face is the pack's faces[0]
    for kind, sizes in (("dynamic", fa.DET_SIZES), ("fixed", ["fixed"])):
        pack, app = engines[kind]
        for name, (h, w) in IMAGES.items():
            image = photo(h, w)
            _, ref = peer_pick(app, image, sizes)
            check(diffs(pack.analyze(image)[:1], [ref], image), f"{kind} {name}, peers' pick")


def test_embed_faces_takes_the_peers_face_of_each_photo(engines):
    """Equal-area faces (the 2 x 2 block, two equal squares): faces[0] is still the one sorted(...)[-1] picks."""
    pack, app = engines["dynamic"]
    twins = onnx_detector.paint_cells(cv2.resize(skdata.astronaut(), (800, 600)), [(32, 3, 3), (32, 3, 12)])[0]
    block = onnx_detector.paint_cells(skdata.astronaut(), [(16, r, c) for r in (10, 11) for c in (20, 21)])[0]
    images = [twins, block, photo(700, 1000)]
    _, _, faces = pack.embed_faces(images)
    for i, (image, face) in enumerate(zip(images, faces)):
        _, ref = peer_pick(app, image, fa.DET_SIZES)
        check(diffs([face], [ref], image), f"embed_faces photo {i + 1}")
