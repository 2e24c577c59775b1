"""Face-crop parsing: crop boxes, replicate-padded crops, label pasting and the per-image loop, checked for
pixel alignment on skimage's astronaut padded to non-square SDXL-like frames."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from freecure_core.parsing.face_crop import (ABOVE_SHARE, crop_square, face_crop_box, parse_with_faces,
                                             paste_labels)
from freecure_core.parsing.face_detect import Face

# The astronaut's face in skimage.data.astronaut() (512 x 512): x 172..270, y 70..180 (checked below with
# skimage's LBP frontal-face cascade, which finds x 175..268, y 70..163).
ASTRONAUT_FACE = (172.0, 70.0, 270.0, 180.0)
RED = torch.tensor([1.0, 0.0, 0.0])


def astronaut():
    from skimage import data
    return torch.from_numpy(data.astronaut().copy()).float() / 255  # (512, 512, 3)


def framed(h: int, w: int, top: int, left: int):
    """The astronaut placed at (top, left) in a grey (h, w) frame (cut where it leaves it), and its face box."""
    src = astronaut()
    out = torch.full((h, w, 3), 0.5)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + 512, h), min(left + 512, w)
    out[y0:y1, x0:x1] = src[y0 - top:y1 - top, x0 - left:x1 - left]
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    return out, (fx0 + left, fy0 + top, fx1 + left, fy1 + top)


def fixed_detector(*boxes):
    calls = []

    def detect(image):
        assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
        calls.append(image.shape)
        return [Face(box=b, score=0.9) for b in boxes]
    detect.calls = calls
    return detect


def red_parser(calls=None):
    """Labels 1 where a crop is pure-ish red, else 0: follows image content through crop and paste."""
    def parse(crops):
        if calls is not None:
            calls.append(tuple(crops.shape))
        r, g, b = crops.unbind(-1)
        return ((r > 0.75) & (g < 0.25) & (b < 0.25)).long()
    return parse


def marker_parser(u: int, v: int, label: int = 7):
    """Labels one crop pixel (row v, column u) with `label`, everything else background."""
    def parse(crops):
        out = torch.zeros(crops.shape[:3], dtype=torch.int64)
        out[:, v, u] = label
        return out
    return parse


def predicted_span(start: int, side: int, size: int, u: int) -> range:
    """Image pixels whose centre falls in crop pixel u when `side` pixels are resampled to `size`."""
    lo = start + math.ceil(u * side / size - 0.5)
    hi = start + math.ceil((u + 1) * side / size - 0.5)
    return range(lo, hi)


# --- the face box constant -----------------------------------------------------------------------

def test_astronaut_face_box_matches_a_real_face_detector():
    from skimage import data
    from skimage.feature import Cascade
    found = Cascade(data.lbp_frontal_face_cascade_filename()).detect_multi_scale(
        img=data.astronaut(), scale_factor=1.2, step_ratio=1, min_size=(60, 60), max_size=(200, 200))
    assert len(found) == 1
    d = found[0]
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    assert fx0 - 5 <= d["c"] and d["c"] + d["width"] <= fx1 + 5
    assert fy0 - 5 <= d["r"] and d["r"] + d["height"] <= fy1 + 5


# --- face_crop_box -------------------------------------------------------------------------------

def test_face_crop_box_is_a_shifted_square_around_the_face():
    box = ASTRONAUT_FACE
    x0, y0, x1, y1 = face_crop_box(box, (512, 512), margin=0.5)
    side = x1 - x0
    assert y1 - y0 == side == round(110 * 2)
    assert x0 <= box[0] and x1 >= box[2] and y0 <= box[1] and y1 >= box[3]
    assert abs((x0 + x1) / 2 - 221) <= 0.5
    assert y0 == round(70 - ABOVE_SHARE * (220 - 110)) == -7  # 0.7 face heights above, 0.3 below
    assert box[1] - y0 > y1 - box[3]  # more room above (hair, hats) than below
    assert face_crop_box(box, (512, 512), margin=0.0) == (166, 70, 276, 180)  # the tall box, widened evenly


def test_face_crop_box_may_leave_the_image_and_checks_inputs():
    x0, y0, x1, y1 = face_crop_box((2, 3, 60, 70), (100, 200), margin=0.5)
    assert x0 < 0 and y0 < 0 and x1 - x0 == y1 - y0
    # a face cut by the frame keeps its detected size and centre
    assert face_crop_box((-40, 10, 60, 110), (100, 200), margin=0.5) == (-90, -60, 110, 140)
    with pytest.raises(ValueError, match="margin"):
        face_crop_box((2, 3, 60, 70), (100, 200), margin=-0.1)
    with pytest.raises(ValueError, match="outside"):
        face_crop_box((300, 3, 360, 70), (100, 200))


# --- crop_square and paste_labels ----------------------------------------------------------------

def test_crop_square_inside_is_exact_and_outside_replicates_edges():
    img = torch.rand(40, 60, 3)
    np.testing.assert_array_equal(crop_square(img, (10, 5, 30, 25), 20).numpy(), img[5:25, 10:30].numpy())
    out = crop_square(img, (-5, -3, 15, 17), 20)
    np.testing.assert_array_equal(out[3:, 5:].numpy(), img[:17, :15].numpy())
    np.testing.assert_array_equal(out[0, 0].numpy(), img[0, 0].numpy())  # corner replicated
    np.testing.assert_array_equal(out[3:, 0].numpy(), img[:17, 0].numpy())  # left edge replicated
    assert crop_square(img, (-5, -3, 95, 97), 32).shape == (32, 32, 3)
    assert crop_square(img, (0, 0, 60, 40), 16).shape == (16, 16, 3)  # non-square box squashed


def test_paste_labels_places_scales_and_keeps_earlier_labels():
    canvas = torch.zeros(10, 12, dtype=torch.int64)
    paste_labels(canvas, torch.tensor([[0, 1], [2, 3]]), (-2, -2, 2, 2))  # 2x upscaled, 3/4 off-image
    expected = torch.zeros(10, 12, dtype=torch.int64)
    expected[:2, :2] = 3  # image rows/cols 0..1 are the crop's bottom-right pixel
    assert torch.equal(canvas, expected)
    paste_labels(canvas, torch.tensor([[1, 1], [1, 0]]), (-2, -2, 2, 2))  # its background keeps the 3s
    assert torch.equal(canvas, expected)

    canvas = torch.zeros(10, 12, dtype=torch.int64)
    canvas[4:6, 4:6] = 5
    paste_labels(canvas, torch.tensor([[0, 1], [2, 0]]), (4, 4, 8, 8))
    assert canvas[4:8, 4:8].tolist() == [[5, 5, 1, 1], [5, 5, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]]
    paste_labels(canvas, torch.tensor([[0, 1], [2, 0]]), (4, 4, 8, 8), keep_background=False)
    assert canvas[4:8, 4:8].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]]
    before = canvas.clone()
    paste_labels(canvas, torch.ones(2, 2, dtype=torch.int64), (20, 20, 30, 30))  # fully outside: no-op
    assert torch.equal(canvas, before)


# --- parse_with_faces ----------------------------------------------------------------------------

@pytest.mark.parametrize("h, w, top, left", [(832, 1216, 150, 400), (1216, 832, 500, 100), (832, 1216, -60, -150)],
                         ids=["landscape", "portrait", "face-at-corner"])
def test_marker_in_the_crop_lands_on_the_predicted_pixel(h, w, top, left):
    images, face = framed(h, w, top, left)
    box = face_crop_box(face, (h, w), 0.5)
    size, u, v = 128, 75, 50  # crop pixels span ~1.7 image pixels
    labels, faces = parse_with_faces(images[None], marker_parser(u, v), fixed_detector(face), crop_size=size,
                                     margin=0.5)
    assert labels.shape == (1, h, w) and labels.dtype == torch.int64 and len(faces[0]) == 1
    side = box[2] - box[0]
    ys, xs = predicted_span(box[1], side, size, v), predicted_span(box[0], side, size, u)
    hit = (labels[0] == 7).nonzero()
    assert set(map(tuple, hit.tolist())) == {(y, x) for y in ys for x in xs if 0 <= y < h and 0 <= x < w}
    assert len(hit) > 0
    if top < 0:
        assert box[0] < 0 and box[1] < 0  # the crop really left the image


@pytest.mark.parametrize("h, w, top, left", [(832, 1216, 150, 400), (1216, 832, 500, 100), (832, 1216, -60, -150)],
                         ids=["landscape", "portrait", "face-at-corner"])
def test_image_content_round_trips_through_crop_and_paste(h, w, top, left):
    """A red dot on the face comes back as labels at the same pixels (content alignment, RGB order)."""
    images, face = framed(h, w, top, left)
    dot_y, dot_x = int(face[1]) + 40, int(face[0]) + 30
    images[dot_y:dot_y + 6, dot_x:dot_x + 6] = RED
    calls = []
    labels, _ = parse_with_faces(images[None], red_parser(calls), fixed_detector(face), crop_size=512)
    assert calls == [(1, 512, 512, 3)]
    hit = labels[0].nonzero().float()
    assert len(hit) > 0
    assert hit.mean(0).tolist() == pytest.approx([dot_y + 2.5, dot_x + 2.5], abs=0.51)
    assert hit.min(0).values.tolist() >= [dot_y - 1, dot_x - 1] and hit.max(0).values.tolist() <= [dot_y + 6, dot_x + 6]


def test_images_without_faces_are_parsed_whole():
    images = torch.stack([framed(832, 1216, 150, 400)[0], torch.full((832, 1216, 3), 0.5)])  # 1: no face
    images[:, 700:712, 1100:1124] = RED
    face = framed(832, 1216, 150, 400)[1]
    seen = []

    def detect(image):
        seen.append(image.shape)
        return [Face(box=face, score=0.9)] if len(seen) == 1 else []

    calls, ticks = [], []
    labels, faces = parse_with_faces(images, red_parser(calls), detect, crop_size=256, on_image=ticks.append)
    assert seen == [(832, 1216, 3)] * 2 and ticks == [0, 1]
    assert [len(f) for f in faces] == [1, 0]
    assert calls == [(1, 256, 256, 3), (1, 256, 256, 3)]
    assert labels[0, 700:712, 1100:1124].sum() == 0  # outside image 0's face crop: not parsed
    whole = labels[1].nonzero().float()  # image 1 squashed to 256 x 256 and back: the red block returns
    # within half a parser pixel (832 / 256 and 1216 / 256 image pixels) of the block's centre
    assert whole.mean(0).tolist() == pytest.approx([705.5, 1111.5], abs=1216 / 256 / 2)


def test_no_detector_means_whole_image_for_all():
    images = torch.rand(3, 120, 200, 3)
    labels, faces = parse_with_faces(images, lambda c: torch.full(c.shape[:3], 4), None, crop_size=64)
    assert labels.shape == (3, 120, 200) and bool((labels == 4).all()) and faces == [[], [], []]


def test_overlapping_faces_smaller_crop_wins_and_background_never_erases():
    images = torch.zeros(1, 400, 400, 3)
    big, small = (100.0, 100.0, 300.0, 300.0), (250.0, 120.0, 290.0, 160.0)

    def parse(crops):  # crop 0 (big) labels everything 1, crop 1 (small) labels only its centre 2
        out = torch.zeros(crops.shape[:3], dtype=torch.int64)
        out[0] = 1
        out[1, 24:40, 24:40] = 2
        return out
    labels, _ = parse_with_faces(images, parse, fixed_detector(big, small), crop_size=64)
    sb = face_crop_box(small, (400, 400))
    cy, cx = (sb[1] + sb[3]) // 2, (sb[0] + sb[2]) // 2
    assert labels[0, cy, cx] == 2  # the smaller face's own labels win
    assert labels[0, sb[1] + 2, sb[0] + 2] == 1  # its background kept the big face's labels


def test_parse_fn_shape_is_checked():
    with pytest.raises(ValueError, match=r"parse_fn must return labels \(N, S, S\)"):
        parse_with_faces(torch.rand(1, 32, 32, 3), lambda c: torch.zeros(1, 1, 16, 16), None, crop_size=16)


def test_with_the_standin_onnx_detector(tmp_path):
    """End to end: a painted red cell on the astronaut is found by the ONNX stand-in and parsed in a crop."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from freecure_core.parsing.face_detect import FaceDetector, find_detector_file
    from support.onnx_detector import letterbox_scales, write_model_pack
    det = FaceDetector.load(find_detector_file(write_model_pack(tmp_path, "buffalo_l").parent))
    images, _ = framed(832, 1216, 150, 400)  # a stride-8 cell is ~15.2 image pixels
    # the content is 640 x 437 pixels in the input; boxes come back through insightface's one scale 437 / 832
    sy, sx, det_scale = letterbox_scales((832, 1216))
    images[math.floor(8 * 30 / sy):math.ceil(8 * 31 / sy), math.floor(8 * 40 / sx):math.ceil(8 * 41 / sx)] = RED
    x0, y0, x1, y1 = (8 * v / det_scale for v in (40, 30, 41, 31))
    labels, faces = parse_with_faces(images[None], red_parser(), det.detect, crop_size=128)
    assert len(faces[0]) == 1
    np.testing.assert_allclose(faces[0][0].box, (x0, y0, x1, y1), atol=0.02)
    assert labels[0, round((y0 + y1) / 2), round((x0 + x1) / 2)] == 1
