"""A record keeps every setting that steers FD's trajectory, and a replay that differs is refused by name with both
values (issue 18, item 5). Checked before: noise (seed, batch), input latent, size, sigma schedule (steps, scheduler,
denoise), the sigma of every model evaluation, layers, rows, weights for 'x' records. Added here: cfg, the sampler with
its options (samplers with the same evaluation sigmas, e.g. euler and dpmpp_2m, used to pass), the seed itself, the
latent's denoise mask, and the FLUX guidance of the foundation conditioning. A replay with the same settings still
equals lockstep.
"""
from __future__ import annotations

import pytest
import torch

from support.tiny_flux import build_tiny_flux, flux_conditioning

from freecure_core.comfy_bridge import sampling as S
from freecure_core.fasa.config import FASAConfig
from freecure_core.fasa.record import ReplayMismatch

SEED, STEPS, CFG = 3, 3, 5.0


def record(case, latent=None, cfg=CFG, sampler="euler"):
    return S.sample_foundation(case.model, case.fd_pos, case.fd_neg, latent or case.latent, SEED, STEPS, cfg, sampler,
                               "normal", 1.0, "cond")[1]


def replay(case, kv, latent=None, cfg=CFG, sampler="euler", mask_box=(0, 0, 8, 8)):
    return S.sample_freecure(case.model, case.model, case.pos, case.neg, case.fd_pos, case.fd_neg,
                             latent or case.latent, SEED, STEPS, cfg, sampler, "normal", 1.0,
                             FASAConfig(mask=case.mask(mask_box), omega=1.0), kv)


def test_the_record_keeps_cfg_sampler_seed_and_mask(sd15_case):
    s = record(sd15_case).info.settings
    assert s.cfg == CFG and s.seed == SEED and s.sampler.startswith("euler(") and s.denoise_mask_id == ""
    assert s.guidance == ((None,), (None,))  # SD conditioning has no FLUX guidance


def test_replay_at_another_cfg_is_refused_with_both_values(sd15_case):
    kv = record(sd15_case)
    with pytest.raises(ReplayMismatch, match=r"FreeCure: this run's cfg is 7 but the foundation record was made at "
                                             r"cfg 5.*same seed, steps, cfg"):
        replay(sd15_case, kv, cfg=7.0)


def test_replay_with_another_sampler_of_the_same_sigmas_is_refused(sd15_case):
    kv = record(sd15_case)
    assert len(kv.info.eval_sigmas) == STEPS  # one evaluation per step, like dpmpp_2m: the sigma check alone passes
    with pytest.raises(ReplayMismatch, match=r"samples with dpmpp_2m\(.*\) but the foundation record was made with "
                                             r"euler\("):
        replay(sd15_case, kv, sampler="dpmpp_2m")


def test_replay_with_another_denoise_mask_is_refused(sd15_case):
    c = sd15_case
    masked = dict(c.latent, noise_mask=torch.ones(1, 1, c.h * 8, c.w * 8))
    kv = record(c, latent=masked)
    with pytest.raises(ReplayMismatch, match=r"denoise mask \(noise_mask\) differs.*none here, a mask there"):
        replay(c, kv)
    pd, _, report = replay(c, kv, latent=masked)
    assert report["mode"] == "replay" and torch.isfinite(pd["samples"]).all()


def test_replay_with_the_same_settings_equals_lockstep(sd15_case):
    c = sd15_case
    kv = record(c, cfg=7.0, sampler="dpmpp_2m")
    pd, _, _ = replay(c, kv, cfg=7.0, sampler="dpmpp_2m")
    lock = S.sample_freecure(c.model, c.model, c.pos, c.neg, c.fd_pos, c.fd_neg, c.latent, SEED, STEPS, 7.0,
                             "dpmpp_2m", "normal", 1.0, FASAConfig(mask=c.mask((0, 0, 8, 8)), omega=1.0))[0]
    assert torch.allclose(pd["samples"], lock["samples"], atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def dev():
    return build_tiny_flux(0, guidance_embed=True)


def _flux(model, fd_guidance, cfg, kv=None):
    latent = {"samples": torch.zeros(1, 16, 8, 12)}
    neg = flux_conditioning(2, guidance=3.5)
    fasa = FASAConfig(mask=torch.ones(1, 64, 96), omega=2.0)
    return S.sample_freecure(model, model, flux_conditioning(1, guidance=3.5), neg,
                             flux_conditioning(3, guidance=fd_guidance), neg, latent, 7, 3, cfg, "euler", "simple",
                             1.0, fasa, kv)


def _flux_record(model, guidance=3.5, cfg=1.0):
    latent = {"samples": torch.zeros(1, 16, 8, 12)}
    return S.sample_foundation(model, flux_conditioning(3, guidance=guidance), flux_conditioning(2, guidance=3.5),
                               latent, 7, 3, cfg, "euler", "simple", 1.0, record="cond")[1]


def test_flux_record_keeps_guidance_and_refuses_another(dev):
    kv = _flux_record(dev)
    assert kv.info.settings.guidance == ((3.5,), (3.5,)) and kv.info.settings.cfg == 1.0
    with pytest.raises(ReplayMismatch, match=r"FLUX guidance positive 4, negative 3.5 here but the record was made "
                                             r"at positive 3.5, negative 3.5.*same Flux Guidance value"):
        _flux(dev, 4.0, 1.0, kv)
    with pytest.raises(ReplayMismatch, match=r"cfg is 2 but the foundation record was made at cfg 1"):
        _flux(dev, 3.5, 2.0, kv)
    pd, _, report = _flux(dev, 3.5, 1.0, kv)
    assert report["mode"] == "replay" and report["fasa_calls"] > 0
