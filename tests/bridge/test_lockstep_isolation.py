"""Lockstep evaluates each branch with exactly its own MODEL's options (issue 18, item 3), on tiny SD1.5/FLUX models:

* a per-evaluation wrapper (APPLY_MODEL, DIFFUSION_MODEL, PREDICT_NOISE, CALC_COND_BATCH) or a CFG hook on model_pd
  only reaches PD's rows and never FD's: with an empty mask, FD's half equals an FD-only KSampler run on model_fd and
  PD's half a KSampler run on model_pd, bit for bit; one on model_fd only reaches FD's rows alone;
* wrappers set through model_options (``add_wrapper(..., is_model_options=True)``) count as the MODEL's too;
* a run-level wrapper (OUTER_SAMPLE, SAMPLER_SAMPLE, PREPARE_SAMPLING) or a callback that differs between the two
  models is refused by name with the replay fix; the same one on both is accepted.
"""
from __future__ import annotations

import pytest
import torch

import comfy.patcher_extension as ext
import nodes as comfy_nodes
from freecure_core.comfy_bridge import sampling as S
from freecure_core.comfy_bridge.checks import FreeCureConflict
from freecure_core.fasa.config import FASAConfig

SEED, STEPS, CFG = 3, 3, 5.0
WM = ext.WrappersMP


def scaled_output(executor, *args, **kwargs):
    """A stand-in for an identity adapter built as a wrapper: it changes what the model returns."""
    return executor(*args, **kwargs) * 0.9 + 0.01


def scaled_prediction(executor, x, timestep, model_options, seed):
    return executor(x, timestep, model_options, seed) * 0.95


def scaled_conds(executor, model, conds, x_in, timestep, model_options):
    return [c * 1.05 if c is not None else None for c in executor(model, conds, x_in, timestep, model_options)]


def pass_through(executor, *args, **kwargs):
    return executor(*args, **kwargs)


def on_pre_run(patcher):
    return None


def lockstep(case, model_pd, model_fd, sampler="euler", steps=STEPS):
    pd, fd, report = S.sample_freecure(model_pd, model_fd, case.pos, case.neg, case.fd_pos, case.fd_neg, case.latent,
                                       SEED, steps, CFG, sampler, "normal", 1.0, FASAConfig(mask=case.mask()))
    return pd["samples"], fd["samples"], report


def ksampler(case, model, positive, negative, sampler="euler", steps=STEPS):
    return comfy_nodes.common_ksampler(model, SEED, steps, CFG, sampler, "normal", positive, negative,
                                       case.latent)[0]["samples"]


def with_wrapper(model, kind, fn, in_options=False):
    m = model.clone()
    if in_options:
        ext.add_wrapper_with_key(kind, "test_adapter", fn, m.model_options, is_model_options=True)
    else:
        m.add_wrapper_with_key(kind, "test_adapter", fn)
    return m


@pytest.mark.parametrize("kind, fn, in_options", [
    (WM.APPLY_MODEL, scaled_output, False),
    (WM.DIFFUSION_MODEL, scaled_output, False),
    (WM.DIFFUSION_MODEL, scaled_output, True),
    (WM.PREDICT_NOISE, scaled_prediction, False),
    (WM.CALC_COND_BATCH, scaled_conds, True),
])
def test_a_wrapper_on_model_pd_only_never_reaches_fd_rows(sd15_case, kind, fn, in_options):
    c = sd15_case
    model_pd = with_wrapper(c.model, kind, fn, in_options)
    pd, fd, _ = lockstep(c, model_pd, c.model)
    plain_pd = ksampler(c, c.model, c.pos, c.neg)
    assert torch.equal(fd, ksampler(c, c.model, c.fd_pos, c.fd_neg))  # FD: model_fd alone, bit for bit
    assert torch.equal(pd, ksampler(c, model_pd, c.pos, c.neg))  # PD: the wrapper acted
    assert not torch.allclose(pd, plain_pd, atol=1e-3)


