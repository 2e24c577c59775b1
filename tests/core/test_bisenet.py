"""BiSeNet face parser: exact 79999_iter.pth key layout, .pth/.safetensors round trips, parsing, refusals."""
import copy

import pytest
import torch

from freecure_core.parsing import bisenet
from freecure_core.parsing.bisenet import FaceParser, load_bisenet_state_dict, load_face_parser, save_bisenet
from freecure_core.parsing.schema import CELEBAMASK_HQ_19

skimage_data = pytest.importorskip("skimage.data")


def _bn(prefix, ch):
    return {f"{prefix}.weight": (ch,), f"{prefix}.bias": (ch,), f"{prefix}.running_mean": (ch,),
            f"{prefix}.running_var": (ch,), f"{prefix}.num_batches_tracked": ()}


def reference_layout(n_classes=19):
    """Key → shape of zllrunning face-parsing.PyTorch BiSeNet (model.py + resnet.py), written out by hand."""
    keys = {"cp.resnet.conv1.weight": (64, 3, 7, 7), **_bn("cp.resnet.bn1", 64)}
    c_in = 64
    for layer, c in enumerate((64, 128, 256, 512), start=1):
        for block in (0, 1):
            p = f"cp.resnet.layer{layer}.{block}"
            first_in = c_in if block == 0 else c
            keys[f"{p}.conv1.weight"] = (c, first_in, 3, 3)
            keys.update(_bn(f"{p}.bn1", c))
            keys[f"{p}.conv2.weight"] = (c, c, 3, 3)
            keys.update(_bn(f"{p}.bn2", c))
            if block == 0 and layer > 1:
                keys[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                keys.update(_bn(f"{p}.downsample.1", c))
        c_in = c

    def conv_bn_relu(prefix, c_out, c_in_, k):
        return {f"{prefix}.conv.weight": (c_out, c_in_, k, k), **_bn(f"{prefix}.bn", c_out)}

    for name, c in (("arm16", 256), ("arm32", 512)):
        keys.update(conv_bn_relu(f"cp.{name}.conv", 128, c, 3))
        keys[f"cp.{name}.conv_atten.weight"] = (128, 128, 1, 1)
        keys.update(_bn(f"cp.{name}.bn_atten", 128))
    keys.update(conv_bn_relu("cp.conv_head32", 128, 128, 3))
    keys.update(conv_bn_relu("cp.conv_head16", 128, 128, 3))
    keys.update(conv_bn_relu("cp.conv_avg", 128, 512, 1))
    keys.update(conv_bn_relu("ffm.convblk", 256, 256, 1))
    keys["ffm.conv1.weight"] = (64, 256, 1, 1)
    keys["ffm.conv2.weight"] = (256, 64, 1, 1)
    for head, c_in_, mid in (("conv_out", 256, 256), ("conv_out16", 128, 64), ("conv_out32", 128, 64)):
        keys.update(conv_bn_relu(f"{head}.conv", mid, c_in_, 3))
        keys[f"{head}.conv_out.weight"] = (n_classes, mid, 1, 1)
    return keys


@pytest.fixture(scope="module")
def model():
    return bisenet.random_bisenet(seed=0)


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bisenet")
    pth, st = folder / "79999_iter.pth", folder / "79999_iter.safetensors"
    save_bisenet(model, pth)
    save_bisenet(model, st)
    return pth, st


@pytest.fixture(scope="module")
def astronaut():
    return torch.from_numpy(skimage_data.astronaut()).float().div(255).unsqueeze(0)  # (1, 512, 512, 3)


def test_reference_layout_is_exact(model, files):
    expected = reference_layout()
    assert len(expected) == 191
    assert expected["cp.resnet.conv1.weight"] == (64, 3, 7, 7)
    assert expected["conv_out.conv_out.weight"] == (19, 256, 1, 1)
    assert expected["cp.resnet.layer3.0.downsample.0.weight"] == (256, 128, 1, 1)
    assert expected["ffm.conv1.weight"] == (64, 256, 1, 1)
    assert bisenet.expected_layout(19) == expected
    assert {k: tuple(v.shape) for k, v in bisenet.to_reference_layout(model).items()} == expected
    for path in files:
        state = load_bisenet_state_dict(path)
        assert {k: tuple(v.shape) for k, v in state.items()} == expected


def test_both_formats_load_and_parse_identically(model, files, astronaut):
    crop = astronaut[:, 20:320, 160:360].contiguous()  # (1, 300, 200, 3): non-square
    direct = FaceParser(model)
    results = []
    for path in files:
        parser = load_face_parser(path)
        assert parser.schema is CELEBAMASK_HQ_19 and parser.resolution == 512
        labels, crop_labels = parser.parse(astronaut), parser.parse(crop)
        assert labels.shape == (1, 512, 512) and crop_labels.shape == (1, 300, 200)
        for lab in (labels, crop_labels):
            assert lab.dtype == torch.int64 and 0 <= int(lab.min()) and int(lab.max()) <= 18
        results.append((labels, crop_labels))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    assert torch.equal(results[0][0], direct.parse(astronaut))
    assert len(results[0][0].unique()) >= 4  # the random net is not degenerate


def test_batches_and_progress_callback(model, astronaut):
    parser = FaceParser(model, resolution=128, batch_size=2)
    images = torch.cat([astronaut[:, :96, :64], astronaut[:, 100:196, 200:264], astronaut[:, 300:396, 300:364]])
    seen = []
    labels = parser.parse(images, on_image=seen.append)
    assert seen == [0, 1, 2] and labels.shape == (3, 96, 64)
    for i in range(3):
        assert torch.equal(labels[i], parser.parse(images[i:i + 1])[0])
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        parser.parse(images.permute(0, 3, 1, 2))


def test_reduced_precision_runs(model, astronaut):
    parser = FaceParser(copy.deepcopy(model), resolution=128, dtype=torch.bfloat16)  # casts in place
    labels = parser.parse(astronaut[:, ::4, ::4])
    assert labels.shape == (1, 128, 128) and labels.dtype == torch.int64
    assert next(parser.model.parameters()).dtype == torch.bfloat16


def test_wrapped_and_prefixed_checkpoints_load(model, tmp_path):
    state = bisenet.to_reference_layout(model)
    path = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    loaded = load_bisenet_state_dict(path)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    # checkpoints saved before BatchNorm counted batches lack num_batches_tracked: still accepted
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(bisenet.check_bisenet_state_dict(old)) == 191


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "79999_iter.pth"
    with pytest.raises(FileNotFoundError, match="79999_iter.pth"):
        load_face_parser(missing)


class NotATensor:  # a pickled object weights-only loading must refuse
    def __init__(self):
        self.payload = "anything"


def test_pickled_objects_are_refused(model, tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": bisenet.to_reference_layout(model), "extra": NotATensor()}, path)
    with pytest.raises(ValueError, match=r"weights_only=True.*re-save\s+just the state dict"):
        load_face_parser(path)


def test_wrong_checkpoint_lists_mismatched_keys(tmp_path):
    import timm
    path = tmp_path / "resnet50.pth"
    torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_face_parser(path)
    text = str(err.value)
    assert "not a BiSeNet face-parsing checkpoint" in text
    assert "160 missing key(s): cp.resnet.conv1.weight, cp.resnet.bn1.weight" in text  # 191 - 31 counters
    assert "unexpected key(s): conv1.weight, bn1.weight" in text and "... and" in text


def test_wrong_shapes_and_class_count(model, tmp_path):
    state = bisenet.to_reference_layout(model)
    bad = dict(state, **{"conv_out16.conv_out.weight": torch.zeros(11, 64, 1, 1)})
    path = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file
    save_file(bad, path)
    with pytest.raises(ValueError, match=r"1 wrong shape key\(s\): conv_out16.conv_out.weight \(11, 64, 1, 1\) "
                                         r"\(expected \(19, 64, 1, 1\)\)"):
        load_face_parser(path)
    eleven = dict(state, **{f"{h}.conv_out.weight": torch.zeros(11, c, 1, 1)
                            for h, c in (("conv_out", 256), ("conv_out16", 64), ("conv_out32", 64))})
    save_file(eleven, path)
    with pytest.raises(ValueError, match="11-class parser; FreeCure needs the 19-class"):
        load_face_parser(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "weights.onnx"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"use \.pth, \.pt or \.safetensors"):
        load_bisenet_state_dict(path)
