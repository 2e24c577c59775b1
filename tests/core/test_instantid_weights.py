"""InstantID adapter: the Resampler against an independent computation, the file layouts, and every refusal."""
import math

import pytest
import torch

from freecure_core.convert import identify
from freecure_core.identity.instantid_weights import (InstantIDWeights, check_adapter_keys, instantid_from_state_dict,
                                                      load_instantid, split_instantid_state_dict,
                                                      validate_instantid_state_dict)
from freecure_core.identity.resampler import INSTANTID_CONFIG, Resampler, resampler_config
from support.tiny_instantid import (flat_instantid_state, random_instantid_state, write_instantid_bin,
                                    write_instantid_safetensors)

TINY = dict(dim=64, depth=2, heads=2, num_queries=4, output_dim=48, ff_mult=2, layers=70)


class NotATensor:
    """A custom object a weights-only load must refuse to unpickle."""


def _layer_norm(t, w, b, eps=1e-5):
    mean = t.mean(-1, keepdim=True)
    var = ((t - mean) ** 2).mean(-1, keepdim=True)
    return (t - mean) / torch.sqrt(var + eps) * w + b


def reference_tokens(sd: dict, embeds: torch.Tensor, heads: int) -> torch.Tensor:
    """The Resampler written out head by head in float64, straight from the state dict."""
    sd = {k: v.double() for k, v in sd.items()}
    x = embeds.double()
    x = x[:, None] if x.dim() == 2 else x
    x = torch.einsum("bne,de->bnd", x, sd["proj_in.weight"]) + sd["proj_in.bias"]
    lat = sd["latents"][0][None].expand(x.shape[0], -1, -1)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
    for i in range(depth):
        p = lambda name: sd[f"layers.{i}.{name}"]
        xn = _layer_norm(x, p("0.norm1.weight"), p("0.norm1.bias"))
        ln = _layer_norm(lat, p("0.norm2.weight"), p("0.norm2.bias"))
        q = torch.einsum("bqd,id->bqi", ln, p("0.to_q.weight"))
        kv = torch.einsum("bkd,id->bki", torch.cat([xn, ln], 1), p("0.to_kv.weight"))
        inner = q.shape[-1]
        k, v = kv[..., :inner], kv[..., inner:]
        outs = []
        for h in range(heads):
            cols = slice(h * 64, (h + 1) * 64)
            scores = torch.einsum("bqc,bkc->bqk", q[..., cols], k[..., cols]) / math.sqrt(64)
            outs.append(torch.einsum("bqk,bkc->bqc", scores.softmax(-1), v[..., cols]))
        lat = lat + torch.einsum("bqi,di->bqd", torch.cat(outs, -1), p("0.to_out.weight"))
        hid = torch.nn.functional.gelu(_layer_norm(lat, p("1.0.weight"), p("1.0.bias")) @ p("1.1.weight").T)
        lat = lat + hid @ p("1.3.weight").T
    out = lat @ sd["proj_out.weight"].T + sd["proj_out.bias"]
    return _layer_norm(out, sd["norm_out.weight"], sd["norm_out.bias"])


def _perturbed_state(seed=0, **kw):
    """A tiny state whose LayerNorms are not the identity, so the parity test sees them."""
    state = random_instantid_state(seed=seed, **{**TINY, **kw})
    g = torch.Generator().manual_seed(seed + 1)
    for key, t in state["image_proj"].items():
        if "norm" in key or ".1.0." in key:
            state["image_proj"][key] = t + 0.1 * torch.randn(t.shape, generator=g)
    return state


# ------------------------------------------------------------------------------------------- Resampler

def test_resampler_matches_an_independent_head_by_head_computation():
    state = _perturbed_state(depth=3, heads=3)
    weights = instantid_from_state_dict(state)
    embeds = torch.randn(2, 512, generator=torch.Generator().manual_seed(5)) * 20  # insightface norms are ~20
    got = weights.face_tokens(embeds)
    assert got.shape == (2, 4, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference_tokens(state["image_proj"], embeds, heads=3).float(),
                               rtol=1e-4, atol=1e-4)
    seq = embeds.reshape(1, 2, 512)  # (B, N, E): both embeddings as the keys/values of one sample
    torch.testing.assert_close(weights.face_tokens(seq), reference_tokens(state["image_proj"], seq, 3).float(),
                               rtol=1e-4, atol=1e-4)


