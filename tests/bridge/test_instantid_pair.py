"""FreeCure InstantID Pair on a tiny SDXL: PD/FD tokens, IdentityNet conds, attention math, invariants, errors."""
import numpy as np
import pytest
import torch

from support import tiny_instantid, tiny_models
from support.onnx_detector import write_model_pack
from support.onnx_recognizer import add_recognizer_to_pack

import comfy.controlnet  # noqa: E402

from freecure_core.comfy_bridge import instantid as bridge  # noqa: E402
from freecure_core.comfy_bridge import sampling as S  # noqa: E402
from freecure_core.comfy_bridge.checks import FreeCureConflict  # noqa: E402
from freecure_core.comfy_bridge.probe import attn2_module  # noqa: E402
from freecure_core.fasa.config import FASAConfig  # noqa: E402
from freecure_core.identity.face_analysis import FaceAnalysis  # noqa: E402
from freecure_core.identity.instantid_weights import instantid_from_state_dict  # noqa: E402

from conftest import Case  # noqa: E402

H, W = 16, 16  # latent cells; 128x128 pixels


def _hidden_sizes(model):
    unet = model.model.diffusion_model
    return [attn2_module(unet, s).to_k.weight.shape[0] for s in bridge.adapter_sites(model.model, "cpu")]


@pytest.fixture(scope="module")
def weights(sdxl):
    state = tiny_instantid.random_instantid_state(output_dim=tiny_models.CONTEXT_DIM, hidden=_hidden_sizes(sdxl),
                                                  seed=1)
    return instantid_from_state_dict(state)


@pytest.fixture(scope="module")
def face_analysis(tmp_path_factory):
    folder = write_model_pack(tmp_path_factory.mktemp("models"), "antelopev2").parent
    add_recognizer_to_pack(folder, embedding_dim=512)
    return FaceAnalysis.load(folder)


@pytest.fixture(scope="module")
def control_net():
    return comfy.controlnet.load_controlnet_state_dict(tiny_models.tiny_sdxl_controlnet_state_dict(seed=5))


@pytest.fixture(scope="module")
def photo():
    """The astronaut at 640², with the blue 32 px square the stand-in detector reports as a face."""
    from skimage.data import astronaut
    img = torch.from_numpy(astronaut()).permute(2, 0, 1)[None].float()
    img = torch.nn.functional.interpolate(img, size=(640, 640), mode="bilinear", antialias=True)[0]
    img = img.permute(1, 2, 0).round().clamp(0, 255)
    img[96:128, 192:224] = torch.tensor([0.0, 0.0, 255.0])
    return img.div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def case(sdxl):
    return Case(sdxl, "sdxl", H, W)


def _pair(case, weights, face_analysis, control_net, photo, **settings):
    return bridge.instantid_pair(case.model, case.pos, case.neg, weights, face_analysis, control_net, photo,
                                 bridge.InstantIDSettings(**settings))


@pytest.fixture(scope="module")
def pair(case, weights, face_analysis, control_net, photo):
    return _pair(case, weights, face_analysis, control_net, photo)


