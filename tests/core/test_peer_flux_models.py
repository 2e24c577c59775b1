"""tests/support/peer_flux_models.py on its own (no ComfyUI): the facexlib RetinaFace it writes finds exactly the
painted face with the designed box and landmarks (and nothing on the same image without it), the sparse safetensors
writer round-trips (holes read back as zeros), and the reference image has exactly one pure-colour patch."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from support import peer_flux_models as pfm


def test_retinaface_finds_exactly_the_painted_face():
    pytest.importorskip("facexlib")
    from facexlib.detection.retinaface import RetinaFace
    net = RetinaFace(network_name="resnet50", half=False, device="cpu")
    net.load_state_dict(pfm.retinaface_state_dict(), strict=True)  # fp16 file values into the fp32 model
    net.eval()
    bgr = np.ascontiguousarray(pfm.reference_image()[..., ::-1])
    box, landmarks = pfm.expected_retinaface()
    with torch.no_grad():
        for threshold in (0.5, 0.97):  # lldacing's FaceRestoreHelper, facexlib's own helper (balazik)
            faces = net.detect_faces(bgr, threshold)
            assert faces.shape == (1, 15), faces
            np.testing.assert_allclose(faces[0, :4], box, atol=0.05)  # fp16 head biases
            assert faces[0, 4] > 0.9999
            np.testing.assert_allclose(faces[0, 5:].reshape(5, 2), landmarks, atol=0.05)
        plain = bgr.copy()
        x0, y0, x1, y1 = pfm.FACE_SQUARE
        plain[y0:y1, x0:x1] = bgr[0:y1 - y0, 0:x1 - x0]
        assert net.detect_faces(plain, 0.5).shape[0] == 0


def test_used_pulid_ca_follows_the_ports_numbering():
    assert pfm.n_pulid_ca() == 20
    assert pfm.used_pulid_ca() == [0]  # the test FLUX: one double block, no single block
    assert pfm.used_pulid_ca(19, 38) == list(range(20))  # FLUX.1: every layer
    assert pfm.used_pulid_ca(3, 5) == [0, 1, 10, 11]


def test_sparse_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "hole": torch.zeros(1000, 7, dtype=torch.bfloat16),
               "b": torch.tensor([1.5, -2.0], dtype=torch.float16),
               "last_hole": torch.zeros(4096, dtype=torch.float16)}
    path = pfm.save_safetensors(tmp_path / "x.safetensors", tensors, zero={"hole", "last_hole"},
                                metadata={"format": "pt"})
    back = load_file(str(path))
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    n = struct.unpack("<Q", path.read_bytes()[:8])[0]
    header = json.loads(path.read_bytes()[8:8 + n])
    assert header["__metadata__"] == {"format": "pt"}
    assert path.stat().st_size == 8 + n + sum(v.numel() * v.element_size() for v in tensors.values())


def test_reference_image_has_one_pure_patch():
    img = pfm.reference_image()
    assert img.shape == (pfm.IMAGE_SIZE, pfm.IMAGE_SIZE, 3) and img.dtype == np.uint8
    pure = np.all(np.isin(img, (0, 255)), axis=-1)
    ys, xs = np.nonzero(pure)
    x0, y0, x1, y1 = pfm.FACE_SQUARE
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1) and pure.sum() == (x1 - x0) * (y1 - y0)
    assert (img[y0:y1, x0:x1] == pfm.FACE_RGB).all()
