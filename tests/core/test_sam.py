"""SAM refinement: size inference from state dicts, strict .pth/.safetensors loading, box and point prompts,
and the error when segment-anything is not installed. Uses tiny random-weight SAMs with vit_b's key names."""
import importlib
import sys

import numpy as np
import pytest
import torch

from freecure_core.parsing import sam as sam_mod
from freecure_core.parsing.sam import (SamConfig, SegmentAnythingMissing, build_sam, evenly_spaced_globals,
                                       infer_config, load_sam, read_state_dict)

segment_anything = pytest.importorskip("segment_anything")
from segment_anything import SamPredictor, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l  # noqa: E402
from segment_anything.build_sam import _build_sam  # noqa: E402

TINY_1024 = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])


def _meta_state(builder):
    with torch.device("meta"):
        return builder().state_dict()


def _randomize_positions(model):
    """SAM zero-initialises positional parameters; make them random so that loading them is tested."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model


@pytest.fixture(scope="module")
def tiny_sam_1024():
    """SAM's own builder at 1024 px with a 64-wide, 2-block encoder (block 0 windowed, block 1 global)."""
    torch.manual_seed(0)
    return _randomize_positions(_build_sam(**TINY_1024)).eval()


@pytest.fixture(scope="module")
def tiny_files(tiny_sam_1024, tmp_path_factory):
    from safetensors.torch import save_file
    folder = tmp_path_factory.mktemp("sams")
    state = {k: v.contiguous() for k, v in tiny_sam_1024.state_dict().items()}
    torch.save(state, folder / "tiny_sam.pth")
    save_file(state, str(folder / "tiny_sam.safetensors"))
    return folder / "tiny_sam.pth", folder / "tiny_sam.safetensors"


@pytest.fixture(scope="module")
def astronaut_small():
    from skimage.data import astronaut
    img = torch.from_numpy(astronaut()).float().div(255).permute(2, 0, 1)[None]
    img = torch.nn.functional.interpolate(img, size=(96, 128), mode="area")  # non-square on purpose
    return img[0].permute(1, 2, 0).contiguous()  # (H, W, 3) in 0..1


def test_tiny_sam_has_vit_b_key_names():
    vit_b = _meta_state(build_sam_vit_b)
    with torch.device("meta"):
        tiny = _build_sam(**TINY_1024).state_dict()
    first_two = {k for k in vit_b if not k.startswith("image_encoder.blocks.") or k.split(".")[2] in ("0", "1")}
    assert set(tiny) == first_two
    same_shape = [k for k in tiny if not k.startswith("image_encoder.") and tiny[k].shape == vit_b[k].shape]
    assert len(same_shape) == len([k for k in tiny if not k.startswith("image_encoder.")])  # decoder identical


@pytest.mark.parametrize("builder, name, heads, depth, globals_", [
    (build_sam_vit_b, "vit_b", 12, 12, (2, 5, 8, 11)),
    (build_sam_vit_l, "vit_l", 16, 24, (5, 11, 17, 23)),
    (build_sam_vit_h, "vit_h", 16, 32, (7, 15, 23, 31)),
])
def test_infer_config_of_released_models(builder, name, heads, depth, globals_):
    config = infer_config(_meta_state(builder))
    assert (config.num_heads, config.depth, config.global_attn_indexes) == (heads, depth, globals_)
    assert (config.img_size, config.patch_size, config.window_size, config.out_chans) == (1024, 16, 14, 256)
    assert config.name == name
    assert evenly_spaced_globals(depth) == globals_  # the rule used when a checkpoint has no relative positions


def test_infer_config_of_tiny_model(tiny_sam_1024):
    config = infer_config(tiny_sam_1024.state_dict())
    assert config == SamConfig(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,))
    assert config.name.startswith("custom ViT")


