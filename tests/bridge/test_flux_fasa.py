"""FASA for FLUX in-process (issue 10), on a tiny random FLUX-shaped model (ComfyUI's own FLUX transformer):

* an empty mask gives exactly the plain KSampler result, in replay and in lockstep; recording changes nothing (the
  foundation sampler equals a plain KSampler run) and lockstep's FD half equals the FD-only run;
* inside one attention call, the text-token outputs are exactly the plain ones, image rows change, and they equal an
  independent joint-softmax computation over [PD keys; in-mask FD keys + omega];
* a non-empty mask pulls PD's image tokens toward FD's inside the mask more than outside;
* replay equals lockstep (same weights), both for guidance-distilled (cfg 1, cond rows only) and CFG models, where
  the uncond rows keep plain attention;
* a replay with another seed, size or layer set is refused by name; SD settings FLUX does not use are refused.
"""
from __future__ import annotations

import pytest
import torch

import nodes as comfy_nodes
from support.tiny_flux import build_tiny_flux, flux_conditioning

from freecure_core.comfy_bridge import flux as F
from freecure_core.comfy_bridge import sampling as S
from freecure_core.fasa.config import FASAConfig
from freecure_core.fasa.record import ReplayMismatch as FluxReplayMismatch

H, W, STEPS = 8, 12, 3  # latent 8x12 -> 4x6 image tokens


@pytest.fixture(scope="module")
def dev():
    return build_tiny_flux(0, guidance_embed=True)


@pytest.fixture(scope="module")
def schnell():
    return build_tiny_flux(1, guidance_embed=False)


def _latent(batch=1):
    return {"samples": torch.zeros(batch, 16, H, W)}


def _mask(box=None):
    m = torch.zeros(1, H * 8, W * 8)
    if box is not None:
        t, l, b, r = box
        m[:, t:b, l:r] = 1
    return m


def _conds(guidance=3.5):
    return flux_conditioning(1, guidance=guidance), flux_conditioning(2, guidance=guidance), \
        flux_conditioning(3, guidance=guidance)


def _plain(model, pos, neg, cfg, seed=7):
    return comfy_nodes.common_ksampler(model, seed, STEPS, cfg, "euler", "simple", pos, neg, _latent())[0]["samples"]


def _record(model, fd_pos, neg, cfg, layers="reference", seed=7):
    lat, kv = S.sample_foundation(model, fd_pos, neg, _latent(), seed, STEPS, cfg, "euler", "simple", 1.0,
                                  record="cond", layers=layers)
    return lat["samples"], kv


def _freecure(model, pos, neg, fd_pos, cfg, fasa, kv=None, seed=7):
    pd, fd, report = S.sample_freecure(model, model, pos, neg, fd_pos, neg, _latent(), seed, STEPS, cfg, "euler",
                                       "simple", 1.0, fasa, kv=kv)
    return pd["samples"], fd["samples"], report


@pytest.mark.parametrize("variant,cfg", [("dev", 1.0), ("schnell", 2.5)])
def test_empty_mask_is_plain_sampling_and_recording_changes_nothing(request, variant, cfg):
    model = request.getfixturevalue(variant)
    pos, neg, fd_pos = _conds(3.5 if variant == "dev" else None)
    plain_pd, plain_fd = _plain(model, pos, neg, cfg), _plain(model, fd_pos, neg, cfg)
    fd, kv = _record(model, fd_pos, neg, cfg)
    assert torch.equal(fd, plain_fd) and isinstance(kv, F.FluxRecord) and kv.entries
    empty = FASAConfig(mask=_mask(), omega=2.0)
    pd_replay, fd_replay, rep = _freecure(model, pos, neg, fd_pos, cfg, empty, kv)
    assert torch.equal(pd_replay, plain_pd) and torch.equal(fd_replay, plain_fd)
    pd_lock, fd_lock, _ = _freecure(model, pos, neg, fd_pos, cfg, empty)
    assert torch.equal(pd_lock, plain_pd) and torch.equal(fd_lock, plain_fd)  # lockstep FD half = FD-only run
    assert rep["note"].startswith("the FASA mask is empty")