@pytest.mark.parametrize("kind, fn", [(WM.APPLY_MODEL, scaled_output), (WM.PREDICT_NOISE, scaled_prediction)])
def test_a_wrapper_on_model_fd_only_reaches_fd_rows_only(sd15_case, kind, fn):
    c = sd15_case
    model_fd = with_wrapper(c.model, kind, fn)
    pd, fd, _ = lockstep(c, c.model, model_fd)
    assert torch.equal(pd, ksampler(c, c.model, c.pos, c.neg))
    assert torch.equal(fd, ksampler(c, model_fd, c.fd_pos, c.fd_neg))
    assert not torch.allclose(fd, ksampler(c, c.model, c.fd_pos, c.fd_neg), atol=1e-3)


def test_cfg_hooks_stay_on_their_own_branch_with_a_cfg_pp_sampler(sd15_case):
    """A post-CFG hook on model_pd only, under a CFG++ sampler (which adds its own post-CFG hook for the run)."""
    c = sd15_case
    model_pd = c.model.clone()
    model_pd.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * 0.9)
    for sampler in ("euler", "euler_cfg_pp"):
        pd, fd, _ = lockstep(c, model_pd, c.model, sampler=sampler)
        assert torch.equal(fd, ksampler(c, c.model, c.fd_pos, c.fd_neg, sampler=sampler))
        assert torch.equal(pd, ksampler(c, model_pd, c.pos, c.neg, sampler=sampler))


@pytest.mark.parametrize("kind", [WM.OUTER_SAMPLE, WM.SAMPLER_SAMPLE, WM.PREPARE_SAMPLING])
def test_a_run_level_wrapper_on_one_model_is_refused_by_name(sd15_case, kind):
    c = sd15_case
    wrapped = with_wrapper(c.model, kind, pass_through)
    with pytest.raises(FreeCureConflict, match=rf"FreeCure lockstep: .*{kind} wrapper 'test_adapter' "
                                               rf"\(.*pass_through\) on model_pd only.*record/replay"):
        lockstep(c, wrapped, c.model)
    with pytest.raises(FreeCureConflict, match=rf"{kind} wrapper 'test_adapter' .* on model_fd only"):
        lockstep(c, c.model, wrapped)
    # the same wrapper on both models acts once on the whole run, as in a plain run: accepted
    pd, fd, _ = lockstep(c, wrapped, wrapped.clone())
    assert torch.equal(fd, ksampler(c, c.model, c.fd_pos, c.fd_neg))


def test_a_callback_on_one_model_is_refused_by_name(sd15_case):
    c = sd15_case
    m = c.model.clone()
    m.add_callback_with_key(ext.CallbacksMP.ON_PRE_RUN, "test_hook", on_pre_run)
    with pytest.raises(FreeCureConflict, match=r"on_pre_run callback 'test_hook' \(.*on_pre_run\) on model_pd only"):
        lockstep(c, m, c.model)


def test_flux_lockstep_keeps_a_model_pd_wrapper_off_fd_rows():
    from support.tiny_flux import build_tiny_flux, flux_conditioning
    model = build_tiny_flux(0, guidance_embed=True)
    pos, fd_pos, neg = flux_conditioning(1), flux_conditioning(3), flux_conditioning(2)
    latent = {"samples": torch.zeros(1, 16, 8, 12)}
    model_pd = with_wrapper(model, WM.DIFFUSION_MODEL, scaled_output)
    empty = FASAConfig(mask=torch.zeros(1, 64, 96), omega=2.0)
    pd, fd, _ = S.sample_freecure(model_pd, model, pos, neg, fd_pos, neg, latent, 7, 3, 1.0, "euler", "simple", 1.0,
                                  empty)

    def plain(m, p):
        return comfy_nodes.common_ksampler(m, 7, 3, 1.0, "euler", "simple", p, neg, latent)[0]["samples"]
    assert torch.equal(fd["samples"], plain(model, fd_pos))
    assert torch.equal(pd["samples"], plain(model_pd, pos))
    assert not torch.allclose(pd["samples"], plain(model, pos), atol=1e-4)