def test_zero_embedding_gives_real_tokens_not_zeros():
    weights = instantid_from_state_dict(_perturbed_state())
    zero = weights.face_tokens(torch.zeros(1, 512))
    face = weights.face_tokens(torch.randn(1, 512) * 20)
    assert zero.abs().mean() > 0.1 and torch.isfinite(zero).all()
    assert not torch.allclose(zero, face, atol=1e-3)
    torch.testing.assert_close(zero, reference_tokens(weights.resampler.state_dict(), torch.zeros(1, 512), 2).float(),
                               rtol=1e-4, atol=1e-4)


def test_half_precision_runs_softmax_in_float32_and_stays_close():
    weights = instantid_from_state_dict(_perturbed_state())
    embeds = torch.randn(2, 512) * 20
    half = Resampler(**weights.resampler.config).to(torch.bfloat16)
    half.load_state_dict(weights.resampler.state_dict())
    out = half(embeds.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), weights.face_tokens(embeds), rtol=0.1, atol=0.1)


def test_the_real_instantid_layout_is_the_module_layout():
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Resampler(**INSTANTID_CONFIG).state_dict().items()}
    expected = {"latents": (1, 16, 1280), "proj_in.weight": (1280, 512), "proj_in.bias": (1280,),
                "proj_out.weight": (2048, 1280), "proj_out.bias": (2048,), "norm_out.weight": (2048,),
                "norm_out.bias": (2048,)}
    for i in range(4):
        expected.update({f"layers.{i}.0.norm1.weight": (1280,), f"layers.{i}.0.norm1.bias": (1280,),
                         f"layers.{i}.0.norm2.weight": (1280,), f"layers.{i}.0.norm2.bias": (1280,),
                         f"layers.{i}.0.to_q.weight": (1280, 1280), f"layers.{i}.0.to_kv.weight": (2560, 1280),
                         f"layers.{i}.0.to_out.weight": (1280, 1280), f"layers.{i}.1.0.weight": (1280,),
                         f"layers.{i}.1.0.bias": (1280,), f"layers.{i}.1.1.weight": (5120, 1280),
                         f"layers.{i}.1.3.weight": (1280, 5120)})
    assert shapes == expected
    with torch.device("meta"):
        real = {k: torch.empty(s) for k, s in expected.items()}
    assert resampler_config(real) == INSTANTID_CONFIG


def test_config_is_inferred_from_the_shapes():
    state = random_instantid_state(dim=32, depth=3, heads=3, num_queries=5, embedding_dim=512, output_dim=40,
                                   ff_mult=3, layers=2)
    assert resampler_config(state["image_proj"]) == {"dim": 32, "depth": 3, "dim_head": 64, "heads": 3,
                                                     "num_queries": 5, "embedding_dim": 512, "output_dim": 40,
                                                     "ff_mult": 3}
    with torch.device("meta"):
        keys = set(Resampler(**resampler_config(state["image_proj"])).state_dict())
    assert keys == set(state["image_proj"])


# --------------------------------------------------------------------------------------------- loading

def test_bin_safetensors_and_flat_pickle_load_to_the_same_adapter(tmp_path):
    state = random_instantid_state(**{**TINY, "hidden": lambda i: 16 + 8 * (i % 3)})
    write_instantid_bin(tmp_path / "ip-adapter.bin", state)
    write_instantid_safetensors(tmp_path / "ip-adapter.safetensors", state)
    torch.save(flat_instantid_state(state), tmp_path / "flat.pth")
    loaded = [load_instantid(str(tmp_path / name)) for name in ("ip-adapter.bin", "ip-adapter.safetensors",
                                                               "flat.pth")]
    embeds = torch.randn(3, 512) * 20
    tokens = [w.face_tokens(embeds) for w in loaded]
    assert torch.equal(tokens[0], tokens[1]) and torch.equal(tokens[0], tokens[2])
    w = loaded[0]
    assert isinstance(w, InstantIDWeights) and w.path == str(tmp_path / "ip-adapter.bin")
    assert (w.num_layers, w.cross_attention_dim, w.num_tokens, w.embedding_dim) == (70, 48, 4, 512)
    assert [t.shape[0] for t in w.to_k_ip[:4]] == [16, 24, 32, 16]
    assert torch.equal(w.to_k_ip[69], state["ip_adapter"]["139.to_k_ip.weight"])
    assert torch.equal(w.to_v_ip[1], state["ip_adapter"]["3.to_v_ip.weight"])
    assert not w.resampler.training and all(not p.requires_grad for p in w.resampler.parameters())
    assert {p.device.type for p in w.resampler.parameters()} == {"cpu"}


