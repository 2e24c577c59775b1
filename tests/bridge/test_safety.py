"""Conflicts are refused loudly, inputs are never mutated, interrupts leave nothing behind."""
import copy

import pytest
import torch

import comfy.model_management
import comfy.patcher_extension
from comfy_extras.nodes_easycache import EasyCacheNode
from freecure_core.fasa.config import FASAConfig
from freecure_core.comfy_bridge import sampling as S
from freecure_core.comfy_bridge.checks import FreeCureConflict
from freecure_core.fasa.record import ReplayMismatch

SEED, STEPS, CFG = 5, 3, 4.0


def run(case, model_pd=None, model_fd=None, fasa=None, kv=None, sampler="euler"):
    fasa = fasa or FASAConfig(mask=case.mask((2, 2, 10, 12)), omega=1.0)
    return S.sample_freecure(model_pd or case.model, model_fd or case.model, case.pos, case.neg, case.fd_pos,
                             case.fd_neg, case.latent, SEED, STEPS, CFG, sampler, "normal", 1.0, fasa, kv)


def record(case, model=None, kind="auto"):
    return S.sample_foundation(model or case.model, case.fd_pos, case.fd_neg, case.latent, SEED, STEPS, CFG, "euler",
                               "normal", 1.0, "cond", "reference", kind)[1]


def with_lora(model):
    """A clone with a weight patch (what a LoRA loader does): different weights, same module."""
    m = model.clone()
    key = next(k for k in m.model.state_dict() if k.endswith("attn2.to_k.weight"))
    m.add_patches({key: (torch.ones_like(m.model.state_dict()[key]) * 0.05,)}, 1.0)
    return m


def test_attn1_replace_on_a_fasa_layer_is_refused(sd15_case):
    m = sd15_case.model.clone()
    m.set_model_attn1_replace(lambda q, k, v, extra: v, "output", 1)
    with pytest.raises(FreeCureConflict, match=r"model_pd already has a self-attention \(attn1\) replace on \('output', 1\)"):
        run(sd15_case, model_pd=m, model_fd=m)
    # the same patch elsewhere is fine
    ok = sd15_case.model.clone()
    ok.set_model_attn1_replace(lambda q, k, v, extra: v, "input", 1)
    run(sd15_case, model_pd=ok, model_fd=ok)


def test_caching_accelerators_are_refused(sd15_case):
    cached = EasyCacheNode.execute(sd15_case.model, 0.2, 0.15, 0.95, False).result[0]
    with pytest.raises(FreeCureConflict, match="easycache"):
        run(sd15_case, model_pd=cached, model_fd=cached)
    with pytest.raises(FreeCureConflict, match="caching"):
        record(sd15_case, model=cached)


def test_lockstep_needs_shared_weights_replay_does_not(sd15_case):
    lora = with_lora(sd15_case.model)
    with pytest.raises(FreeCureConflict, match="record/replay"):
        run(sd15_case, model_pd=lora, model_fd=sd15_case.model)
    kv = record(sd15_case, kind="kv")
    pd, _, report = run(sd15_case, model_pd=lora, kv=kv)
    assert report["mode"] == "replay" and torch.isfinite(pd["samples"]).all()
    with pytest.raises(ReplayMismatch, match="store to 'kv'"):
        run(sd15_case, model_pd=lora, kv=record(sd15_case, kind="x"))


def snapshot(model):
    return copy.deepcopy({k: v for k, v in model.model_options.items()}), dict(model.patches), model.patches_uuid


def snapshot_conds(conds):
    return [(c[0].clone(), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in c[1].items()}) for c in conds]


def test_incoming_models_conditioning_and_latent_are_not_mutated(sd15_case):
    c = sd15_case
    before = snapshot(c.model)
    conds_before = [snapshot_conds(x) for x in (c.pos, c.neg, c.fd_pos, c.fd_neg)]
    latent_before = {k: v.clone() for k, v in c.latent.items()}
    run(c)
    run(c, kv=record(c))
    assert snapshot(c.model) == before
    for got, want in zip((c.pos, c.neg, c.fd_pos, c.fd_neg), conds_before):
        assert len(got) == len(want)
        for (t, d), (t0, d0) in zip(got, want):
            assert torch.equal(t, t0) and d.keys() == d0.keys()
    assert all(torch.equal(c.latent[k], v) for k, v in latent_before.items())


def test_an_interrupt_leaves_no_patch_or_store_behind(sd15_case):
    c = sd15_case
    fasa = FASAConfig(mask=c.mask((2, 2, 10, 12)), omega=1.0)
    expected = run(c, fasa=fasa)[0]["samples"]
    guider = S.make_guider(c.model, c.model, c.pos, c.neg, c.fd_pos, c.fd_neg, CFG, fasa)
    latent_image, noise, mask, sigmas, sampler = S.prepare_sampling(c.model, c.latent, SEED, STEPS, "euler", "normal",
                                                                    1.0)

    def interrupt(step, x0, x, total):
        if step == 1:
            comfy.model_management.interrupt_current_processing(True)

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        guider.sample(noise, latent_image, sampler, sigmas, callback=interrupt, disable_pbar=True, seed=SEED)
    assert guider.run is None
    assert "patches_replace" not in c.model.model_options.get("transformer_options", {})
    again = guider.sample(noise, latent_image, sampler, sigmas, disable_pbar=True, seed=SEED)
    assert torch.equal(again[:1], expected)


def test_bad_mask_inputs_name_the_fix(sd15_case):
    c = sd15_case
    with pytest.raises(ValueError, match="batch of 3 but the latent has 1"):
        run(c, fasa=FASAConfig(mask=torch.ones(3, 128, 192)))
    with pytest.raises(ValueError, match="aspect ratios differ"):
        run(c, fasa=FASAConfig(mask=torch.ones(1, 128, 128)))
    with pytest.raises(ValueError, match="matches no self-attention layer"):
        run(c, fasa=FASAConfig(mask=torch.ones(1, 128, 192), layers="output:40"))
    with pytest.raises(ValueError, match="start_percent"):
        FASAConfig(mask=torch.ones(1, 8, 8), start_percent=0.8, end_percent=0.2)


def test_auto_store_records_keys_when_another_attn1_patch_is_present(sd15_case):
    m = sd15_case.model.clone()
    m.set_model_attn1_patch(lambda n, context, value, extra: (n, context, value))
    assert record(sd15_case, model=m).info.kind == "kv"
    assert record(sd15_case).info.kind == "x"
