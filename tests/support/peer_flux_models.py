"""Random-weight model files in the real layouts and folders of the PuLID-FLUX ports, for e2e tests on the CPU.

Written from reading lldacing/ComfyUI_PuLID_Flux_ll (commit ba90657fe6ff) and balazik/ComfyUI-PuLID-Flux (a80912fc3435);
nothing of theirs is imported here. Every value is deterministic (seeded, or set on purpose) and initialised (ComfyUI
layers skip their init, so a model built with them is filled here before it is saved).

Under ``<root>/models`` (a ComfyUI ``--base-directory`` layout) and ``<root>/input``:

* ``diffusion_models/FLUX_FILE``: a FLUX.1-dev-shaped diffusion model, bf16. The ports' ``pulid_ca`` layers are
  3072-wide and loaded strictly, so hidden is 3072 (24 heads of 128); everything else is as small as the ports
  allow. **One double block and no single block**: the lldacing port patches double blocks 0, 2, .., 18 and single
  blocks 0, 4, .., 36, and its single-block patch reads the text tokens that its patch of double block 18 (the last
  of FLUX.1's 19) stores; a model with a single block but fewer than 19 double blocks fails with a KeyError inside
  the port. So only double block 0 is patched (``pulid_ca.0``). Text context and pooled vector are 32 wide
  (``support.tiny_flux``'s conditioning), 16 latent channels, guidance-distilled. About 390 M parameters.
* ``pulid/PULID_FILE``: the PuLID-FLUX file, ``pulid_encoder.*`` (IDFormer: 1024 wide, 10 layers, 32 queries,
  2048 out) + ``pulid_ca.0-19.*`` (PerceiverAttentionCA 3072 <- 2048), exact shapes (both ports load it with
  ``strict=True``), bf16. The ``pulid_ca`` layers the tiny FLUX never calls are zero and written as holes (a sparse
  file: 1.1 GB long, about 0.33 GB on disk).
* ``clip/EVA_FILE``: EVA02-CLIP-L-14-336's ``visual.*`` weights (the lldacing port finds it there by local path;
  the balazik port through the Hugging Face cache, see ``hf_cache``), fp16 torch pickle. The ports load it with
  ``strict=False``, so the text tower and the RoPE tables (computed) are left out; every other visual weight is
  here so nothing keeps an unseeded init. The model name fixes its size (24 x 1024), about 0.6 GB.
* ``facexlib/``: ``detection_Resnet50_Final.pth`` (RetinaFace-R50 set up to find exactly one face: the pure blue
  square, see ``retinaface_state_dict``), ``parsing_bisenet.pth`` and ``parsing_parsenet.pth`` (seeded PyTorch
  init), fp16; the lldacing port reads them from ``models/facexlib``, the balazik one from
  ``<site-packages>/facexlib/weights`` (see ``facexlib_overlay``).
* ``insightface/models/antelopev2/``: the stand-in SCRFD detector and ArcFace recognizer (``support.onnx_detector``,
  ``support.onnx_recognizer``): the detector finds pure blue 32 px squares at stride 32.
* ``input/REFERENCE_IMAGE``: 640 x 640, a smooth gradient with the pure blue square at ``FACE_SQUARE``.

    python tests/support/peer_flux_models.py ROOT [--parsenet]   # writes everything; prints sizes and timings
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import struct
import sys
import time

import numpy as np
import torch

FLUX_FILE = "flux1-dev-pulid-test.safetensors"
PULID_FILE = "pulid_flux_v0.9.1.safetensors"
EVA_FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
EVA_HF_REPO, EVA_HF_REVISION = "QuanSun/EVA-CLIP", "0" * 40
FACEXLIB_FILES = {"detection": "detection_Resnet50_Final.pth", "bisenet": "parsing_bisenet.pth",
                  "parsenet": "parsing_parsenet.pth"}
REFERENCE_IMAGE = "pulid_flux_reference.png"
IMAGE_SIZE = 640
FACE_SQUARE = (288, 288, 320, 320)  # x0, y0, x1, y1: stride-32 cell (9, 9), pure blue
FACE_RGB = (0, 0, 255)

HIDDEN, CONTEXT_DIM, VEC_DIM = 3072, 32, 32
N_DOUBLE, N_SINGLE = 1, 0
# FLUX.1's block counts the ports' loops and pulid_ca numbering are written for
PORT_DOUBLE, PORT_SINGLE, DOUBLE_INTERVAL, SINGLE_INTERVAL = 19, 38, 2, 4


# ------------------------------------------------------------------------------------------ files
_ST_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.int64: "I64"}


def save_safetensors(path, tensors: dict, zero: set = frozenset(), metadata: dict | None = None) -> pathlib.Path:
    """A .safetensors file with the names in ``zero`` written as holes (read back as zeros, no disk space used)."""
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        start = f.tell()
        for name, t in tensors.items():
            n = t.numel() * t.element_size()
            if name in zero:
                f.seek(n, os.SEEK_CUR)
            else:
                f.write(t.contiguous().view(torch.uint8).numpy().tobytes())
        f.truncate(start + offset)
    return path


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _linear(g, out_f: int, in_f: int, dtype, bias: bool = True) -> dict:
    """PyTorch's default Linear init (uniform +-1/sqrt(fan_in)), seeded."""
    bound = 1.0 / math.sqrt(in_f)
    d = {"weight": (torch.rand(out_f, in_f, generator=g) * 2 - 1).mul_(bound).to(dtype)}
    if bias:
        d["bias"] = (torch.rand(out_f, generator=g) * 2 - 1).mul_(bound).to(dtype)
    return d


