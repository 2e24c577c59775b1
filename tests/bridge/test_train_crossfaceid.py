"""CrossFaceID training end to end on CPU (issue 9): prepare (real FaceAnalysis with the ONNX antelopev2 stand-ins on
painted photos) -> fit a tiny diffusers SDXL with the real 70-layer structure -> the exported adapter loads through
FreeCure's InstantID loader and runs in the InstantID pair on the tiny ComfyUI SDXL.

* prepare: every identity with >= 2 usable images gives pairs whose source and target differ and share the identity;
  images with no face or two faces are dropped with their reason; the split never shares an identity; a second run
  analyses nothing (cache);
* fit: the loss on one fixed batch goes down over a few steps; a run stopped at step 2 and resumed to step 4 ends
  with bit-identical weights to an uninterrupted 4-step run; the final save always happens (adapter safetensors,
  ip-adapter.bin, diffusers ControlNet folder, checkpoint); sample images are written;
* the adapter file has InstantX's layout (70 odd-indexed to_k_ip/to_v_ip pairs + image_proj), loads with
  load_instantid and drives FreeCure InstantID Pair: PD differs from FD at the UNet.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from support.onnx_detector import COLOURS, expected_cell_box, write_model_pack
from support.onnx_recognizer import add_recognizer_to_pack
from support.tiny_diffusers_sdxl import make_tiny_sdxl_folder

from freecure_core.identity.face_analysis import FaceAnalysis
from freecure_core.train import fit, prepare
from freecure_core.train.pairs import make_pairs, split_identities

PHOTOS = {"ada": skdata.astronaut, "bo": lambda: skdata.chelsea()[:, :, :3], "cy": skdata.coffee}


def _paint(image, cells):
    """The image at 640x640 with the stand-in detector's 32-px blue "faces" at the given (row, col) cells."""
    img = np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((640, 640), Image.BILINEAR)).copy()
    for r, c in cells:
        x0, y0, x1, y1 = (int(v) for v in expected_cell_box(32, r, c))
        img[y0:y1, x0:x1] = np.array(COLOURS[32]) * 255
    return img


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("crossfaceid")
    for person, photo in PHOTOS.items():
        (root / "data" / person).mkdir(parents=True)
        base = photo()
        for k, cell in enumerate([(4, 6), (6, 8), (9, 5)]):
            variant = base if k % 2 == 0 else base[:, ::-1]
            Image.fromarray(_paint(variant, [cell])).save(root / "data" / person / f"{k}.png")
            (root / "data" / person / f"{k}.txt").write_text(f"a photo of {person} {['smiling', 'with glasses', 'laughing'][k]}")
    Image.fromarray(_paint(PHOTOS["ada"](), [])).save(root / "data" / "ada" / "noface.png")
    Image.fromarray(_paint(PHOTOS["bo"](), [(4, 6), (12, 12)])).save(root / "data" / "bo" / "two.png")
    pack = write_model_pack(root / "models", "antelopev2").parent
    add_recognizer_to_pack(pack)
    return root, FaceAnalysis.load(pack)


@pytest.fixture(scope="module")
def prepared(dataset):
    root, analyser = dataset
    out = root / "prepared"
    assert prepare.main(["--folders", str(root / "data"), "--out", str(out), "--heldout", "0.34", "--seed", "3", "--min-area", "0.001",
                         "--no-progress"], analyser=analyser) == 0
    return out


def test_pairs_rules():
    imgs = {"a": ["a1", "a2", "a3"], "b": ["b1", "b2"], "c": ["c1"]}
    pairs = make_pairs(imgs, seed=1, sources_per_target=2)
    assert pairs and all(p.source != p.target for p in pairs)
    assert all(p.source in imgs[p.identity] and p.target in imgs[p.identity] for p in pairs)
    assert {p.target for p in pairs} == {"a1", "a2", "a3", "b1", "b2"}  # c has one image: no pair
    assert make_pairs(imgs, seed=1, sources_per_target=2) == pairs  # deterministic
    train, held = split_identities([f"id{i}" for i in range(40)], 0.1, seed=7)
    assert len(held) == 4 and not set(train) & set(held) and set(train) | set(held) == {f"id{i}" for i in range(40)}
    assert split_identities([f"id{i}" for i in range(40)], 0.1, seed=7) == (train, held)


