"""No device-to-host synchronisation inside the FASA attention patches (issue 19, item 2).

On the CPU nothing ever waits for a device, so this test watches, with a TorchDispatchMode around every FASA patch
call, for the operations that make the host wait for a GPU: reading a tensor's value on the host (bool(), item(),
float(): aten._local_scalar_dense, aten.is_nonzero, aten.equal), outputs whose size depends on values (nonzero,
masked_select, boolean indexing, unique) and tensors built from Python data (aten.lift_fresh: a host-to-device copy
on a GPU). The key selections are worked out once per run and token grid, at the first evaluation, from the CPU mask;
from the second evaluation on, no FASA call may run any of these. ComfyUI's attention for the plain rows is set to
SDPA, what ComfyUI uses on a GPU. bench/gpu_check.sh checks the same on CUDA with
torch.cuda.set_sync_debug_mode("error").
"""
from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import comfy.ldm.modules.attention as comfy_attention
import nodes as comfy_nodes
from support.tiny_flux import build_tiny_flux, flux_conditioning

from freecure_core.comfy_bridge import flux as flux_bridge
from freecure_core.comfy_bridge import patches
from freecure_core.comfy_bridge import sampling as S
from freecure_core.fasa.config import FASAConfig

aten = torch.ops.aten
HOST_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
              aten.nonzero.default, aten.masked_select.default, aten.lift_fresh.default,
              aten.lift_fresh_copy.default, aten._unique2.default, aten.unique_dim.default,
              aten.unique_consecutive.default}


class HostSyncWatch(TorchDispatchMode):
    """Notes every operation that would make the host wait for a GPU (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HOST_READS:
            self.seen.append(str(func))
        elif func is aten.index.Tensor and any(
                isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1]):
            self.seen.append("boolean indexing")
        return func(*args, **kwargs)


@pytest.fixture
def sdpa_plain_rows(monkeypatch):
    monkeypatch.setattr(comfy_attention, "optimized_attention", comfy_attention.attention_pytorch)


@pytest.fixture
def watched_sd(monkeypatch):
    """Every FASA (PD) patch call of the SD runs, with the ops it ran after the first evaluation."""
    calls = []
    original = patches.FasaRun.consume_patch

    def consume_patch(self, site):
        fn = original(self, site)

        def watched(q, k, v, extra_options):
            before = self.fasa_calls
            with HostSyncWatch() as watch:
                out = fn(q, k, v, extra_options)
            if self.eval_index >= 1:
                calls.append((self.eval_index, site.label(), self.fasa_calls > before, watch.seen))
            return out
        return watched
    monkeypatch.setattr(patches.FasaRun, "consume_patch", consume_patch)
    return calls


def _check(calls):
    acted = [c for c in calls if c[2]]
    assert acted, "FASA never acted after the first evaluation: the check would prove nothing"
    bad = [c for c in calls if c[3]]
    assert not bad, f"host reads inside FASA calls: {bad[:3]}"


@pytest.mark.parametrize("mode", ["lockstep", "replay"])
@pytest.mark.parametrize("soft", [False, True], ids=["binary", "soft"])
def test_sd_fasa_calls_never_read_values_on_the_host(sd15_case, sdpa_plain_rows, watched_sd, mode, soft):
    c = sd15_case
    mask = c.mask((3, 4, 11, 16))
    if soft:
        mask = mask * 0.6
    fasa = FASAConfig(mask=mask, omega=1.5, uncond_blend=0.3)
    kv = None
    if mode == "replay":
        _, kv = S.sample_foundation(c.model, c.fd_pos, c.fd_neg, c.latent, 3, 4, 5.0, "euler", "normal", 1.0,
                                    "cond+uncond", "reference", "kv")
    _, _, report = S.sample_freecure(c.model, c.model, c.pos, c.neg, c.fd_pos, c.fd_neg, c.latent, 3, 4, 5.0,
                                     "euler", "normal", 1.0, fasa, kv)
    _check(watched_sd)
    if mode == "replay":  # what the replay read from its record: every FASA call's rows, nothing copied on the CPU
        traffic = report["record_traffic"]
        assert traffic["read_bytes"] > 0 and traffic["copied_bytes"] == 0


@pytest.fixture(scope="module")
def flux_dev():
    return build_tiny_flux(0, guidance_embed=True)


@pytest.mark.parametrize("mode", ["lockstep", "replay"])
def test_flux_fasa_calls_never_read_values_on_the_host(flux_dev, sdpa_plain_rows, monkeypatch, mode):
    calls = []
    original = flux_bridge.FluxRun._override

    def override(self, role, previous):
        fn = original(self, role, previous)
        if role != "consume":
            return fn

        def watched(func, *args, **kwargs):
            before = self.fasa_calls
            with HostSyncWatch() as watch:
                out = fn(func, *args, **kwargs)
            if self.eval_index >= 1:
                calls.append((self.eval_index, "flux", self.fasa_calls > before, watch.seen))
            return out
        watched.freecure_run = self
        return watched
    monkeypatch.setattr(flux_bridge.FluxRun, "_override", override)
    pos, neg, fd_pos = flux_conditioning(1), flux_conditioning(2), flux_conditioning(3)
    latent = {"samples": torch.zeros(1, 16, 8, 12)}
    mask = torch.zeros(1, 64, 96)
    mask[:, 16:48, 24:72] = 1
    kv = None
    if mode == "replay":
        _, kv = S.sample_foundation(flux_dev, fd_pos, neg, latent, 7, 3, 1.0, "euler", "simple", 1.0, record="cond",
                                    layers="all")
    S.sample_freecure(flux_dev, flux_dev, pos, neg, fd_pos, neg, latent, 7, 3, 1.0, "euler", "simple", 1.0,
                      FASAConfig(mask=mask, omega=1.0, layers="all"), kv=kv)
    _check(calls)


def test_the_watch_sees_what_the_old_patch_did():
    """The watch is not blind: the per-call reads the patches used to make are flagged."""
    mask = torch.rand(16) > 0.5
    with HostSyncWatch() as watch:
        bool((mask > 0.5).any())
        mask.nonzero()
        torch.arange(16)[mask]
        torch.tensor([0, 1])
    assert len(watch.seen) == 4, watch.seen
    assert comfy_nodes is not None