@pytest.mark.parametrize("variant,cfg", [("dev", 1.0), ("schnell", 2.5)])
def test_replay_equals_lockstep_and_fasa_changes_the_result(request, variant, cfg):
    model = request.getfixturevalue(variant)
    pos, neg, fd_pos = _conds(3.5 if variant == "dev" else None)
    fasa = FASAConfig(mask=_mask((16, 24, 48, 72)), omega=2.0)
    _, kv = _record(model, fd_pos, neg, cfg)
    pd_replay, _, rep = _freecure(model, pos, neg, fd_pos, cfg, fasa, kv)
    pd_lock, fd_lock, rep_lock = _freecure(model, pos, neg, fd_pos, cfg, fasa)
    assert torch.allclose(pd_replay, pd_lock, atol=2e-3)  # the record is fp16, lockstep keeps fp32
    assert not torch.allclose(pd_replay, _plain(model, pos, neg, cfg), atol=1e-4)
    n_single = len(model.model.diffusion_model.single_blocks)
    assert rep["fasa_calls"] == rep_lock["fasa_calls"] == STEPS * n_single  # one call per block and step, cond only
    assert rep["sites"] == [f"single:{j}" for j in range(n_single)] and rep["omega"] == 2.0
    assert rep["compacted_bytes"] < rep["store_bytes"]


def test_default_omega_for_flux_is_the_papers(dev):
    pos, neg, fd_pos = _conds()
    _, kv = _record(dev, fd_pos, neg, 1.0)
    _, _, rep = _freecure(dev, pos, neg, fd_pos, 1.0, FASAConfig(mask=_mask((0, 0, 32, 32))), kv)
    assert rep["omega"] == 2.0


class _Func:
    """Stands for ComfyUI's optimized_attention: plain SDPA in the (B, L, H*D) output layout."""

    def __call__(self, q, k, v, heads, skip_reshape=True, mask=None, transformer_options=None):
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def test_one_attention_call_text_rows_unchanged_image_rows_match_a_reference():
    g = torch.Generator().manual_seed(0)
    b, h, n_txt, n_img, d = 2, 2, 5, 6, 8
    q, k, v = (torch.randn(b, h, n_txt + n_img, d, generator=g) for _ in range(3))
    k_fd, v_fd = torch.randn(b, h, n_img, d, generator=g), torch.randn(b, h, n_img, d, generator=g)
    masks = torch.tensor([[0, 1, 1, 0, 0, 1.0]])
    info = F.FluxRecordInfo((("single", 0),), (), (1,), "", "", "")
    rec = F.FluxRecord(info, offload=False, dtype=torch.float32)
    rec.put(0, ("single", 0), k_fd, v_fd)
    run = F.FluxRun([("single", 0)], "replay", rec, omega=1.5, masks=masks)
    run.begin_eval(1.0)
    run.n_txt = n_txt
    override = run._override("consume", None)
    to = {"block_type": "single", "block_index": 0, "cond_or_uncond": [0]}
    plain = _Func()(q, k, v, h)
    out = override(_Func(), q, k, v, h, skip_reshape=True, transformer_options=to)
    assert torch.equal(out[:, :n_txt], plain[:, :n_txt])  # text tokens: untouched
    assert not torch.allclose(out[:, n_txt:], plain[:, n_txt:])
    keep = masks[0] > 0.5
    kk = torch.cat([k, k_fd[:, :, keep]], 2).double()
    vv = torch.cat([v, v_fd[:, :, keep]], 2).double()
    logits = q[:, :, n_txt:].double() @ kk.transpose(-1, -2) / d ** 0.5
    logits[..., k.shape[2]:] += 1.5
    ref = (logits.softmax(-1) @ vv).transpose(1, 2).reshape(b, n_img, h * d)
    assert torch.allclose(out[:, n_txt:].double(), ref, atol=1e-5)
    # another block, or an uncond chunk: plain; outside the sigma window: plain
    assert torch.equal(override(_Func(), q, k, v, h, skip_reshape=True,
                                transformer_options={**to, "block_index": 1}), plain)
    rec.put(0, ("single", 0), k_fd[1:], v_fd[1:])  # CFG: the record holds the cond rows only
    half = override(_Func(), q, k, v, h, skip_reshape=True, transformer_options={**to, "cond_or_uncond": [1, 0]})
    assert torch.equal(half[:1], plain[:1]) and torch.equal(half[1:], out[1:])  # uncond row plain, cond row FASA
    run.sigma_start, run.sigma_end = 0.5, 0.0
    assert torch.equal(override(_Func(), q, k, v, h, skip_reshape=True, transformer_options=to), plain)