def test_prepare_writes_cross_pairs_and_reports_drops(dataset, prepared):
    root, analyser = dataset
    report = json.loads((prepared / "report.json").read_text())
    assert report["images"] == 11 and report["usable"] == 9
    assert sorted(d["reason"] for d in report["dropped"]) == ["2 faces", "no face"]
    rows = {name: [json.loads(ln) for ln in (prepared / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "heldout")}
    assert len(report["heldout_identities"]) == 1
    ids = {n: {r["identity"] for r in rs} for n, rs in rows.items()}
    assert not ids["train"] & ids["heldout"] and ids["train"] | ids["heldout"] == set(PHOTOS)
    for r in rows["train"] + rows["heldout"]:
        assert r["id_image_file"] != r["image_file"]
        assert pathlib.Path(r["id_image_file"]).parent.name == pathlib.Path(r["image_file"]).parent.name == r["identity"]
        emb = np.load(r["insightface_feature_file"])
        src = analyser.analyze(np.asarray(Image.open(r["id_image_file"]).convert("RGB")))[0]
        np.testing.assert_allclose(emb, src.embedding, rtol=1e-5, atol=1e-6)  # the SOURCE's raw embedding
        assert len(r["landmarks"]) == 5 and r["additional_feature"].startswith("a photo of")
    again = prepared.parent / "again.log"
    assert prepare.main(["--folders", str(root / "data"), "--out", str(prepared), "--heldout", "0.34", "--seed", "3", "--min-area", "0.001",
                         "--no-progress"], analyser=analyser) == 0
    assert json.loads((prepared / "report.json").read_text())["analysed_now"] == 0
    del again


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return make_tiny_sdxl_folder(tmp_path_factory.mktemp("tiny_sdxl_diffusers"))


TINY = ["--resolution", "64", "--resampler-dim", "64", "--resampler-depth", "1", "--resampler-heads", "1",
        "--batch-size", "2", "--seed", "0", "--face-drop", "0", "--text-drop", "0", "--both-drop", "0"]


def test_loss_decreases_on_a_fixed_batch(sdxl_folder, prepared):
    from freecure_core.train.data import PairDataset, collate, read_pairs
    args = fit.parse_args(["--sdxl", str(sdxl_folder), "--pairs", str(prepared / "train.jsonl"), "--output", "x",
                           *TINY, "--lr", "1e-3"])
    torch.manual_seed(0)
    parts = fit.SDXLParts(sdxl_folder)
    trainable = fit.build_trainable(parts, args)
    model = fit.TrainingModel(parts.unet, trainable)
    opt = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=1e-3)
    batch = collate([PairDataset(read_pairs(prepared / "train.jsonl"), 64, 0, 0, 0)[i] for i in range(2)])
    latents = parts.encode_images(batch["pixel_values"])
    noise, t = torch.randn_like(latents), torch.tensor([300, 700])
    noisy = parts.scheduler.add_noise(latents, noise, t)
    text, pooled = parts.encode_text(batch["caption"])
    losses = []
    for _ in range(8):
        pred = model(noisy, t, text, pooled, batch["time_ids"], batch["face_embed"], batch["kps_image"])
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.9 * losses[0], losses
    assert all(not p.requires_grad for p in parts.unet.parameters() if not any(
        p is q for q in trainable.parameters()))


def _run(sdxl_folder, prepared, out, *extra):
    return fit.main(["--sdxl", str(sdxl_folder), "--pairs", str(prepared / "train.jsonl"), "--output", str(out),
                     *TINY, "--lr", "1e-4", "--checkpoint-every", "2", *extra])


