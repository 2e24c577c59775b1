"""InstantID keypoint image: dimmed limbs to the nose, full-colour dots, black elsewhere."""
import numpy as np
import pytest

from freecure_core.identity.kps_image import KPS_COLORS, draw_kps, kps_image_for

# left eye, right eye, nose, left mouth, right mouth (insightface order), x/y in pixels
KPS = np.array([[60.3, 70.8], [140.6, 69.2], [100.0, 110.0], [70.5, 150.1], [131.9, 151.7]])


def test_shape_dtype_and_black_background():
    img = draw_kps(200, 240, KPS)
    assert img.shape == (240, 200, 3) and img.dtype == np.uint8
    assert (img[:40] == 0).all() and (img[200:] == 0).all() and (img[:, :30] == 0).all()


def test_dots_have_the_exact_keypoint_colours():
    img = draw_kps(200, 240, KPS)
    for (x, y), color in zip(KPS, KPS_COLORS):
        assert tuple(img[int(y), int(x)]) == color
        assert tuple(img[int(y) + 9, int(x)]) == color  # radius 10
        assert tuple(img[int(y) - 7, int(x) + 7]) == color


def test_limbs_are_sixty_percent_of_their_first_keypoint_colour():
    img = draw_kps(200, 240, KPS)
    for a in (0, 1, 3, 4):
        # midway between the keypoint and the nose: on the limb, away from both dots (limbs are ~57 px long)
        x, y = (KPS[a] + KPS[2]) / 2
        expected = tuple(int(c * 0.6) for c in KPS_COLORS[a])
        assert expected == tuple(153 if c == 255 else 0 for c in KPS_COLORS[a])
        assert tuple(img[int(y), int(x)]) == expected
    # 8 px across the left-eye limb (half width 4) is background again
    x, y = (KPS[0] + KPS[2]) / 2
    normal = np.array([KPS[0][1] - KPS[2][1], KPS[2][0] - KPS[0][0]])
    off = np.array([x, y]) + 8 * normal / np.linalg.norm(normal)
    assert (img[int(off[1]), int(off[0])] == 0).all()


def test_keypoints_outside_the_image_do_not_crash():
    kps = KPS.copy()
    kps[0] = (-40.0, -25.0)
    kps[4] = (260.5, 400.2)
    img = draw_kps(200, 240, kps)
    assert img.shape == (240, 200, 3) and img.any()
    assert (draw_kps(16, 16, KPS + 1000) == 0).all()


def test_kps_image_for_takes_height_then_width_and_bad_input_is_refused():
    assert np.array_equal(kps_image_for((240, 200), KPS), draw_kps(200, 240, KPS))
    with pytest.raises(ValueError, match="FreeCure: .*5 finite"):
        draw_kps(64, 64, KPS[:4])
    with pytest.raises(ValueError, match="FreeCure: .*5 finite"):
        draw_kps(64, 64, np.full((5, 2), np.nan))
    with pytest.raises(ValueError, match="FreeCure: .*positive size"):
        draw_kps(0, 64, KPS)
