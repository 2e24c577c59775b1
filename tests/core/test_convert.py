"""python -m freecure_core.convert: identifies the files FreeCure uses and writes them as safetensors."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from freecure_core.convert import convert, identify, load_tensors
from freecure_core.parsing.bisenet import random_bisenet, save_bisenet

ROOT = Path(__file__).resolve().parents[2]


def instantid_adapter(layers=4, ctx=2048):
    """An ip-adapter.bin-shaped nested dict (tiny Resampler, real key layout) with `layers` attn2 pairs."""
    from support.tiny_instantid import random_instantid_state
    return random_instantid_state(output_dim=ctx, layers=layers, hidden=[640] * layers, num_queries=16, seed=0)


def test_instantid_bin_to_fp16_safetensors(tmp_path):
    src, dst = tmp_path / "ip-adapter.bin", tmp_path / "ip-adapter.safetensors"
    torch.save(instantid_adapter(), src)
    report = convert(str(src), str(dst), fp16=True)
    assert report.kind == "instantid-adapter"
    assert report.details == {"cross_attention_dim": 2048, "attention_layers": 4, "image_tokens": 16}
    out = load_file(dst)
    flat = load_tensors(str(src))
    assert out.keys() == flat.keys() and "image_proj.latents" in out and "ip_adapter.7.to_v_ip.weight" in out
    assert all(t.dtype == torch.float16 for t in out.values())
    assert torch.allclose(out["image_proj.latents"].float(), flat["image_proj.latents"], atol=1e-2)


def test_bisenet_sam_controlnet_and_unknown_are_told_apart(tmp_path):
    save_bisenet(random_bisenet(0), tmp_path / "79999_iter.pth")
    assert identify(load_tensors(str(tmp_path / "79999_iter.pth"))).kind == "bisenet-face-parsing"
    diffusers_cn = {"controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3),
                    "controlnet_down_blocks.0.weight": torch.zeros(320, 320, 1, 1),
                    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": torch.zeros(640, 2048)}
    report = identify(diffusers_cn)
    assert report.kind == "controlnet-diffusers" and report.details["context_dim"] == 2048
    original_cn = {"control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
                   "control_model.zero_convs.0.0.weight": torch.zeros(320, 320, 1, 1)}
    assert identify(original_cn).kind == "controlnet-original"
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a model FreeCure knows"):
        convert(str(tmp_path / "other.pth"), str(tmp_path / "other.safetensors"))
    assert convert(str(tmp_path / "other.pth"), str(tmp_path / "other.safetensors"), force=True).kind == "unknown"


def test_cli_info_and_refusals(tmp_path):
    torch.save(instantid_adapter(layers=2), tmp_path / "ip-adapter.bin")
    cli = lambda *a: subprocess.run([sys.executable, "-m", "freecure_core.convert", *map(str, a)], cwd=ROOT,
                                    capture_output=True, text=True, timeout=300)
    info = cli("info", tmp_path / "ip-adapter.bin")
    assert info.returncode == 0 and "instantid-adapter" in info.stdout and "cross_attention_dim=2048" in info.stdout
    bad = cli(tmp_path / "ip-adapter.bin", tmp_path / "out.pth")
    assert bad.returncode != 0 and ".safetensors" in bad.stderr
    missing = cli("info", tmp_path / "nope.bin")
    assert missing.returncode != 0