def _eval(model, case, cond_or_uncond, sigma=5.0, seed=0):
    """One UNet evaluation of `model` with its own patches, for rows labelled cond (0) or uncond (1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, H, W, generator=g)
    ctx, extra = case.pos[0]
    y = model.model.encode_adm(pooled_output=extra["pooled_output"], width=W * 8, height=H * 8)
    opts = dict(model.model_options.get("transformer_options", {}))
    opts.update(cond_or_uncond=[cond_or_uncond], sigmas=torch.tensor([sigma]))
    with torch.no_grad():
        return model.model.apply_model(x, torch.tensor([sigma]), c_crossattn=ctx, y=y, transformer_options=opts)


def test_pair_tokens_and_identitynet_conds(case, pair, weights, face_analysis, photo):
    pd_model, pd_pos, pd_neg, fd_model, fd_pos, fd_neg, kps, info = pair
    faces = face_analysis.analyze((photo[0].numpy() * 255).round().astype(np.uint8))
    tokens = weights.face_tokens(torch.from_numpy(faces[0].embedding).unsqueeze(0))
    zero = weights.face_tokens(torch.zeros(1, 512))
    assert zero.abs().sum() > 0  # Resampler(0) is not zero: FD keeps InstantID's image tokens
    torch.testing.assert_close(pd_pos[0][1]["cross_attn_controlnet"], tokens, rtol=0, atol=0)
    torch.testing.assert_close(fd_pos[0][1]["cross_attn_controlnet"], zero, rtol=0, atol=0)
    for neg in (pd_neg, fd_neg):
        torch.testing.assert_close(neg[0][1]["cross_attn_controlnet"], zero, rtol=0, atol=0)
    for cond in (pd_pos, pd_neg, fd_pos, fd_neg):
        control = cond[0][1]["control"]
        assert control.strength == 0.8 and control.timestep_percent_range == (0.0, 1.0)
        assert cond[0][1]["control_apply_to_uncond"] is False
        assert control.cond_hint_original.shape == (1, 3, 640, 640)  # the keypoints on the photo's canvas
    assert len({id(c[0][1]["control"]) for c in (pd_pos, pd_neg, fd_pos, fd_neg)}) == 4
    # the incoming MODEL and CONDITIONING are untouched
    assert "control" not in case.pos[0][1] and "control" not in case.neg[0][1]
    assert "attn2" not in case.model.model_options.get("transformer_options", {}).get("patches_replace", {})
    for m in (pd_model, fd_model):
        assert len(m.model_options["transformer_options"]["patches_replace"]["attn2"]) == 70
    # the keypoint image: five coloured dots on black, at the detected keypoints
    assert kps.shape == (1, 640, 640, 3)
    x, y = faces[0].kps[0].astype(int)
    torch.testing.assert_close(kps[0, y, x], torch.tensor([1.0, 0.0, 0.0]))
    assert "70 attention layers" in info


def test_fd_differs_from_pd_only_in_the_cond_rows(case, pair, weights):
    pd_model, fd_model = pair[0], pair[3]
    assert torch.equal(_eval(pd_model, case, 1), _eval(fd_model, case, 1))
    assert not torch.allclose(_eval(pd_model, case, 0), _eval(fd_model, case, 0), atol=1e-4)
    assert not torch.allclose(_eval(fd_model, case, 0), _eval(case.model, case, 0), atol=1e-4)


def test_zero_weight_and_outside_window_are_the_plain_model(case, weights, face_analysis, control_net, photo):
    plain = _eval(case.model, case, 0)
    off = _pair(case, weights, face_analysis, control_net, photo, ip_weight=0.0)
    assert torch.equal(_eval(off[0], case, 0), plain)
    late = _pair(case, weights, face_analysis, control_net, photo, start_at=0.5)
    sigma_max = float(case.model.get_model_object("model_sampling").sigma_max)
    assert torch.equal(_eval(late[0], case, 0, sigma=sigma_max), _eval(case.model, case, 0, sigma=sigma_max))
    assert not torch.equal(_eval(late[0], case, 0, sigma=1.0), _eval(case.model, case, 0, sigma=1.0))


def test_image_token_attention_math():
    g = torch.Generator().manual_seed(0)
    heads, d, n, t = 2, 8, 6, 4
    q, k, v = (torch.randn(2, n, heads * d, generator=g) for _ in range(3))
    kv = {"cond": (torch.randn(1, t, heads * d, generator=g), torch.randn(1, t, heads * d, generator=g)),
          "uncond": (torch.randn(1, t, heads * d, generator=g), torch.randn(1, t, heads * d, generator=g))}
    patch = bridge.ImageTokenAttention(kv, weight=0.7, sigma_start=10.0, sigma_end=0.0)
    out = patch(q, k, v, {"n_heads": heads, "cond_or_uncond": [1, 0], "sigmas": torch.tensor([3.0])})

    def attend(q, k, v):
        qh, kh, vh = (a.reshape(a.shape[0], -1, heads, d).transpose(1, 2) for a in (q, k, v))
        w = torch.softmax(qh @ kh.transpose(-1, -2) / d ** 0.5, dim=-1)
        return (w @ vh).transpose(1, 2).reshape(q.shape[0], -1, heads * d)

    rows_k = torch.cat([kv["uncond"][0], kv["cond"][0]])
    rows_v = torch.cat([kv["uncond"][1], kv["cond"][1]])
    torch.testing.assert_close(out, attend(q, k, v) + 0.7 * attend(q, rows_k, rows_v), rtol=1e-5, atol=1e-5)


def test_lockstep_fd_half_equals_the_fd_only_run(case, pair):
    pd_model, pd_pos, pd_neg, fd_model, fd_pos, fd_neg = pair[:6]
    fasa = FASAConfig(mask=case.mask((2, 2, 10, 12)), omega=1.0)
    args = dict(latent=case.latent, seed=3, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    pd, fd, report = S.sample_freecure(pd_model, fd_model, pd_pos, pd_neg, fd_pos, fd_neg, fasa=fasa, **args)
    alone, _ = S.sample_foundation(fd_model, fd_pos, fd_neg, record="off", **args)
    assert torch.equal(fd["samples"], alone["samples"])
    assert report["fasa_calls"] > 0
    assert not torch.allclose(pd["samples"], fd["samples"], atol=1e-3)


def test_sd15_model_is_refused(sd15, weights, face_analysis, control_net, photo):
    c = Case(sd15, "sd1", H, W)
    with pytest.raises(ValueError, match="InstantID is made for SDXL"):
        _pair(c, weights, face_analysis, control_net, photo)


def test_adapter_for_another_width_is_refused(case, face_analysis, control_net, photo, sdxl):
    state = tiny_instantid.random_instantid_state(output_dim=tiny_models.CONTEXT_DIM,
                                                  hidden=[h * 2 for h in _hidden_sizes(sdxl)], seed=2)
    with pytest.raises(ValueError, match="made for another model"):
        _pair(case, instantid_from_state_dict(state), face_analysis, control_net, photo)


def test_existing_attn2_replace_is_refused(case, pair, weights, face_analysis, control_net, photo):
    already = Case(pair[0], "sdxl", H, W)
    with pytest.raises(FreeCureConflict, match="already has a cross-attention"):
        _pair(already, weights, face_analysis, control_net, photo)


def test_photo_without_a_face_names_the_image(case, weights, face_analysis, control_net):
    blank = torch.zeros(1, 128, 128, 3)
    with pytest.raises(ValueError, match="no face"):
        _pair(case, weights, face_analysis, control_net, blank)


def test_bad_window_is_refused(case, weights, face_analysis, control_net, photo):
    with pytest.raises(ValueError, match="start_at"):
        _pair(case, weights, face_analysis, control_net, photo, start_at=0.8, end_at=0.2)


def test_zero_identity_model_of_pd_is_the_pairs_exact_fd(case, pair, control_net):
    """FreeCure Zero-ID Model (for peer packs whose attn2 patches pick cond/zero-identity tokens per row, as this
    pack's own ImageTokenAttention does): applied to PD's MODEL it gives FD's MODEL exactly, on cond and uncond rows,
    and a whole FreeCure lockstep run with it as model_fd equals the pair's."""
    from freecure_core.comfy_bridge.zero_identity import UnconditionalRows, zero_identity_model
    pd_model, pd_pos, pd_neg, fd_model, fd_pos, fd_neg, _, _ = pair
    zero_fd, n = zero_identity_model(pd_model)
    assert n == 70
    assert all(isinstance(p, UnconditionalRows)
               for p in zero_fd.model_options["transformer_options"]["patches_replace"]["attn2"].values())
    assert not any(isinstance(p, UnconditionalRows)  # model_pd is untouched
                   for p in pd_model.model_options["transformer_options"]["patches_replace"]["attn2"].values())
    for row in (0, 1):
        assert torch.equal(_eval(zero_fd, case, row), _eval(fd_model, case, row))
    assert zero_identity_model(zero_fd)[1] == 70  # idempotent: wrapping twice changes nothing
    fasa = FASAConfig(mask=case.mask((4, 4, 12, 12)), omega=1.5)
    ref = S.sample_freecure(pd_model, fd_model, pd_pos, pd_neg, fd_pos, fd_neg, case.latent, 1, 3, 5.0, "euler",
                            "normal", 1.0, fasa)
    got = S.sample_freecure(pd_model, zero_fd, pd_pos, pd_neg, fd_pos, fd_neg, case.latent, 1, 3, 5.0, "euler",
                            "normal", 1.0, fasa)
    assert torch.equal(got[0]["samples"], ref[0]["samples"]) and torch.equal(got[1]["samples"], ref[1]["samples"])


def test_zero_identity_model_refuses_a_model_without_identity_patches(case):
    from freecure_core.comfy_bridge.zero_identity import zero_identity_model
    with pytest.raises(FreeCureConflict, match="no cross-attention"):
        zero_identity_model(case.model)
    with pytest.raises(FreeCureConflict, match="FLUX"):
        zero_identity_model(case.model, is_flux=True)
