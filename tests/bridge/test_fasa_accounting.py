"""FASA accounting and models whose forward another node replaced (issue 17, items 3 and 4), in-process.

* Every stage-3 run reports where FASA acted against where it should have (each in-window model evaluation x each
  chosen layer whose token grid the mask touches), for SD and FLUX, replay and lockstep; the node text says it.
* A FLUX model whose ``forward_orig`` is replaced by a loop that calls the blocks without ``transformer_options`` (what
  the lldacing PuLID-FLUX port does during sampling) still gets FASA, bit-identical to the stock loop.
* A replaced ``forward_orig`` that cannot take ComfyUI's arguments (the balazik port) is refused by name; a forward
  that runs no block (a cache node's skipped step), and an SD wrapper that drops FreeCure's patches, are errors
  (FasaNotActing), never a silent plain sample; an empty mask is reported as "did not run" and is no error.
"""
from __future__ import annotations

import inspect
import types

import pytest
import torch

from support.tiny_flux import build_tiny_flux, flux_conditioning

from freecure_core.comfy_bridge import sampling as S
from freecure_core.comfy_bridge.checks import FreeCureConflict
from freecure_core.fasa.accounting import FasaNotActing
from freecure_core.fasa.config import FASAConfig

H, W, STEPS = 8, 12, 3  # FLUX latent 8x12 -> 4x6 image tokens


# ------------------------------------------------------------------------------------------------ FLUX
@pytest.fixture(scope="module")
def flux():
    return build_tiny_flux(0, guidance_embed=True)


def _flux_mask(box=None):
    m = torch.zeros(1, H * 8, W * 8)
    if box is not None:
        t, l, b, r = box
        m[:, t:b, l:r] = 1
    return m


def _flux_run(model, fasa, kv=None, cfg=1.0):
    pos, neg, fd_pos = (flux_conditioning(s, guidance=3.5) for s in (1, 2, 3))
    latent = {"samples": torch.zeros(1, 16, H, W)}
    if kv == "record":
        _, kv = S.sample_foundation(model, fd_pos, neg, latent, 7, STEPS, cfg, "euler", "simple", 1.0,
                                    record="cond", layers=fasa.layers)
    pd, fd, report = S.sample_freecure(model, model, pos, neg, fd_pos, neg, latent, 7, STEPS, cfg, "euler",
                                       "simple", 1.0, fasa, kv=kv)
    return pd["samples"], report


class replaced_forward_orig:
    """Puts `fn` (bound to the model) in place of the FLUX model's forward_orig, as a node that brings its own block
    loop does, and takes it away again."""

    def __init__(self, model, fn):
        self.dm, self.fn = model.model.diffusion_model, fn

    def __enter__(self):
        self.dm.forward_orig = types.MethodType(self.fn, self.dm)

    def __exit__(self, *exc):
        del self.dm.forward_orig


def loop_without_options(self, *args, **kwargs):
    """ComfyUI's own block loop, given empty transformer_options: the blocks get none of the call's options."""
    stock = type(self).forward_orig
    bound = inspect.signature(stock).bind(self, *args, **kwargs)
    bound.arguments["transformer_options"] = {}
    return stock(*bound.args, **bound.kwargs)


def eight_argument_loop(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, control=None):
    """A forward_orig that takes no transformer_options (the balazik port's signature)."""
    raise AssertionError("never reached: FreeCure refuses the model before sampling")


def cached_output(self, img, *args, transformer_options={}, **kwargs):
    """A forward_orig that runs no block at all (as a cache node does on the steps it skips): FLUX's patch tokens
    have as many output as input channels, so zeros of the input's shape are a well-formed output."""
    return torch.zeros_like(img)


@pytest.mark.parametrize("mode", ["lockstep", "replay"])
def test_flux_account_every_block_every_step(flux, mode):
    fasa = FASAConfig(mask=_flux_mask((8, 16, 40, 64)), omega=2.0, layers="all")
    _, report = _flux_run(flux, fasa, "record" if mode == "replay" else None)
    blocks = len(report["layers_active"])
    assert blocks == len(report["mask_coverage"]) > 0
    assert report["mode"] == mode and report["evals_in_window"] == STEPS
    assert report["fasa_places"] == report["fasa_places_expected"] == STEPS * blocks
    assert report["layers_hit"] == report["layers_active"]
    assert 0 < report["mask_coverage"][report["layers_hit"][0]] < 1
    assert report["text"].startswith("FASA ran at every expected place") and f"{STEPS * blocks}/" in report["text"]
    assert S.describe(report) == report["text"]


