"""tests/support/peer_models.py, the random model files for the real peer packs (tests/e2e/test_peer_packs.py runs
the packs on them):

* the 70 adapter widths it assumes for the tiny SDXL, in the packs' layer order, are the widths of the attn2 layers
  the packs' keys name in the built model;
* the writers are deterministic in their seed (byte-identical files), and another seed gives other weights;
* facexlib's RetinaFace with the written weights, run the way PuLID_ComfyUI runs it (FaceRestoreHelper, centre face,
  alignment to 512²), finds one face on the reference photo with its 5 landmarks laid out like a face inside the box,
  the same on every call, and BiSeNet/ParseNet load; facexlib reads them from the redirected folder, not from the
  installed package.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from support import peer_models, tiny_models


def test_adapter_widths_are_the_tiny_sdxl_attn2_widths(sdxl):
    unet = sdxl.model.diffusion_model
    blocks = {"input": unet.input_blocks, "output": unet.output_blocks, "middle": [None]}
    found = []
    for kind, block, depth in peer_models.SDXL_ADAPTER_BLOCKS:
        spatial = unet.middle_block[1] if kind == "middle" else blocks[kind][block][1]
        assert len(spatial.transformer_blocks) == depth, (kind, block)
        found += [spatial.transformer_blocks[i].attn2.to_k.weight.shape[0] for i in range(depth)]
    assert found == peer_models.sdxl_attn2_widths() and len(found) == 70
    state = peer_models.instantid_state(seed=1)
    assert [state["ip_adapter"][f"{2 * i + 1}.to_k_ip.weight"].shape for i in range(70)] == \
        [(w, tiny_models.CONTEXT_DIM) for w in found]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_writers_are_deterministic_in_the_seed(tmp_path):
    a = peer_models.write_eva_clip(tmp_path / "a", seed=3)
    b = peer_models.write_eva_clip(tmp_path / "b", seed=3)
    c = peer_models.write_eva_clip(tmp_path / "c", seed=4)
    assert _digest(a) == _digest(b) != _digest(c)
    assert (tmp_path / "a" / "hub" / "models--QuanSun--EVA-CLIP" / "refs" / "main").read_text() == \
        peer_models.EVA_REVISION == a.parent.name
    lora = [peer_models.faceid_lora_state(seed=s) for s in (5, 5, 6)]
    assert lora[0].keys() == lora[2].keys() and len(lora[0]) == 70 * 2 * 4 * 3
    assert all(torch.equal(lora[0][k], lora[1][k]) for k in lora[0])
    assert not torch.equal(lora[0]["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"],
                           lora[2]["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight"])


def _photo() -> np.ndarray:
    """The e2e reference photo (make_parsing_models.py): the astronaut at 640² with the blue face square, as BGR."""
    from skimage import data
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float()
    img = torch.nn.functional.interpolate(img, size=(640, 640), mode="bilinear", antialias=True)[0]
    img = img.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy().copy()
    x0, y0, x1, y1 = peer_models.face_square()
    img[y0:y1, x0:x1] = peer_models.FACE_COLOUR
    return np.ascontiguousarray(img[..., ::-1])


def test_facexlib_finds_one_plausible_face_with_the_written_weights(tmp_path, monkeypatch):
    facexlib_misc = pytest.importorskip("facexlib.utils.misc")
    from facexlib.parsing import init_parsing_model
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper
    written = peer_models.write_facexlib(tmp_path, seed=12)
    assert sorted(p.name for p in written.values()) == sorted(peer_models.FACEXLIB_FILES)
    monkeypatch.setattr(facexlib_misc, "ROOT_DIR", str(tmp_path))  # what tests/e2e_pack does in the server

    cpu = torch.device("cpu")
    helper = FaceRestoreHelper(upscale_factor=1, face_size=512, crop_ratio=(1, 1), det_model="retinaface_resnet50",
                               save_ext="png", device=cpu)
    helper.face_parse = init_parsing_model(model_name="bisenet", device=cpu)
    found = []
    for _ in range(2):
        helper.clean_all()
        helper.read_image(_photo())
        assert helper.get_face_landmarks_5(only_center_face=True) == 1
        helper.align_warp_face()
        found.append((np.array(helper.det_faces).reshape(5), helper.all_landmarks_5[0].copy()))  # the centre face
        assert len(helper.cropped_faces) == 1 and helper.cropped_faces[0].shape == (512, 512, 3)
    (box, lm), (box2, lm2) = found
    assert np.array_equal(box, box2) and np.array_equal(lm, lm2), "detection differs between two calls"
    x0, y0, x1, y1, score = box
    assert (x1 - x0, y1 - y0) == (256, 256) and score > 0.97 and 0 <= x0 and x1 <= 640 and 0 <= y0 and y1 <= 640
    assert (abs((x0 + x1) / 2 - 320) <= 160) and (abs((y0 + y1) / 2 - 320) <= 160), box  # near the centre
    assert (x0 < lm[:, 0]).all() and (lm[:, 0] < x1).all() and (y0 < lm[:, 1]).all() and (lm[:, 1] < y1).all()
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    parsed = helper.face_parse(torch.zeros(1, 3, 512, 512))[0]
    assert parsed.shape == (1, 19, 512, 512) and torch.isfinite(parsed).all()