def _norm(dim: int, dtype) -> dict:
    return {"weight": torch.ones(dim, dtype=dtype), "bias": torch.zeros(dim, dtype=dtype)}


def _prefixed(prefix: str, d: dict) -> dict:
    return {f"{prefix}.{k}": v for k, v in d.items()}


# ------------------------------------------------------------------------------------------ PuLID-FLUX
def used_pulid_ca(n_double: int = N_DOUBLE, n_single: int = N_SINGLE) -> list[int]:
    """The pulid_ca indices the ports call on a model with these block counts (double i % 2 == 0 -> 0..9, single
    j % 4 == 0 -> 10..19, numbered over FLUX.1's 19 + 38 blocks)."""
    used, idx = [], 0
    for i in range(PORT_DOUBLE):
        if i % DOUBLE_INTERVAL == 0:
            if i < n_double:
                used.append(idx)
            idx += 1
    for j in range(PORT_SINGLE):
        if j % SINGLE_INTERVAL == 0:
            if j < n_single:
                used.append(idx)
            idx += 1
    return used


def n_pulid_ca() -> int:
    return -(-PORT_DOUBLE // DOUBLE_INTERVAL) + -(-PORT_SINGLE // SINGLE_INTERVAL)  # 10 + 10


def pulid_flux_state_dict(seed: int = 0, dtype=torch.bfloat16, used=None) -> tuple[dict, set]:
    """(tensors, names left zero): IDFormer(dim 1024, depth 10, dim_head 64, heads 16, 5 id tokens, 32 queries,
    output 2048, ff x4) as pulid_encoder.*, 20 PerceiverAttentionCA(dim 3072, dim_head 128, heads 16, kv_dim 2048)
    as pulid_ca.N.*; the pulid_ca layers not in ``used`` (default: used_pulid_ca()) are zero."""
    g = _gen(seed)
    sd: dict = {}
    dim, depth, queries, out_dim, ids = 1024, 10, 32, 2048, 5
    sd["pulid_encoder.latents"] = (torch.randn(1, queries, dim, generator=g) * dim ** -0.5).to(dtype)
    sd["pulid_encoder.proj_out"] = (torch.randn(dim, out_dim, generator=g) * dim ** -0.5).to(dtype)
    for i in range(depth):
        p = f"pulid_encoder.layers.{i}"
        sd.update(_prefixed(f"{p}.0.norm1", _norm(dim, dtype)))
        sd.update(_prefixed(f"{p}.0.norm2", _norm(dim, dtype)))
        sd.update(_prefixed(f"{p}.0.to_q", _linear(g, 1024, dim, dtype, bias=False)))
        sd.update(_prefixed(f"{p}.0.to_kv", _linear(g, 2048, dim, dtype, bias=False)))
        sd.update(_prefixed(f"{p}.0.to_out", _linear(g, dim, 1024, dtype, bias=False)))
        sd.update(_prefixed(f"{p}.1.0", _norm(dim, dtype)))
        sd.update(_prefixed(f"{p}.1.1", _linear(g, dim * 4, dim, dtype, bias=False)))
        sd.update(_prefixed(f"{p}.1.3", _linear(g, dim, dim * 4, dtype, bias=False)))

    def mlp(prefix, in_f, out_f):
        sd.update(_prefixed(f"{prefix}.0", _linear(g, 1024, in_f, dtype)))
        sd.update(_prefixed(f"{prefix}.1", _norm(1024, dtype)))
        sd.update(_prefixed(f"{prefix}.3", _linear(g, 1024, 1024, dtype)))
        sd.update(_prefixed(f"{prefix}.4", _norm(1024, dtype)))
        sd.update(_prefixed(f"{prefix}.6", _linear(g, out_f, 1024, dtype)))

    for j in range(5):
        mlp(f"pulid_encoder.mapping_{j}", 1024, dim)
    mlp("pulid_encoder.id_embedding_mapping", 1280, dim * ids)

    used = set(used_pulid_ca() if used is None else used)
    zero = set()
    for k in range(n_pulid_ca()):
        p = f"pulid_ca.{k}"
        layer = {**_prefixed("norm1", _norm(2048, dtype)), **_prefixed("norm2", _norm(HIDDEN, dtype))}
        if k in used:
            layer.update(_prefixed("to_q", _linear(g, 2048, HIDDEN, dtype, bias=False)))
            layer.update(_prefixed("to_kv", _linear(g, 4096, 2048, dtype, bias=False)))
            layer.update(_prefixed("to_out", _linear(g, HIDDEN, 2048, dtype, bias=False)))
        else:
            for name, shape in (("to_q", (2048, HIDDEN)), ("to_kv", (4096, 2048)), ("to_out", (HIDDEN, 2048))):
                layer[f"{name}.weight"] = torch.zeros(shape, dtype=dtype)
                zero.add(f"{p}.{name}.weight")
        sd.update(_prefixed(p, layer))
    return sd, zero


def write_pulid_flux(path, seed: int = 0) -> pathlib.Path:
    sd, zero = pulid_flux_state_dict(seed)
    return save_safetensors(path, sd, zero, metadata={"format": "pt"})


# ------------------------------------------------------------------------------------------ FLUX
def flux_unet_config() -> dict:
    """The test FLUX's ComfyUI unet config (what ComfyUI's model detection reads from the file)."""
    from .tiny_flux import unet_config
    config = unet_config(guidance_embed=True)
    config.update(hidden_size=HIDDEN, num_heads=HIDDEN // 128, depth=N_DOUBLE, depth_single_blocks=N_SINGLE,
                  context_in_dim=CONTEXT_DIM, vec_in_dim=VEC_DIM)
    return config


def flux_state_dict(seed: int = 0, dtype=torch.bfloat16) -> dict:
    """ComfyUI's FLUX transformer with flux_unet_config(), seeded init (support.tiny_models.init_weights_, gain 0.5),
    in the FLUX diffusion-model file layout."""
    from .tiny_models import _comfy, init_weights_
    _comfy()
    import comfy.supported_models
    cfg = comfy.supported_models.Flux(dict(flux_unet_config(), dtype=torch.float32))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({}, device=torch.device("cpu"))
    dm = model.diffusion_model
    init_weights_(dm, seed=seed, gain=0.5)
    sd = {}
    for k, v in dm.state_dict().items():
        sd[k] = v.to(dtype).contiguous()
    del model, dm
    return sd


def write_flux(path, seed: int = 0) -> pathlib.Path:
    return save_safetensors(path, flux_state_dict(seed), metadata={"format": "pt"})


# ------------------------------------------------------------------------------------------ EVA-CLIP
EVA_WIDTH, EVA_LAYERS, EVA_MLP, EVA_EMBED, EVA_TOKENS, EVA_PATCH = 1024, 24, 2730, 768, 577, 14


def eva_visual_state_dict(seed: int = 0, dtype=torch.float16) -> dict:
    """EVA02-CLIP-L-14-336's vision tower (EVAVisionTransformer: 24 blocks, width 1024, 16 heads, SwiGLU MLP 2730
    with sub-LN, 336 px / 14 px patches + cls = 577 tokens, head 1024 -> 768) as visual.*, without the RoPE tables
    (buffers the model computes). Linear/conv weights N(0, 0.02) as EVA initialises them, biases zero, norms 1/0."""
    g = _gen(seed)
    w = EVA_WIDTH

    def normal(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).to(dtype)

    def zeros(*shape):
        return torch.zeros(*shape, dtype=dtype)

    sd = {"cls_token": normal(1, 1, w), "pos_embed": normal(1, EVA_TOKENS, w),
          "patch_embed.proj.weight": normal(w, 3, EVA_PATCH, EVA_PATCH), "patch_embed.proj.bias": zeros(w)}
    for i in range(EVA_LAYERS):
        b = f"blocks.{i}"
        sd.update(_prefixed(f"{b}.norm1", _norm(w, dtype)))
        sd[f"{b}.attn.q_bias"], sd[f"{b}.attn.v_bias"] = zeros(w), zeros(w)
        for name in ("q_proj", "k_proj", "v_proj"):
            sd[f"{b}.attn.{name}.weight"] = normal(w, w)
        sd.update(_prefixed(f"{b}.attn.inner_attn_ln", _norm(w, dtype)))
        sd[f"{b}.attn.proj.weight"], sd[f"{b}.attn.proj.bias"] = normal(w, w), zeros(w)
        sd.update(_prefixed(f"{b}.norm2", _norm(w, dtype)))
        for name in ("w1", "w2"):
            sd[f"{b}.mlp.{name}.weight"], sd[f"{b}.mlp.{name}.bias"] = normal(EVA_MLP, w), zeros(EVA_MLP)
        sd.update(_prefixed(f"{b}.mlp.ffn_ln", _norm(EVA_MLP, dtype)))
        sd[f"{b}.mlp.w3.weight"], sd[f"{b}.mlp.w3.bias"] = normal(w, EVA_MLP), zeros(w)
    sd.update(_prefixed("norm", _norm(w, dtype)))
    sd["head.weight"], sd["head.bias"] = normal(EVA_EMBED, w), zeros(EVA_EMBED)
    return {f"visual.{k}": v for k, v in sd.items()}


def write_eva_clip(path, seed: int = 0) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(eva_visual_state_dict(seed), path)
    return path


def hf_cache(hf_home, eva_path) -> pathlib.Path:
    """The Hugging Face hub cache layout under ``hf_home`` (HF_HOME) holding ``eva_path`` as
    QuanSun/EVA-CLIP/EVA_FILE (a symlink), where the balazik port's hf_hub_download finds it with HF_HUB_OFFLINE=1."""
    repo = pathlib.Path(hf_home) / "hub" / ("models--" + EVA_HF_REPO.replace("/", "--"))
    snap = repo / "snapshots" / EVA_HF_REVISION
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(EVA_HF_REVISION)
    link = snap / EVA_FILE
    if not link.exists():
        link.symlink_to(pathlib.Path(eva_path).resolve())
    return link


# ------------------------------------------------------------------------------------------ facexlib
# RetinaFace-R50 (facexlib.detection.retinaface, cfg_re50): the input is BGR - (104, 117, 123), no rescaling.
# The stem's output channel 0 is the pure-blue indicator relu((B' - G' - R' - 300) / 91) (1 for (0, 0, 255), 0 for
# any colour that is not strongly blue) read 3 px down and right of each stride-2 position (the 7x7 conv's corner
# tap); every bottleneck's residual branch is switched off (bn3 = 0) and the downsampling 1x1 convs pass channel 0
# on, so after the max pool the stride-32 map (layer4) holds the indicator's max over pixels 32 u + 1 .. 32 u + 5
# (rows and columns): inside one 32-aligned cell only. FPN passes only that level on (the top-down merges are
# zero), SSH3 keeps channel 0, and only stride 32's anchor 0 (256 px prior) can score: face logit
# 20 * indicator - 10. The cell square FACE_SQUARE therefore fires exactly one anchor, centred on it (score
# 0.99995 > facexlib's 0.97; nothing else reaches 1e-4); its box and five landmarks come from the heads' biases: a
# square box of FACE_BOX_PX and the landmarks below (pixels from the box centre), checked by
# tests/core/test_peer_flux_models.py.
FACE_BOX_PX = 32.0
FACE_LANDMARKS_PX = ((-6.0, -4.0), (6.0, -4.0), (0.0, 2.0), (-5.0, 8.0), (5.0, 8.0))  # eyes, nose, mouth corners
_BLUE_SCALE, _BLUE_THRESHOLD = 91.0, 300.0
_PRIOR, _VARIANCE = 256.0, (0.1, 0.2)


def retinaface_state_dict(dtype=torch.float16) -> dict:
    from facexlib.detection.retinaface import RetinaFace
    template = RetinaFace(network_name="resnet50", half=False, device="cpu").state_dict()
    sd = {}
    for k, v in template.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.zeros((), dtype=torch.int64)
        elif k.endswith("running_var") or (k.endswith(".weight") and v.ndim == 1):  # BN: var 1, gamma 1
            sd[k] = torch.ones_like(v)
        else:
            sd[k] = torch.zeros_like(v)
    for k in sd:
        if ".bn3." in k and (k.endswith(".weight") or k.endswith(".bias")):
            sd[k].zero_()  # residual branches off
    # stem: channel 0 = the blue indicator (the 7x7 conv's tap at +3 px, +3 px; BGR input)
    sd["body.conv1.weight"][0, :, 6, 6] = torch.tensor([1.0, -1.0, -1.0]) / _BLUE_SCALE
    sd["body.bn1.bias"][0] = -_BLUE_THRESHOLD / _BLUE_SCALE
    sd["body.bn1.weight"][1:] = 0.0
    for layer in ("layer1", "layer2", "layer3", "layer4"):
        sd[f"body.{layer}.0.downsample.0.weight"][0, 0, 0, 0] = 1.0
    sd["fpn.output3.0.weight"][0, 0, 0, 0] = 1.0
    sd["ssh3.conv3X3.0.weight"][0, 0, 1, 1] = 1.0
    # heads: only stride 32 (index 2), anchor 0
    for i in range(3):
        sd[f"ClassHead.{i}.conv1x1.bias"][:] = torch.tensor([0.0, -10.0, 0.0, -10.0])
    sd["ClassHead.2.conv1x1.weight"][1, 0, 0, 0] = 20.0
    log_wh = math.log(FACE_BOX_PX / _PRIOR) / _VARIANCE[1]
    sd["BboxHead.2.conv1x1.bias"][:4] = torch.tensor([0.0, 0.0, log_wh, log_wh])
    unit = _VARIANCE[0] * _PRIOR
    sd["LandmarkHead.2.conv1x1.bias"][:10] = torch.tensor([c / unit for xy in FACE_LANDMARKS_PX for c in xy])
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}