@pytest.mark.parametrize("which", [0, 1])
def test_load_pth_and_safetensors_then_refine_box(tiny_sam_1024, tiny_files, astronaut_small, which):
    refiner = load_sam(str(tiny_files[which]), device="cpu")
    assert refiner.config == infer_config(tiny_sam_1024.state_dict())
    loaded = refiner.model.state_dict()
    for k, v in tiny_sam_1024.state_dict().items():
        assert torch.equal(loaded[k], v), k

    box = (30, 10, 100, 90)
    mask = refiner.refine_box(astronaut_small, box)
    assert mask.shape == astronaut_small.shape[:2] and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert refiner.refine_box(astronaut_small, box, multimask=True).shape == mask.shape

    # The loaded model predicts exactly what the model that was saved predicts.
    reference = SamPredictor(tiny_sam_1024)
    reference.set_image((astronaut_small.numpy() * 255 + 0.5).astype(np.uint8))
    want, _, _ = reference.predict(box=np.array(box, dtype=np.float32), multimask_output=False, return_logits=True)
    got, _, _ = refiner.predictor.predict(box=np.array(box, dtype=np.float32), multimask_output=False,
                                          return_logits=True)
    assert np.allclose(got, want, atol=1e-5)
    assert torch.equal(mask, torch.from_numpy((want[0] > 0).astype(np.float32)))


def test_custom_img_size_points_and_embedding_reuse(tmp_path, astronaut_small, monkeypatch):
    config = SamConfig(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=(1,), img_size=256, window_size=7)
    torch.manual_seed(1)
    model = _randomize_positions(build_sam(config, "cpu"))
    torch.save(model.state_dict(), tmp_path / "small.pth")
    refiner = load_sam(str(tmp_path / "small.pth"))
    assert refiner.config == config

    calls = []
    original = refiner.predictor.set_image
    monkeypatch.setattr(refiner.predictor, "set_image", lambda *a, **k: (calls.append(1), original(*a, **k)))
    one = refiner.segment_points(astronaut_small, [(64, 40)], [1])
    two = refiner.segment_points(astronaut_small, [(64, 40), (5, 5)], [1, 0], box=(30, 10, 100, 90))
    assert one.shape == two.shape == astronaut_small.shape[:2]
    assert set(torch.cat([one, two]).unique().tolist()) <= {0.0, 1.0}
    assert len(calls) == 1  # same image: the embedding is computed once
    refiner.refine_box(astronaut_small.flip(0), (0, 0, 50, 50))
    assert len(calls) == 2


def test_bad_prompts_name_the_fix(tiny_files, astronaut_small):
    refiner = load_sam(str(tiny_files[0]))
    with pytest.raises(ValueError, match="four pixel numbers"):
        refiner.refine_box(astronaut_small, (1, 2, 3))
    with pytest.raises(ValueError, match="one label per point"):
        refiner.segment_points(astronaut_small, [(1, 2), (3, 4)], [1])
    with pytest.raises(ValueError, match="1 = object"):
        refiner.segment_points(astronaut_small, [(1, 2)], [2])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        refiner.refine_box(astronaut_small[..., 0], (0, 0, 5, 5))


def test_strict_loading_lists_missing_and_unexpected_keys(tiny_sam_1024, tmp_path):
    state = dict(tiny_sam_1024.state_dict())
    state.pop("mask_decoder.iou_token.weight")
    state["mask_decoder.hf_token.weight"] = torch.zeros(1, 256)  # an HQ-SAM key
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(ValueError) as err:
        load_sam(str(tmp_path / "odd.pth"))
    text = str(err.value)
    assert "Missing keys: mask_decoder.iou_token.weight" in text
    assert "Unexpected keys: mask_decoder.hf_token.weight" in text


def test_not_a_sam_checkpoint_and_missing_file(tmp_path):
    torch.save({"vision_encoder.patch_embed.projection.weight": torch.zeros(2, 3, 16, 16)}, tmp_path / "hf.pth")
    with pytest.raises(ValueError, match="not an original segment-anything"):
        load_sam(str(tmp_path / "hf.pth"))
    with pytest.raises(FileNotFoundError, match="models/sams"):
        read_state_dict(str(tmp_path / "nope.pth"))


def test_missing_package_gives_the_install_command(monkeypatch, tiny_files):
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    monkeypatch.delitem(sys.modules, "freecure_core.parsing.sam")
    monkeypatch.setattr(sys.modules["freecure_core.parsing"], "sam", sam_mod)  # restored after the test
    fresh = importlib.import_module("freecure_core.parsing.sam")  # importing never needs the package
    with pytest.raises(ImportError, match="pip install segment-anything") as err:
        fresh.load_sam(str(tiny_files[0]))
    assert isinstance(err.value, fresh.SegmentAnythingMissing)
    with pytest.raises(sam_mod.SegmentAnythingMissing):
        sam_mod.build_sam(SamConfig(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,)), "meta")
