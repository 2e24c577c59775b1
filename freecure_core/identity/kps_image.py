"""InstantID's keypoint image: the IdentityNet (ControlNet) condition drawn from five face keypoints.

Keypoints in insightface order (left eye, right eye, nose, left mouth corner, right mouth corner), (x, y)
in pixels.  Each non-nose keypoint is joined to the nose by a 4-pixel-wide ellipse in its colour, the
limbs are dimmed to 60 %, and each keypoint is then drawn as a radius-10 dot in full colour.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

KPS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))  # RGB per keypoint
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))  # every limb ends at the nose
LIMB_HALF_WIDTH = 4
LIMB_DIM = 0.6
DOT_RADIUS = 10


def draw_kps(width: int, height: int, kps: np.ndarray) -> np.ndarray:
    """The (height, width, 3) uint8 RGB keypoint image for five (x, y) keypoints: limbs at 60 %, full-colour dots."""
    pts = np.asarray(kps, dtype=np.float64)
    if pts.shape != (5, 2) or not np.isfinite(pts).all():
        raise ValueError(f"FreeCure: InstantID keypoints must be 5 finite (x, y) pixel positions (insightface's kps: "
                         f"eyes, nose, mouth corners); got an array of shape {pts.shape}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"FreeCure: the keypoint image needs a positive size, not {width}x{height}")
    img = np.zeros((int(height), int(width), 3), dtype=np.float64)
    for a, b in LIMBS:
        (x0, y0), (x1, y1) = pts[a], pts[b]
        length = math.hypot(x0 - x1, y0 - y1)
        angle = math.degrees(math.atan2(y0 - y1, x0 - x1))
        polygon = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), LIMB_HALF_WIDTH),
                                   int(angle), 0, 360, 1)
        cv2.fillConvexPoly(img, polygon, KPS_COLORS[a])
    img = (img * LIMB_DIM).astype(np.uint8)
    for (x, y), color in zip(pts, KPS_COLORS):
        cv2.circle(img, (int(x), int(y)), DOT_RADIUS, color, thickness=-1)
    return img


def kps_image_for(image_hw: tuple[int, int], kps: np.ndarray) -> np.ndarray:
    """draw_kps for an image of size (height, width): the keypoint image with the same height and width."""
    height, width = image_hw[:2]
    return draw_kps(int(width), int(height), kps)