def expected_retinaface(square=FACE_SQUARE) -> tuple[tuple, np.ndarray]:
    """(box x0, y0, x1, y1) and the five landmarks (5, 2) the RetinaFace above gives for the pure blue cell."""
    cx, cy = (square[0] + square[2]) / 2, (square[1] + square[3]) / 2
    h = FACE_BOX_PX / 2
    return (cx - h, cy - h, cx + h, cy + h), np.array([(cx + dx, cy + dy) for dx, dy in FACE_LANDMARKS_PX])


def seeded_module_state_dict(build, seed: int, dtype=torch.float16) -> dict:
    """state_dict of build() made under torch.manual_seed(seed) (plain torch layers: their default init), floats in
    dtype. The global RNG state is restored."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}


def write_facexlib(folder, parsenet: bool = True, seed: int = 0) -> dict:
    """detection_Resnet50_Final.pth, parsing_bisenet.pth (and parsing_parsenet.pth) in ``folder``."""
    from facexlib.parsing.bisenet import BiSeNet
    from facexlib.parsing.parsenet import ParseNet
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"detection": folder / FACEXLIB_FILES["detection"], "bisenet": folder / FACEXLIB_FILES["bisenet"]}
    torch.save(retinaface_state_dict(), out["detection"])
    torch.save(seeded_module_state_dict(lambda: BiSeNet(num_class=19), seed), out["bisenet"])
    if parsenet:
        out["parsenet"] = folder / FACEXLIB_FILES["parsenet"]
        torch.save(seeded_module_state_dict(lambda: ParseNet(in_size=512, out_size=512, parsing_ch=19), seed + 1),
                   out["parsenet"])
    return out


def facexlib_overlay(site_dir, weights_dir) -> pathlib.Path:
    """A copy of the installed facexlib package made of symlinks under ``site_dir`` (put it first on PYTHONPATH),
    whose ``facexlib/weights`` is ``weights_dir``: facexlib keeps its downloads inside its own package folder
    (``load_file_from_url`` with no save_dir), so the balazik port finds the test files there without a write into
    the environment's site-packages."""
    import importlib.util
    spec = importlib.util.find_spec("facexlib")
    real = pathlib.Path(spec.origin).parent
    pkg = pathlib.Path(site_dir) / "facexlib"
    pkg.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir():
        if entry.name in ("weights", "__pycache__"):
            continue
        target = pkg / entry.name
        if not target.exists():
            target.symlink_to(entry)
    weights = pkg / "weights"
    if not weights.exists():
        weights.symlink_to(pathlib.Path(weights_dir).resolve(), target_is_directory=True)
    return pathlib.Path(site_dir)