def test_a_mask_moves_pd_image_tokens_toward_fd_inside_the_mask(dev):
    """FD keys carry the RoPE positions of the PD keys at the same places (the real FLUX RoPE of the tiny model).
    With position-dominated queries and keys, each PD image token inside the mask takes FD's value at its own place
    (omega 4 outweighs its PD twin), and tokens outside keep PD's: FASA moves PD toward FD inside the mask only."""
    from comfy.ldm.flux.math import apply_rope
    dm = dev.model.diffusion_model
    gh, gw, n_txt, d = 4, 6, 3, 128
    ids = torch.zeros(1, n_txt + gh * gw, 3)
    ids[0, n_txt:, 1] = torch.arange(gh).repeat_interleave(gw).float()
    ids[0, n_txt:, 2] = torch.arange(gw).repeat(gh).float()
    pe = dm.pe_embedder(ids)
    base = torch.ones(1, 1, n_txt + gh * gw, d) * 10.0  # sharp positional attention
    q, k = apply_rope(base, base, pe)
    g = torch.Generator().manual_seed(3)
    v_pd, v_fd = torch.randn(1, 1, n_txt + gh * gw, d, generator=g), torch.randn(1, 1, gh * gw, d, generator=g)
    mask = torch.zeros(gh, gw)
    mask[:2, :3] = 1
    inside = mask.flatten() > 0
    info = F.FluxRecordInfo((("single", 0),), (), (1,), "", "", "")
    rec = F.FluxRecord(info, offload=False, dtype=torch.float32)
    rec.put(0, ("single", 0), k[:, :, n_txt:], v_fd)  # FD keys = the same positions, after RoPE
    run = F.FluxRun([("single", 0)], "replay", rec, omega=4.0, masks=mask.flatten()[None])
    run.begin_eval(1.0)
    run.n_txt = n_txt
    to = {"block_type": "single", "block_index": 0, "cond_or_uncond": [0]}
    out = run._override("consume", None)(_Func(), q, k, v_pd, 1, skip_reshape=True, transformer_options=to)[0, n_txt:]
    plain = _Func()(q, k, v_pd, 1)[0, n_txt:]

    def closeness(x, ref):  # mean distance to the reference rows
        return (x - ref).norm(dim=-1)
    to_fd_before, to_fd_after = closeness(plain, v_fd[0, 0]), closeness(out, v_fd[0, 0])
    assert bool((to_fd_after[inside] < 0.5 * to_fd_before[inside]).all())  # inside: close to FD's own value
    to_pd_after = closeness(out, v_pd[0, 0, n_txt:])
    assert float(to_pd_after[~inside].mean()) < 0.25 * float(to_pd_after[inside].mean())  # outside: stays PD


def test_replay_mismatches_and_unsupported_settings_are_refused(dev):
    pos, neg, fd_pos = _conds()
    _, kv = _record(dev, fd_pos, neg, 1.0)
    fasa = FASAConfig(mask=_mask((0, 0, 32, 32)), omega=2.0)
    with pytest.raises(FluxReplayMismatch, match="same seed"):
        _freecure(dev, pos, neg, fd_pos, 1.0, fasa, kv, seed=8)
    with pytest.raises(FluxReplayMismatch, match="double block 0.*same layers"):
        _freecure(dev, pos, neg, fd_pos, 1.0, FASAConfig(mask=_mask((0, 0, 32, 32)), omega=2.0, layers="all"), kv)
    with pytest.raises(Exception, match="uncond_blend"):
        _freecure(dev, pos, neg, fd_pos, 1.0, FASAConfig(mask=_mask((0, 0, 32, 32)), uncond_blend=0.5), kv)
    with pytest.raises(ValueError, match="out of range.*2 double"):
        F.resolve_flux_layers("double:0-5", 2, 2)
    with pytest.raises(ValueError, match="not 'double'"):
        F.resolve_flux_layers("output:6-11", 2, 2)
    assert F.resolve_flux_layers("double:1, single", 2, 2) == [("double", 1), ("single", 0), ("single", 1)]
