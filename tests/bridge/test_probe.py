"""Layer discovery by a probe pass on real (tiny) ComfyUI models."""
import pytest
import torch

import comfy.model_base
from freecure_core.comfy_bridge.probe import UnsupportedModel, attn1_module, model_family, probe_sites
from freecure_core.fasa.layers import resolve_layers


def test_sd15_sites_in_call_order(sd15):
    sites = probe_sites(sd15.model, torch.device("cpu"))
    assert [s.key for s in sites] == [("input", 1, 0), ("input", 3, 0), ("middle", 0, 0)] + \
        [("output", i, 0) for i in range(4)]
    assert [s.level for s in sites] == [0, 1, 1, 1, 1, 0, 0]
    assert model_family(sd15.model) == "sd1"
    assert [s.key for s in resolve_layers("reference", sites, "sd1")] == [("output", i, 0) for i in range(4)]


def test_sdxl_reference_layers_match_the_reference_code(sdxl):
    sites = probe_sites(sdxl.model, torch.device("cpu"))
    assert len(sites) == 70 and model_family(sdxl.model) == "sdxl"
    ref = resolve_layers("reference", sites, "sdxl")
    assert [s.key for s in ref] == ([("output", 1, i) for i in range(6, 10)] + [("output", 2, i) for i in range(10)]
                                    + [("output", b, i) for b in (3, 4, 5) for i in range(2)])
    assert [s.order for s in ref] == list(range(50, 70))


def test_attn1_module_lookup_matches_the_probe(sdxl):
    unet = sdxl.model.diffusion_model
    for site in probe_sites(sdxl.model, torch.device("cpu"))[::7]:
        attn1 = attn1_module(unet, site)
        assert attn1.to_k.weight.shape[1] == attn1.to_q.weight.shape[1]


def test_other_architectures_are_named_in_the_error():
    class FakeFlux(comfy.model_base.BaseModel):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.diffusion_model = torch.nn.Identity()
    with pytest.raises(UnsupportedModel, match="FakeFlux.*SD1.x, SD2.x and SDXL.*FLUX"):
        model_family(FakeFlux())


def test_probe_runs_once_per_loaded_unet(sd15, monkeypatch):
    from freecure_core.comfy_bridge import probe
    first = probe.probe_sites(sd15.model, torch.device("cpu"))
    monkeypatch.setattr(probe, "_probe", lambda *a: pytest.fail("probed again"))
    assert probe.probe_sites(sd15.model, torch.device("cpu")) == first