# ------------------------------------------------------------------------------------------ insightface, image
def write_antelopev2(models_root) -> pathlib.Path:
    """models_root/insightface/models/antelopev2/{scrfd_10g_bnkps,glintr100}.onnx; returns that folder."""
    from .onnx_detector import write_model_pack
    from .onnx_recognizer import add_recognizer_to_pack
    folder = write_model_pack(pathlib.Path(models_root), "antelopev2").parent
    add_recognizer_to_pack(folder, "glintr100.onnx")
    return folder


def reference_image() -> np.ndarray:
    """(640, 640, 3) uint8 RGB: a smooth gradient (no pure colour anywhere) with FACE_RGB at FACE_SQUARE."""
    y, x = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float64) / IMAGE_SIZE
    img = np.stack([90 + 60 * x, 100 + 40 * y, 110 + 30 * x * y], axis=-1).round().astype(np.uint8)
    x0, y0, x1, y1 = FACE_SQUARE
    img[y0:y1, x0:x1] = FACE_RGB
    return img


def write_reference_image(path) -> pathlib.Path:
    from PIL import Image
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(reference_image()).save(path)
    return path


# ------------------------------------------------------------------------------------------ all
def write_all(root, seed: int = 0, parsenet: bool = True) -> dict:
    """Every file under root/models and root/input; returns {"files": {kind: path}, "seconds": {kind: s}}."""
    root = pathlib.Path(root)
    models = root / "models"
    files, seconds = {}, {}

    def timed(kind, fn):
        t0 = time.monotonic()
        files[kind] = fn()
        seconds[kind] = round(time.monotonic() - t0, 2)

    timed("reference", lambda: write_reference_image(root / "input" / REFERENCE_IMAGE))
    timed("antelopev2", lambda: write_antelopev2(models))
    timed("facexlib", lambda: write_facexlib(models / "facexlib", parsenet=parsenet, seed=seed))
    timed("pulid", lambda: write_pulid_flux(models / "pulid" / PULID_FILE, seed=seed))
    timed("eva_clip", lambda: write_eva_clip(models / "clip" / EVA_FILE, seed=seed))
    timed("flux", lambda: write_flux(models / "diffusion_models" / FLUX_FILE, seed=seed))
    return {"files": files, "seconds": seconds}


def _size(p: pathlib.Path) -> tuple[int, int]:
    """(apparent bytes, bytes on disk) of a file or a folder's files."""
    paths = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
    return sum(q.stat().st_size for q in paths), sum(q.stat().st_blocks * 512 for q in paths)


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description="write the PuLID-FLUX test model files")
    parser.add_argument("root")
    parser.add_argument("--no-parsenet", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = write_all(args.root, seed=args.seed, parsenet=not args.no_parsenet)
    report = {}
    for kind, value in out["files"].items():
        paths = value.values() if isinstance(value, dict) else [value]
        sizes = [_size(pathlib.Path(p)) for p in paths]
        report[kind] = {"seconds": out["seconds"][kind], "bytes": sum(s[0] for s in sizes),
                        "disk_bytes": sum(s[1] for s in sizes), "paths": [str(p) for p in paths]}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from support.peer_flux_models import main as _main  # as a package module (relative imports)
    sys.exit(_main())