def test_flux_empty_mask_reports_that_fasa_did_not_run(flux):
    _, report = _flux_run(flux, FASAConfig(mask=_flux_mask(), omega=2.0))
    assert report["fasa_places_expected"] == 0 and report["fasa_places"] == 0
    assert report["text"].startswith("FASA did not run: the mask is empty")


@pytest.mark.parametrize("mode", ["lockstep", "replay"])
def test_flux_fasa_survives_a_replaced_block_loop(flux, mode):
    fasa = FASAConfig(mask=_flux_mask((8, 16, 40, 64)), omega=2.0, layers="all")
    stock, stock_report = _flux_run(flux, fasa, "record" if mode == "replay" else None)
    with replaced_forward_orig(flux, loop_without_options):
        replaced, report = _flux_run(flux, fasa, "record" if mode == "replay" else None)
    assert report["fasa_places"] == report["fasa_places_expected"] == stock_report["fasa_places"] > 0
    assert torch.equal(replaced, stock)


def test_flux_forward_orig_without_transformer_options_is_refused_by_name(flux):
    fasa = FASAConfig(mask=_flux_mask((8, 16, 40, 64)), omega=2.0)
    with replaced_forward_orig(flux, eight_argument_loop):
        with pytest.raises(FreeCureConflict) as err:
            _flux_run(flux, fasa)
    msg = str(err.value)
    assert "eight_argument_loop" in msg and "transformer_options" in msg and "reload" in msg


def test_flux_forward_that_runs_no_block_is_an_error_not_a_plain_sample(flux):
    fasa = FASAConfig(mask=_flux_mask((8, 16, 40, 64)), omega=2.0)
    with replaced_forward_orig(flux, cached_output):
        with pytest.raises(FasaNotActing) as err:
            _flux_run(flux, fasa)
    assert "first model evaluation" in str(err.value) and "forward" in str(err.value)
    with replaced_forward_orig(flux, cached_output):
        _, report = _flux_run(flux, FASAConfig(mask=_flux_mask(), omega=2.0))  # empty mask: no FASA wanted
    assert report["fasa_places_expected"] == 0


# ------------------------------------------------------------------------------------------------ SD
def _sd_run(case, fasa, kv=None, model=None):
    pd, fd, report = S.sample_freecure(model or case.model, case.model, case.pos, case.neg, case.fd_pos, case.fd_neg,
                                       case.latent, 3, 4, 5.0, "euler", "normal", 1.0, fasa, kv)
    return pd["samples"], report


@pytest.mark.parametrize("mode", ["lockstep", "replay"])
def test_sd_account_every_layer_every_step(sd15_case, mode):
    c = sd15_case
    fasa = FASAConfig(mask=c.mask((2, 3, 10, 15)), omega=1.0)
    kv = None
    if mode == "replay":
        _, kv = S.sample_foundation(c.model, c.fd_pos, c.fd_neg, c.latent, 3, 4, 5.0, "euler", "normal", 1.0)
    _, report = _sd_run(c, fasa, kv)
    assert report["mode"] == mode and report["evals_in_window"] == 4
    assert len(report["layers_active"]) == len(report["sites"]) > 0
    assert report["fasa_places"] == report["fasa_places_expected"] == 4 * len(report["sites"])
    assert report["text"].startswith("FASA ran at every expected place")


def test_sd_window_counts_only_steps_inside_it(sd15_case):
    c = sd15_case
    fasa = FASAConfig(mask=c.mask((2, 3, 10, 15)), omega=1.0, start_percent=0.5)
    _, report = _sd_run(c, fasa)
    assert 0 < report["evals_in_window"] < 4
    assert report["fasa_places"] == report["fasa_places_expected"] == report["evals_in_window"] * len(report["sites"])


def test_sd_wrapper_that_drops_freecure_patches_is_an_error(sd15_case):
    c = sd15_case

    def drop_attention_patches(apply_model, args):
        c_ = dict(args["c"])
        to = dict(c_.get("transformer_options", {}))
        to.pop("patches_replace", None)
        c_["transformer_options"] = to
        return apply_model(args["input"], args["timestep"], **c_)

    model = c.model.clone()
    model.set_model_unet_function_wrapper(drop_attention_patches)
    fasa = FASAConfig(mask=c.mask((2, 3, 10, 15)), omega=1.0)
    with pytest.raises(FasaNotActing) as err:
        _sd_run(c, fasa, model=model)
    assert "none of its" in str(err.value) and "Likely causes" in str(err.value)
