"""FreeCure FASA Config as ComfyUI runs it (V3 and V1): omega_mode, and how prompts saved before it read."""
from __future__ import annotations

import sys

import pytest
import torch

from support.pack_loader import pack_nodes

PACK = "freecure_pack_fasa_config"
SAVED = dict(omega=-1.0, layers="reference", custom_layers="", start_percent=0.0, end_percent=1.0, uncond_blend=0.0,
             mask_resample="nearest")  # a FASA Config from a workflow saved before omega_mode


@pytest.fixture(scope="module")
def configs():
    v3 = pack_nodes(PACK)["FreeCureFASAConfig"]
    spec_mod, sampling = sys.modules[PACK + ".nodes.spec"], sys.modules[PACK + ".nodes.sampling"]
    v1 = spec_mod.to_v1(sampling.FASA_CONFIG)()

    def run(node, **kw):
        out = node.execute(mask=torch.ones(1, 8, 8), **{**SAVED, **kw})
        return (out.args if hasattr(out, "args") else out)[0]
    return [lambda **kw: run(v3, **kw), lambda **kw: run(v1, **kw)]


@pytest.mark.parametrize("which", [0, 1], ids=["v3", "v1"])
def test_omega_mode_and_saved_workflows(configs, which):
    run = configs[which]
    assert run().omega is None and run(omega=1.5).omega == 1.5  # saved prompts: -1 = auto, numbers as written
    assert run(omega_mode="-1 = auto").omega is None
    assert run(omega=-1.0, omega_mode="value").omega == -1.0  # -1 is reachable
    assert run(omega=0.0, omega_mode="value").omega == 0.0
    assert run(omega=3.0, omega_mode="auto").omega is None
    assert run(layers="single").layers == "single"
