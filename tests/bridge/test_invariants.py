"""Bit-exact invariants and parity of the FreeCure engine inside a real (in-process) ComfyUI."""
import pytest
import torch

import comfy.ldm.modules.attention as comfy_attention
from freecure_core.fasa.config import FASAConfig
from freecure_core.comfy_bridge import sampling as S
from freecure_core.fasa.record import ReplayMismatch
from freecure_core.fasa.masks import resample_mask

SEED, STEPS, CFG = 3, 4, 5.0


def freecure(case, fasa, kv=None, sampler="euler", seed=SEED, steps=STEPS, cfg=CFG, latent=None):
    pd, fd, report = S.sample_freecure(case.model, case.model, case.pos, case.neg, case.fd_pos, case.fd_neg,
                                       latent or case.latent, seed, steps, cfg, sampler, "normal", 1.0, fasa, kv)
    return pd["samples"], fd["samples"], report


def record(case, sampler="euler", rows="cond", kind="auto", layers="reference", seed=SEED, steps=STEPS, latent=None):
    lat, kv = S.sample_foundation(case.model, case.fd_pos, case.fd_neg, latent or case.latent, seed, steps, CFG,
                                  sampler, "normal", 1.0, rows, layers, kind)
    return lat["samples"], kv


@pytest.fixture(params=["sd15_case", "sdxl_case"])
def case(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_empty_mask_lockstep_is_bit_identical_to_ksampler(sd15_case, sampler):
    c = sd15_case
    pd, fd, report = freecure(c, FASAConfig(mask=c.mask()), sampler=sampler)
    assert torch.equal(pd, c.ksampler(c.pos, c.neg, sampler=sampler))
    assert torch.equal(fd, c.ksampler(c.fd_pos, c.fd_neg, sampler=sampler))
    assert report["fasa_calls"] == 0 and report["sites"]


def test_empty_mask_is_bit_identical_on_sdxl_both_modes(sdxl_case):
    c = sdxl_case
    plain = c.ksampler(c.pos, c.neg)
    pd, fd, _ = freecure(c, FASAConfig(mask=c.mask()))
    assert torch.equal(pd, plain)
    fd_stage1, kv = record(c)
    assert torch.equal(fd, fd_stage1) and torch.equal(fd_stage1, c.ksampler(c.fd_pos, c.fd_neg))
    pd_replay, _, _ = freecure(c, FASAConfig(mask=c.mask()), kv)
    assert torch.equal(pd_replay, plain)


@pytest.mark.parametrize("kind", ["x", "kv"])
def test_replay_equals_lockstep(case, kind):
    fasa = FASAConfig(mask=case.mask((2, 3, 10, 15)), omega=1.0)
    lock_pd, lock_fd, lock_report = freecure(case, fasa)
    fd, kv = record(case, kind=kind)
    replay_pd, replay_fd, report = freecure(case, fasa, kv)
    assert kv.info.kind == kind and report["mode"] == "replay"
    assert report["compacted_bytes"] < report["store_bytes"]
    assert lock_report["fasa_calls"] > 0 and report["fasa_calls"] == lock_report["fasa_calls"] // 1
    assert torch.allclose(replay_pd, lock_pd, atol=1e-5, rtol=0)
    assert torch.equal(replay_fd, fd) and torch.equal(lock_fd, fd)
    assert not torch.allclose(lock_pd, case.ksampler(case.pos, case.neg), atol=1e-3)


def test_a_feathered_mask_is_soft_weights_in_replay_and_lockstep(sd15_case):
    """Mask values between 0 and 1 are FASA weights (selection.key_bias): the replay's compacted record keeps them,
    so replay equals lockstep, and the result differs from the same mask thresholded at 0.5."""
    from freecure_core.parsing.mask_ops import feather_mask
    c = sd15_case
    soft = feather_mask(c.mask((2, 3, 10, 15)), 12.0)
    assert bool(((soft > 0) & (soft < 1)).any())
    fasa = FASAConfig(mask=soft, omega=1.0)
    lock_pd, _, _ = freecure(c, fasa)
    _, kv = record(c, kind="kv")
    replay_pd, _, _ = freecure(c, fasa, kv)
    assert torch.allclose(replay_pd, lock_pd, atol=1e-5, rtol=0)
    hard_pd, _, _ = freecure(c, FASAConfig(mask=(soft >= 0.5).float(), omega=1.0))
    assert not torch.allclose(lock_pd, hard_pd, atol=1e-4)


def test_multi_evaluation_and_ancestral_samplers_replay(sd15_case):
    c = sd15_case
    fasa = FASAConfig(mask=c.mask((0, 0, 8, 12)), omega=1.0)
    for sampler in ("heun", "dpmpp_2s_ancestral"):
        fd, kv = record(c, sampler=sampler)
        pd, _, _ = freecure(c, fasa, kv, sampler=sampler)
        assert len(kv.info.eval_sigmas) > STEPS  # several model evaluations per step
        assert torch.isfinite(pd).all()
    lock_pd, _, _ = freecure(c, fasa, sampler="heun")
    fd, kv = record(c, sampler="heun")
    assert torch.allclose(freecure(c, fasa, kv, sampler="heun")[0], lock_pd, atol=1e-5)


def test_odd_non_square_latent_and_per_image_masks(sd15, sd15_case):
    from conftest import Case
    c = Case(sd15, "sd1", 15, 21, batch=2)
    masks = c.mask(batch=2)
    masks[0, :40, :] = 1
    masks[1, :, :60] = 1
    lock_pd, _, report = freecure(c, FASAConfig(mask=masks, omega=1.0))
    _, kv = record(c)
    assert torch.allclose(freecure(c, FASAConfig(mask=masks, omega=1.0), kv)[0], lock_pd, atol=1e-5)
    # each image follows its own mask: image 0 with mask 1 differs from image 0 with mask 0
    swapped = torch.stack([masks[1], masks[0]])
    other, _, _ = freecure(c, FASAConfig(mask=swapped, omega=1.0))
    assert not torch.allclose(other[0], lock_pd[0])


def test_sigma_window_outside_the_schedule_is_plain(sd15_case):
    c = sd15_case
    never = FASAConfig(mask=c.mask((0, 0, 16, 24)), omega=2.0, start_percent=0.0, end_percent=0.0)
    pd, _, report = freecure(c, never)
    assert torch.equal(pd, c.ksampler(c.pos, c.neg)) and report["fasa_calls"] == 0
    full, _, _ = freecure(c, FASAConfig(mask=c.mask((0, 0, 16, 24)), omega=2.0))
    late, _, late_report = freecure(c, FASAConfig(mask=c.mask((0, 0, 16, 24)), omega=2.0, start_percent=0.5))
    assert 0 < late_report["fasa_calls"] < freecure(c, FASAConfig(mask=c.mask((0, 0, 16, 24)), omega=2.0))[2]["fasa_calls"]
    assert not torch.equal(late, full)


def test_uncond_blend(sd15_case):
    c = sd15_case
    mask = c.mask((2, 3, 12, 20))
    base, _, _ = freecure(c, FASAConfig(mask=mask, omega=1.0))
    blended, _, _ = freecure(c, FASAConfig(mask=mask, omega=1.0, uncond_blend=1.0))
    assert not torch.allclose(base, blended)
    _, kv = record(c, rows="cond+uncond")
    assert torch.allclose(freecure(c, FASAConfig(mask=mask, omega=1.0, uncond_blend=1.0), kv)[0], blended, atol=1e-5)
    _, cond_only = record(c, rows="cond")
    with pytest.raises(ReplayMismatch, match="cond\\+uncond"):
        freecure(c, FASAConfig(mask=mask, omega=1.0, uncond_blend=0.5), cond_only)


@pytest.mark.parametrize("change, message", [
    (dict(seed=SEED + 1), "initial noise"),
    (dict(steps=STEPS + 1), "sigma schedule"),
    (dict(sampler="heun"), "samples with heun.*made with euler"),
])
def test_mismatched_replay_is_refused(sd15_case, change, message):
    c = sd15_case
    _, kv = record(c)
    with pytest.raises(ReplayMismatch, match=message):
        freecure(c, FASAConfig(mask=c.mask((0, 0, 8, 8))), kv, **change)


def test_other_size_replay_is_refused(sd15, sd15_case):
    from conftest import Case
    _, kv = record(sd15_case)
    other = Case(sd15, "sd1", 16, 16)
    with pytest.raises(ReplayMismatch, match="latent of shape"):
        freecure(other, FASAConfig(mask=other.mask((0, 0, 8, 8))), kv)


def test_record_off_then_replay_names_the_fix(sd15_case):
    c = sd15_case
    _, none = record(c, rows="off")
    with pytest.raises(ReplayMismatch, match="record is 'off'"):
        freecure(c, FASAConfig(mask=c.mask((0, 0, 8, 8))), none)


def _sharp_attention_model(seed=0, gain=12.0):
    """A tiny UNet whose self-attention is position-selective, like a trained model's (to_k = to_q, scaled)."""
    from support import tiny_models
    model = tiny_models.build_tiny_sd15(seed)
    for module in model.model.diffusion_model.modules():
        if isinstance(module, comfy_attention.BasicTransformerBlock):
            with torch.no_grad():
                module.attn1.to_q.weight.mul_(gain)
                module.attn1.to_k.weight.copy_(module.attn1.to_q.weight)
    return model


@pytest.mark.parametrize("layer", ["output:0", "output:1", "output:2", "output:3"])
def test_fasa_moves_pd_towards_fd_inside_the_mask(layer):
    """At a FASA layer, PD's self-attention output approaches FD's inside the mask, not outside.

    FASA acts on one layer at a time so that layer sees the same input with and without FASA; it is
    measured on the layer output at the first evaluation (attn1_output_patch). With random weights the
    downstream layers scramble the direction, so end to end the check is only that PD changes.
    """
    from conftest import Case
    c = Case(_sharp_attention_model(), "sd1", 32, 48)
    box = (8, 12, 24, 36)

    def capturing(store):
        m = c.model.clone()

        def capture(n, extra):
            key = (extra["block"][0], extra["block"][1], extra["block_index"])
            rows = n.shape[0] // len(extra["cond_or_uncond"])
            for i, which in enumerate(extra["cond_or_uncond"]):
                if which == 0:
                    store.setdefault(key, (n[i * rows:(i + 1) * rows].clone(), tuple(extra["activations_shape"][-2:])))
            return n
        m.set_model_attn1_output_patch(capture)
        return m

    runs = []
    for mask in (c.mask(), c.mask(box)):
        pd_out, fd_out = {}, {}
        pd, _, report = S.sample_freecure(capturing(pd_out), capturing(fd_out), c.pos, c.neg, c.fd_pos, c.fd_neg,
                                          c.latent, SEED, 1, 1.0, "euler", "normal", 1.0,
                                          FASAConfig(mask=mask, omega=2.0, layers=layer))
        runs.append((pd_out, fd_out, pd["samples"]))
    (plain_pd, plain_fd, plain_latent), (fasa_pd, _, fasa_latent) = runs
    assert not torch.allclose(plain_latent, fasa_latent)
    key = ("output", int(layer.split(":")[1]), 0)
    assert report["sites"] == [f"output:{key[1]}.0"]
    (before, grid), (fd, _), (after, _) = plain_pd[key], plain_fd[key], fasa_pd[key]
    inside = resample_mask(c.mask(box), grid)[0] > 0.5
    gap_before = (before - fd).norm(dim=-1)[0]
    gap_after = (after - fd).norm(dim=-1)[0]
    gain_inside = (gap_before[inside] - gap_after[inside]).mean()
    gain_outside = (gap_before[~inside] - gap_after[~inside]).mean()
    assert gain_inside > 0
    assert gain_inside > gain_outside + 0.02


def test_identity_patches_on_model_pd_never_touch_fd_rows(sd15_case):
    """An identity adapter's attn2 replace (as InstantID/PuLID/IPAdapter install) only sees PD rows, and only
    cond_or_uncond indices 0/1 (their patches index (cond, uncond) tuples)."""
    c = sd15_case
    seen = []

    def identity_adapter(q, k, v, extra_options):
        assert max(extra_options["cond_or_uncond"]) <= 1
        seen.append(q.shape[0])
        out = comfy_attention.optimized_attention(q, k, v, extra_options["n_heads"])
        return out + 0.05

    pd_model = c.model.clone()
    for key in (("input", 1), ("input", 3), ("middle", 0), ("output", 0), ("output", 1), ("output", 2), ("output", 3)):
        pd_model.set_model_attn2_replace(identity_adapter, *key, 0)
    fasa = FASAConfig(mask=c.mask((2, 3, 10, 15)), omega=1.0)
    pd, fd, _ = S.sample_freecure(pd_model, c.model, c.pos, c.neg, c.fd_pos, c.fd_neg, c.latent, SEED, STEPS, CFG,
                                  "euler", "normal", 1.0, fasa)
    assert seen and torch.equal(fd["samples"], c.ksampler(c.fd_pos, c.fd_neg))
    plain_pd, _, _ = freecure(c, fasa)
    assert not torch.allclose(pd["samples"], plain_pd)