def test_fp16_files_keep_fp16_adapters_and_run_the_resampler_in_float32(tmp_path):
    state = random_instantid_state(**TINY)
    half = {part: {k: v.half() for k, v in sub.items()} for part, sub in state.items()}
    write_instantid_safetensors(tmp_path / "half.safetensors", half)
    w = load_instantid(str(tmp_path / "half.safetensors"))
    assert all(p.dtype == torch.float32 for p in w.resampler.parameters())
    assert w.to_k_ip[0].dtype == torch.float16  # half the RAM; layer_kv computes in float32
    assert w.face_tokens(torch.zeros(1, 512)).dtype == torch.float32


def test_split_accepts_nested_and_flat():
    state = random_instantid_state(**{**TINY, "layers": 2})
    nested = split_instantid_state_dict(state)
    flat = split_instantid_state_dict(flat_instantid_state(state))
    assert nested[0].keys() == flat[0].keys() == state["image_proj"].keys()
    assert nested[1].keys() == flat[1].keys() == {"1.to_k_ip.weight", "1.to_v_ip.weight", "3.to_k_ip.weight",
                                                  "3.to_v_ip.weight"}
    validate_instantid_state_dict(*flat)
    assert check_adapter_keys(*nested) == (2, 48)


def test_face_tokens_refuses_the_wrong_embedding_width():
    w = instantid_from_state_dict(random_instantid_state(**{**TINY, "layers": 1}))
    with pytest.raises(ValueError, match=r"FreeCure: .*\(B, 512\).*got \(1, 768\)"):
        w.face_tokens(torch.zeros(1, 768))
    with pytest.raises(ValueError, match="FreeCure"):
        w.face_tokens(torch.zeros(512))


# -------------------------------------------------------------------------------------------- refusals

def _drop(*keys):
    def edit(state):
        for k in keys:
            del state["ip_adapter"][k]
    return edit


def _add_even(state):
    state["ip_adapter"]["2.to_k_ip.weight"] = torch.zeros(32, 48)
    state["ip_adapter"]["2.to_v_ip.weight"] = torch.zeros(32, 48)


def _widen(state):
    state["ip_adapter"]["9.to_k_ip.weight"] = torch.zeros(32, 64)
    state["ip_adapter"]["9.to_v_ip.weight"] = torch.zeros(32, 64)


def _all_wider(state):
    for k in state["ip_adapter"]:
        state["ip_adapter"][k] = torch.zeros(32, 64)


def _ip_adapter_image_proj(state):
    state["image_proj"] = {"proj.weight": torch.zeros(4 * 48, 1280), "proj.bias": torch.zeros(4 * 48),
                           "norm.weight": torch.ones(48), "norm.bias": torch.zeros(48)}


def _plus_image_proj(state):
    state["image_proj"] = random_instantid_state(**{**TINY, "embedding_dim": 1280, "layers": 0})["image_proj"]


def _faceid_lora(state):
    state["ip_adapter"]["1.to_q_lora.down.weight"] = torch.zeros(128, 48)


def _drop_resampler_key(state):
    del state["image_proj"]["layers.1.0.norm1.weight"]


def _no_image_proj(state):
    state["image_proj"] = {}