def test_fit_resume_final_save_and_the_pair_node(sdxl_folder, prepared, tmp_path):
    from safetensors.torch import load_file
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert _run(sdxl_folder, prepared, whole, "--max-steps", "4", "--save-bin", "--sample-every", "4",
                "--sample-steps", "2", "--sample-pairs", str(prepared / "heldout.jsonl"), "--sample-count", "1") == 0
    assert _run(sdxl_folder, prepared, split, "--max-steps", "2") == 0
    assert _run(sdxl_folder, prepared, split, "--max-steps", "4", "--resume", "latest") == 0
    log = [json.loads(ln) for ln in (split / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]  # the resumed run continued at step 3
    a, b = (load_file(str(d / "checkpoint-4" / "trainable.safetensors")) for d in (whole, split))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first = load_file(str(split / "checkpoint-2" / "trainable.safetensors"))
    assert any(not torch.equal(first[k], a[k]) for k in a)  # steps 3-4 changed the weights
    # final save: adapter, bin, controlnet folder, samples
    assert (whole / "ip-adapter.bin").is_file() and (whole / "samples" / "step-000004_0.png").is_file()
    from diffusers import ControlNetModel
    cn = ControlNetModel.from_pretrained(str(whole / "controlnet"), local_files_only=True)
    assert torch.equal(cn.conv_in.weight, a["controlnet.conv_in.weight"])
    flat = load_file(str(whole / fit.ADAPTER_FILE))
    ip = sorted(k for k in flat if k.startswith("ip_adapter."))
    assert len(ip) == 140 and {int(k.split(".")[1]) % 2 for k in ip} == {1}
    assert torch.equal(flat["ip_adapter.1.to_k_ip.weight"].float(), a["ip_adapter.1.to_k_ip.weight"].half().float())

    # the exported adapter in the InstantID loader and the pair node (tiny ComfyUI SDXL, 64-wide context)
    from freecure_core.identity.instantid_weights import load_instantid
    for path in (whole / fit.ADAPTER_FILE, whole / "ip-adapter.bin"):
        w = load_instantid(str(path))
        assert w.num_layers == 70 and w.cross_attention_dim == 64 and w.num_tokens == 16
    _pair_runs(load_instantid(str(whole / fit.ADAPTER_FILE)), tmp_path)


def _pair_runs(weights, tmp_path):
    from support.comfy_env import import_comfy
    import_comfy()
    import comfy.controlnet

    from freecure_core.comfy_bridge import instantid as bridge
    from support import tiny_models
    model = tiny_models.build_tiny_sdxl(0)
    pos, neg = tiny_models.sdxl_conditioning(11, 128, 128), tiny_models.sdxl_conditioning(12, 128, 128)
    control = comfy.controlnet.load_controlnet_state_dict(tiny_models.tiny_sdxl_controlnet_state_dict(seed=5))
    pack = write_model_pack(tmp_path / "pair_models", "antelopev2").parent
    add_recognizer_to_pack(pack)
    photo = torch.from_numpy(_paint(skdata.astronaut(), [(4, 6)]).astype(np.float32) / 255)[None]
    pd_model, pd_pos, pd_neg, fd_model, fd_pos, fd_neg, kps, info = bridge.instantid_pair(
        model, pos, neg, weights, FaceAnalysis.load(pack), control, photo, bridge.InstantIDSettings())
    assert "70" in info
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g)
    ctx, extra = pos[0]
    y = model.model.encode_adm(pooled_output=extra["pooled_output"], width=128, height=128)

    def run(m):
        to = {"cond_or_uncond": [0], "sigmas": torch.tensor([5.0])}
        m.model.current_patcher = m
        with torch.no_grad():
            return m.model.diffusion_model(x, torch.tensor([500.0]), context=ctx, y=y,
                                           transformer_options={**m.model_options["transformer_options"], **to})
    assert not torch.equal(run(pd_model), run(fd_model))  # the trained face tokens change the UNet's output


def test_eval_hook_builds_the_protocol_run(prepared, tmp_path):
    from freecure_core.train import eval as train_eval
    args = train_eval.parse_args(["--heldout", str(prepared / "heldout.jsonl"), "--adapter", "mine.safetensors",
                                  "--controlnet", "mine_cn.safetensors", "--out", str(tmp_path), "--class-word",
                                  "woman", "--", "--server", "http://127.0.0.1:1", "--seeds", "0"])
    names = train_eval.write_identities(args.heldout, tmp_path / "identities", args.class_word)
    held = json.loads((prepared / "report.json").read_text())["heldout_identities"]
    assert names == held and [p.name for p in (tmp_path / "identities").iterdir()] == [f"{held[0]}__woman.png"]
    from freecure_core.eval.identities import load_identities
    (ident,) = load_identities(tmp_path / "identities")
    assert ident.name == held[0] and ident.class_word == "woman"
    argv = train_eval.protocol_argv(args, tmp_path / "identities")
    assert argv[0].endswith("freecure_instantid.json")
    assert "FreeCureInstantIDLoader.instantid_file=mine.safetensors" in argv
    assert "ControlNetLoader.control_net_name=mine_cn.safetensors" in argv and argv[-2:] == ["--seeds", "0"]
