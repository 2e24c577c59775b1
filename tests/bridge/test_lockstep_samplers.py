"""What each sampler of the installed ComfyUI does to lockstep's FD half (issue 18, item 4), run for real:

* every name in ``KSampler.SAMPLERS`` is classified by ``sampler_kinds`` (a ComfyUI with new samplers fails here);
* each sampler runs lockstep (empty mask) and an FD-only KSampler on a tiny SD1.5: a "deterministic" one gives FD's
  half bit for bit (and PD's half equals a PD-only KSampler), any other ("noise": per-step noise, "adaptive": step
  sizes from the pair's error) gives another FD, and the node's text says so; both name the cfg FD ran at;
* replay refuses dpm_adaptive up front (PD alone cannot follow the recorded adaptive steps), naming lockstep;
* a sampler's identity for the record fills in its defaults, so KSampler's euler_ancestral and a custom-sampler
  euler_ancestral with the default eta are the same, and another eta is not.
"""
from __future__ import annotations

import pytest
import torch

import comfy.samplers
import nodes as comfy_nodes
from freecure_core.comfy_bridge import sampling as S
from freecure_core.comfy_bridge.sampler_kinds import sampler_kind, sampler_label, sampler_name
from freecure_core.fasa.config import FASAConfig
from freecure_core.fasa.record import ReplayMismatch

SAMPLERS = list(comfy.samplers.KSampler.SAMPLERS)
SEED, STEPS, CFG = 3, 3, 5.0


@pytest.fixture(scope="module")
def small(sd15):
    from conftest import Case
    return Case(sd15, "sd1", 8, 8)


def test_every_sampler_of_this_comfyui_is_classified():
    unknown = [n for n in SAMPLERS if sampler_kind(comfy.samplers.sampler_object(n)) == "unknown"]
    assert not unknown, f"classify these samplers in freecure_core/comfy_bridge/sampler_kinds.py: {unknown}"
    assert all(sampler_name(comfy.samplers.sampler_object(n)) == n for n in SAMPLERS)


@pytest.mark.parametrize("name", SAMPLERS)
def test_lockstep_fd_half_is_the_fd_only_run_exactly_for_deterministic_samplers(small, name):
    c = small
    kind = sampler_kind(comfy.samplers.sampler_object(name))
    pd, fd, report = S.sample_freecure(c.model, c.model, c.pos, c.neg, c.fd_pos, c.fd_neg, c.latent, SEED, STEPS, CFG,
                                       name, "normal", 1.0, FASAConfig(mask=c.mask()))
    alone = comfy_nodes.common_ksampler(c.model, SEED, STEPS, CFG, name, "normal", c.fd_pos, c.fd_neg,
                                        c.latent)[0]["samples"]
    assert report["sampler"] == name and report["sampler_kind"] == kind
    assert f"FD ran alongside PD at this sampler's cfg {CFG:g}" in report["text"]
    if kind == "deterministic":
        assert torch.equal(fd["samples"], alone)
        pd_alone = comfy_nodes.common_ksampler(c.model, SEED, STEPS, CFG, name, "normal", c.pos, c.neg,
                                               c.latent)[0]["samples"]
        assert torch.equal(pd["samples"], pd_alone)
        assert len(report["notes"]) == 1
    else:
        assert not torch.equal(fd["samples"], alone)
        expected = "draws new noise every step" if kind == "noise" else "picks its step sizes from the error"
        assert expected in report["text"] and name in report["text"]


def test_replay_refuses_dpm_adaptive_and_names_lockstep(small):
    c = small
    _, kv = S.sample_foundation(c.model, c.fd_pos, c.fd_neg, c.latent, SEED, STEPS, CFG, "dpm_adaptive", "normal",
                                1.0, "cond")
    with pytest.raises(ReplayMismatch, match="FreeCure: dpm_adaptive picks its step sizes.*Disconnect kv to run "
                                             "lockstep"):
        S.sample_freecure(c.model, c.model, c.pos, c.neg, c.fd_pos, c.fd_neg, c.latent, SEED, STEPS, CFG,
                          "dpm_adaptive", "normal", 1.0, FASAConfig(mask=c.mask((0, 0, 4, 4))), kv)


def test_sampler_identity_fills_in_defaults():
    stock = comfy.samplers.sampler_object("euler_ancestral")
    custom = comfy.samplers.ksampler("euler_ancestral", {"eta": 1.0, "s_noise": 1.0})
    other = comfy.samplers.ksampler("euler_ancestral", {"eta": 0.5, "s_noise": 1.0})
    assert sampler_label(stock) == sampler_label(custom) == "euler_ancestral(eta=1.0, noise_sampler=None, s_noise=1.0)"
    assert sampler_label(other) != sampler_label(stock)
    assert sampler_name(comfy.samplers.sampler_object("ddim")) == "ddim"
    assert sampler_label(comfy.samplers.sampler_object("ddim")) != sampler_label(comfy.samplers.sampler_object("euler"))