@pytest.mark.parametrize("edit, message", [
    (_drop("1.to_k_ip.weight"), r"missing '1\.to_k_ip\.weight'"),
    (_drop("7.to_v_ip.weight"), r"missing '7\.to_v_ip\.weight'"),
    (_drop("1.to_k_ip.weight", "1.to_v_ip.weight"), r"missing .1\.to_k_ip\.weight., .1\.to_v_ip\.weight."),
    (_add_even, r"index\(es\) \[2\] are even"),
    (_widen, r"different in-widths \[48, 64\]"),
    (_all_wider, r"48-wide tokens but the ip_adapter weights take 64-wide"),
    (_ip_adapter_image_proj, r"IP-Adapter file \(not InstantID\).*models/ipadapter/"),
    (_plus_image_proj, r"IP-Adapter Plus file \(not InstantID\).*1280-wide CLIP"),
    (_faceid_lora, r"IP-Adapter FaceID file"),
    (_drop_resampler_key, r"not an InstantID image_proj.*missing key\(s\): layers\.1\.0\.norm1\.weight"),
    (_no_image_proj, r"no image_proj weights"),
])
def test_broken_or_foreign_adapters_are_refused_with_what_they_are(edit, message):
    state = random_instantid_state(**{**TINY, "layers": 5})
    edit(state)
    with pytest.raises(ValueError, match=message) as info:
        instantid_from_state_dict(state)
    text = str(info.value)
    assert text.startswith("FreeCure:") and "models/instantid/" in text


def test_other_model_files_are_named(tmp_path):
    bisenet_like = {"cp.resnet.conv1.weight": torch.zeros(64, 3, 7, 7),
                    "ffm.convblk.conv.weight": torch.zeros(4, 4, 1, 1), "conv_out.conv_out.weight": torch.zeros(19, 256, 1, 1)}
    torch.save(bisenet_like, tmp_path / "79999_iter.pth")
    with pytest.raises(ValueError, match=r"BiSeNet face parser.*not an InstantID adapter.*models/instantid/"):
        load_instantid(str(tmp_path / "79999_iter.pth"))
    controlnet = {"controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3),
                  "controlnet_down_blocks.0.weight": torch.zeros(4, 4, 1, 1)}
    with pytest.raises(ValueError, match=r"ControlNet \(InstantID's IdentityNet belongs in ComfyUI/models/controlnet/"):
        instantid_from_state_dict(controlnet)
    with pytest.raises(ValueError, match=r"first keys: 'weight'"):
        instantid_from_state_dict({"weight": torch.zeros(3)})
    torch.save(torch.zeros(3), tmp_path / "tensor.bin")
    with pytest.raises(ValueError, match="not a Tensor"):
        load_instantid(str(tmp_path / "tensor.bin"))


def test_missing_unreadable_and_unsafe_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"FreeCure: InstantID adapter not found.*ComfyUI/models/instantid/"):
        load_instantid(str(tmp_path / "ip-adapter.bin"))
    state = random_instantid_state(**{**TINY, "layers": 1})
    state["ip_adapter"]["extra"] = NotATensor()
    torch.save(state, tmp_path / "unsafe.bin")
    refused = r"FreeCure: refusing .*weights_only=True.*pickled .*NotATensor object"
    with pytest.raises(ValueError, match=refused) as info:
        load_instantid(str(tmp_path / "unsafe.bin"))
    assert "weights_only=False" not in str(info.value) and "\x1b" not in str(info.value)
    (tmp_path / "junk.bin").write_bytes(b"not a torch file" * 8)
    with pytest.raises(ValueError, match="FreeCure: refusing"):
        load_instantid(str(tmp_path / "junk.bin"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable .safetensors"):
        load_instantid(str(tmp_path / "junk.safetensors"))
    (tmp_path / "adapter.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.bin, \.pt, \.pth, \.ckpt or \.safetensors"):
        load_instantid(str(tmp_path / "adapter.onnx"))


def test_convert_identifies_through_the_same_key_check():
    report = identify(flat_instantid_state(random_instantid_state(**{**TINY, "layers": 70})))
    assert report.kind == "instantid-adapter"
    assert report.details == {"cross_attention_dim": 48, "attention_layers": 70, "image_tokens": 4}
    ip_adapter_file = random_instantid_state(**{**TINY, "layers": 2})
    _ip_adapter_image_proj(ip_adapter_file)
    with pytest.raises(ValueError, match=r"IP-Adapter file \(not InstantID\)"):
        identify(flat_instantid_state(ip_adapter_file))
