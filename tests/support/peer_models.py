"""Random-weight model files for the real peer packs (cubiq's ComfyUI_InstantID, PuLID_ComfyUI and
ComfyUI_IPAdapter_plus), in each pack's real key layout, file names and folders, for CPU e2e tests.

The packs are test hosts only (unmodified, in ``.peers/``): this module spells out the file layouts from reading
their loaders, it does not import them. Every writer is deterministic in ``seed`` (its own torch.Generator; the
global RNG is left alone) and initialises every tensor (ComfyUI's layers skip init, so a missing key would be
uninitialised memory). Where a loader builds a fixed-size network and loads it strictly, the file has the real
shapes; everywhere else it is sized for the tiny SDXL of tests/support/tiny_models.py.

    sdxl_attn2_widths(unet)          the 70 attn2 widths of an SDXL-layout UNet, in the packs' adapter order
    write_instantid(models, seed)    models/instantid/ip-adapter.bin (+ the IdentityNet ControlNet, antelopev2)
    write_pulid(models, hf_home, facexlib_root, seed)   models/pulid/, EVA-CLIP in the HF cache, facexlib weights
    write_faceid(models, seed)       models/ipadapter/, models/loras/, models/clip_vision/, buffalo_l
    write_all(base, seed)            everything above under base/ (base/models, base/hf_home, base/facexlib_root)
    face_square(image_size)          where the reference photo must be painted for the stand-in detectors

File names are the ones the example workflows (workflows/freecure_peer_*.json) select, or that the IP-Adapter
unified loader's file patterns match, so the workflows run with only the checkpoint, size, steps, reference image
and parser changed.

What each pack's loader insists on (so these parts are full size):

* InstantID: ``Resampler(dim=1280, depth=4, heads=20, dim_head=64, num_queries=16, embedding_dim=512, ff_mult=4)``,
  strict; only its output width is read from the file (``ip_adapter.1.to_k_ip.weight.shape[1]``): 64 here, the
  tiny SDXL's context width, because the IdentityNet reads those 16 tokens as its cross-attention context.
  ~79 M parameters, saved fp16 (~158 MB).
* PuLID SDXL: ``IDEncoder(width=1280, context_dim=2048, num_token=5)``, strict, ~55 M parameters (fp16 ~110 MB);
  the 70 ``to_{k,v}_ip`` layers read 2048-wide tokens. EVA02-CLIP-L-14-336 is built full size by the pack from
  its own config (~428 M parameters in memory) and loads its checkpoint with strict=False, so the file here holds
  only the projection head and logit scale (~1.6 MB): the rest keeps the pack's own random init.
  facexlib loads RetinaFace-ResNet50, BiSeNet and ParseNet strictly: full size, fp16 (~54 + 27 + 43 MB).
* IP-Adapter FaceID Plus V2 on SDXL: the pack calls a model SDXL only when its tokens are 2048 wide
  (``is_sdxl = ip_adapter.1.to_k_ip.weight.shape[1] == 2048``), and then builds ``ProjModelFaceIdPlus(2048)``
  with a 4-layer 2048-wide perceiver (~216 M parameters, fp16 ~432 MB). ComfyUI's CLIP vision loader only builds
  its fixed configs (and loads strict=False, leaving missing weights uninitialised): the smallest one it
  recognises is ViT-L/14 at 224 (``clip_vision_config_vitl.json``, ~304 M parameters, fp16 ~607 MB), saved under
  the ViT-H file name the unified loader's pattern asks for.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

try:
    from . import tiny_instantid, tiny_models
    from .onnx_detector import COLOURS, write_model_pack
    from .onnx_recognizer import add_recognizer_to_pack
except ImportError:  # loaded outside its package
    import tiny_instantid  # type: ignore
    import tiny_models  # type: ignore
    from onnx_detector import COLOURS, write_model_pack  # type: ignore
    from onnx_recognizer import add_recognizer_to_pack  # type: ignore

# ------------------------------------------------------------------------------------------ file names
INSTANTID_FILE = "ip-adapter.bin"                                         # workflow: InstantIDModelLoader
IDENTITYNET_FILE = "instantid/diffusion_pytorch_model.safetensors"        # workflow: ControlNetLoader
PULID_FILE = "ip-adapter_pulid_sdxl_fp16.safetensors"                     # workflow: PulidModelLoader
FACEID_FILE = "ip-adapter-faceid-plusv2_sdxl.safetensors"                 # pattern faceid.plusv2.sdxl\.(safetensors|bin)$
FACEID_LORA_FILE = "ip-adapter-faceid-plusv2_sdxl_lora.safetensors"       # pattern faceid.plusv2.sdxl.lora\.safetensors$
CLIP_VISION_FILE = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"          # pattern ViT.H.14.*s32B.b79K\.(bin|safetensors)
EVA_REPO, EVA_FILE = "QuanSun/EVA-CLIP", "EVA02_CLIP_L_336_psz14_s6B.pt"  # eva_clip pretrained.py, hf_hub
EVA_REVISION = hashlib.sha1(b"freecure-tests EVA02-CLIP-L-14-336").hexdigest()  # any 40-hex commit id works
FACEXLIB_FILES = ("detection_Resnet50_Final.pth", "parsing_bisenet.pth", "parsing_parsenet.pth")

# ------------------------------------------------------------------------------------------ fixed dims
INSTANTID_RESAMPLER = dict(dim=1280, depth=4, heads=20, num_queries=16, embedding_dim=512, ff_mult=4)
PULID_WIDTH, PULID_CONTEXT, PULID_TOKENS, PULID_HIDDEN = 1280, 2048, 5, 1024  # IDEncoder; EVA-L hidden width
FACEID_SDXL_DIM, FACEID_TOKENS, FACEID_ID_DIM = 2048, 4, 512
LORA_RANK = 4

# The stand-in detectors (tests/support/onnx_detector.py) see one stride-32 cell painted pure blue as a face.
FACE_STRIDE = 32


def face_square(image_size: int = 640, row: int = 3, col: int = 6) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the blue square the stand-in SCRFD detectors report as a face on an image_size² photo
    (one stride-32 cell at 640, where the packs first look); its colour is onnx_detector.COLOURS[32]."""
    assert image_size == 640, "the packs detect at 640 first; paint the square on a 640x640 photo"
    return (col * FACE_STRIDE, row * FACE_STRIDE, (col + 1) * FACE_STRIDE, (row + 1) * FACE_STRIDE)


FACE_COLOUR = tuple(255 * c for c in COLOURS[FACE_STRIDE])


# ------------------------------------------------------------------------------------------ helpers
class _Rand:
    """Seeded tensors: ``w(out, in)`` uniform ±1/sqrt(in) like torch's Linear, ``n(*shape, std)`` normal,
    LayerNorm/BatchNorm ones and zeros; all fp32 (cast when saving)."""

    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(int(seed))

    def w(self, *shape, gain: float = 1.0) -> torch.Tensor:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        bound = gain / max(fan_in, 1) ** 0.5
        return (torch.rand(*shape, generator=self.g) * 2 - 1) * bound

    def n(self, *shape, std: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * std

    def linear(self, prefix: str, out: int, inp: int, bias: bool = True, gain: float = 1.0) -> dict:
        sd = {prefix + "weight": self.w(out, inp, gain=gain)}
        if bias:
            sd[prefix + "bias"] = (torch.rand(out, generator=self.g) * 2 - 1) / max(inp, 1) ** 0.5
        return sd

    @staticmethod
    def norm(prefix: str, width: int) -> dict:
        return {prefix + "weight": torch.ones(width), prefix + "bias": torch.zeros(width)}


def _half(sd: dict) -> dict:
    return {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()}


def _save_safetensors(path: Path, sd: dict, what: str) -> Path:
    from safetensors.torch import save_file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt", "freecure_test": what})
    os.replace(tmp, path)
    return path


def _save_torch(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, str(tmp))
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------ SDXL adapter layout
# cubiq's InstantID, PuLID and IP-Adapter (SDXL) number their attn2 layers in this order: input blocks 4, 5, 7, 8,
# output blocks 0-5, then the middle block; adapter layer n has keys "{2n+1}.to_k_ip.weight" / "to_v_ip".
SDXL_ADAPTER_BLOCKS = ([("input", b, 2) for b in (4, 5)] + [("input", b, 10) for b in (7, 8)]
                       + [("output", b, 10) for b in (0, 1, 2)] + [("output", b, 2) for b in (3, 4, 5)]
                       + [("middle", 0, 10)])


def sdxl_attn2_widths(unet: dict | None = None) -> list[int]:
    """The 70 attn2 widths (heads x head width = the block's channels) of an SDXL-layout UNet config, in the
    packs' adapter order. Checks that the config really has SDXL's transformer depths."""
    unet = dict(tiny_models.TINY_SDXL_UNET if unet is None else unet)
    assert list(unet["transformer_depth"]) == [0, 0, 2, 2, 10, 10], unet["transformer_depth"]
    assert list(unet["transformer_depth_output"]) == [0, 0, 0, 2, 2, 2, 10, 10, 10]
    assert unet["transformer_depth_middle"] == 10 and list(unet["num_res_blocks"]) == [2, 2, 2]
    ch = [unet["model_channels"] * m for m in unet["channel_mult"]]
    level = {("input", 4): 1, ("input", 5): 1, ("input", 7): 2, ("input", 8): 2, ("middle", 0): 2,
             **{("output", b): 2 for b in (0, 1, 2)}, **{("output", b): 1 for b in (3, 4, 5)}}
    widths = [ch[level[(kind, block)]] for kind, block, depth in SDXL_ADAPTER_BLOCKS for _ in range(depth)]
    assert len(widths) == 70
    return widths


def _ip_layers(r: _Rand, token_dim: int, widths: list[int]) -> dict:
    sd = {}
    for i, width in enumerate(widths):
        n = 2 * i + 1
        sd[f"{n}.to_k_ip.weight"] = r.w(width, token_dim)
        sd[f"{n}.to_v_ip.weight"] = r.w(width, token_dim)
    return sd


# ------------------------------------------------------------------------------------------ insightface packs
def write_insightface_pack(models: Path, name: str) -> Path:
    """models/insightface/models/<name>/: the stand-in SCRFD detector and ArcFace recognizer, under the file names
    of insightface's antelopev2 (InstantID, PuLID) or buffalo_l (IP-Adapter FaceID) packs."""
    det = write_model_pack(models, name)
    rec = {"antelopev2": "glintr100.onnx", "buffalo_l": "w600k_r50.onnx"}[name]
    add_recognizer_to_pack(det.parent, rec)
    return det.parent


# ------------------------------------------------------------------------------------------ InstantID
def instantid_state(seed: int = 0, widths: list[int] | None = None) -> dict:
    """The nested {"image_proj", "ip_adapter"} dict of InstantX's ip-adapter.bin, for the tiny SDXL."""
    widths = sdxl_attn2_widths() if widths is None else widths
    return tiny_instantid.random_instantid_state(
        **INSTANTID_RESAMPLER, output_dim=tiny_models.CONTEXT_DIM, layers=len(widths), hidden=widths, seed=seed)


def write_instantid(models: Path, seed: int = 0) -> dict[str, Path]:
    """models/instantid/ip-adapter.bin (torch.save of the nested dict, fp16, like InstantX's file),
    models/controlnet/instantid/diffusion_pytorch_model.safetensors (a ControlNet for the tiny SDXL standing in
    for the IdentityNet) and the antelopev2 stand-ins."""
    models = Path(models)
    state = instantid_state(seed)
    adapter = _save_torch(models / "instantid" / INSTANTID_FILE,
                          {part: _half(state[part]) for part in ("image_proj", "ip_adapter")})
    cn = models / "controlnet" / IDENTITYNET_FILE
    cn.parent.mkdir(parents=True, exist_ok=True)
    tiny_models.write_tiny_sdxl_controlnet(cn, seed=seed + 5)
    return {"adapter": adapter, "controlnet": cn, "insightface": write_insightface_pack(models, "antelopev2")}


# ------------------------------------------------------------------------------------------ PuLID
def pulid_state(seed: int = 0, widths: list[int] | None = None) -> dict:
    """Flat image_proj.* (IDEncoder(1280, 2048, 5)) + ip_adapter.* keys of ip-adapter_pulid_sdxl_fp16.safetensors."""
    widths = sdxl_attn2_widths() if widths is None else widths
    r = _Rand(seed)
    h1 = min(PULID_CONTEXT * PULID_TOKENS // 4, 1024)
    h2 = min(PULID_CONTEXT * PULID_TOKENS // 2, 1024)
    proj = {}
    proj.update(r.linear("body.0.", h1, PULID_WIDTH))
    proj.update(r.norm("body.1.", h1))
    proj.update(r.linear("body.3.", h2, h1))
    proj.update(r.norm("body.4.", h2))
    proj.update(r.linear("body.6.", PULID_CONTEXT * PULID_TOKENS, h2))
    for i in range(5):
        for name in (f"mapping_{i}.", f"mapping_patch_{i}."):
            proj.update(r.linear(name + "0.", 1024, PULID_HIDDEN))
            proj.update(r.norm(name + "1.", 1024))
            proj.update(r.linear(name + "3.", 1024, 1024))
            proj.update(r.norm(name + "4.", 1024))
            proj.update(r.linear(name + "6.", PULID_CONTEXT, 1024))
    sd = {"image_proj." + k: v for k, v in proj.items()}
    sd.update({"ip_adapter." + k: v for k, v in _ip_layers(r, PULID_CONTEXT, widths).items()})
    return sd


def write_eva_clip(hf_home: Path, seed: int = 0) -> Path:
    """EVA02_CLIP_L_336_psz14_s6B.pt in the Hugging Face hub cache layout under hf_home/hub (refs/main ->
    snapshots/<rev>/), found by hf_hub_download with HF_HUB_OFFLINE=1. Only the visual projection head and the logit
    scale: the pack builds EVA02-CLIP-L-14-336 from its own config and loads this with strict=False."""
    r = _Rand(seed)
    repo = Path(hf_home) / "hub" / ("models--" + EVA_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(EVA_REVISION)
    sd = {"visual.head.weight": r.w(768, PULID_HIDDEN), "visual.head.bias": torch.zeros(768),
          "logit_scale": torch.tensor(4.6052)}
    return _save_torch(repo / "snapshots" / EVA_REVISION / EVA_FILE, sd)


# RetinaFace: 5 landmarks of the FFHQ template (facexlib FaceRestoreHelper, 512² crop) relative to the crop centre,
# in units of the crop size: the detector's landmarks are placed like that around its anchor box.
FFHQ_LANDMARKS = ((192.98138, 239.94708), (318.90277, 240.1936), (256.63416, 314.01935),
                  (201.26117, 371.41043), (313.08905, 371.15118))
RETINA_LEVEL, RETINA_ANCHOR = 2, 0  # stride 32, anchor min_size 256 (cfg_re50 min_sizes[2][0])


def retinaface_state(seed: int = 0) -> dict:
    """facexlib's RetinaFace-ResNet50 (detection_Resnet50_Final.pth keys), random and deterministic, with heads
    that report every stride-32 / 256-px anchor as a face (score ~1, every other anchor ~0), the box exactly
    that anchor and its 5 landmarks placed like the FFHQ template within it: the heads' weights are zero and
    their biases carry the answer, so the detection does not depend on the random backbone. After NMS
    FaceRestoreHelper's only_center_face keeps the one nearest the image centre."""
    from facexlib.detection.retinaface import RetinaFace
    net = RetinaFace(network_name="resnet50", half=False, phase="test", device=torch.device("cpu"))
    tiny_models.init_weights_(net, seed=seed)
    with torch.no_grad():
        for heads, per_anchor in ((net.ClassHead, 2), (net.BboxHead, 4), (net.LandmarkHead, 10)):
            for level, head in enumerate(heads):
                head.conv1x1.weight.zero_()
                b = head.conv1x1.bias.view(-1, per_anchor)  # (anchors, per_anchor)
                b.zero_()
                if per_anchor == 2:  # logits (background, face)
                    b[:] = torch.tensor([8.0, -8.0])
                    if level == RETINA_LEVEL:
                        b[RETINA_ANCHOR] = torch.tensor([-8.0, 8.0])
                elif per_anchor == 10:  # (landmark - anchor centre) / (0.1 * anchor size)
                    offsets = [(x / 512 - 0.5) / 0.1 for x in sum(FFHQ_LANDMARKS, ())]
                    b[:] = torch.tensor(offsets)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def write_facexlib(facexlib_root: Path, seed: int = 0) -> dict[str, Path]:
    """<facexlib_root>/facexlib/weights/{detection_Resnet50_Final.pth, parsing_bisenet.pth, parsing_parsenet.pth}:
    where facexlib's load_file_from_url looks when its ROOT_DIR is facexlib_root (tests/e2e_pack points it there)
    instead of the installed package's own folder. fp16 state dicts in the real key layouts (loaded strictly)."""
    from facexlib.parsing.bisenet import BiSeNet
    from facexlib.parsing.parsenet import ParseNet
    weights = Path(facexlib_root) / "facexlib" / "weights"
    out = {"detection": _save_torch(weights / FACEXLIB_FILES[0], _half(retinaface_state(seed)))}
    for key, net, file in (("bisenet", BiSeNet(num_class=19), FACEXLIB_FILES[1]),
                           ("parsenet", ParseNet(in_size=512, out_size=512, parsing_ch=19), FACEXLIB_FILES[2])):
        tiny_models.init_weights_(net, seed=seed + len(out))
        out[key] = _save_torch(weights / file, _half({k: v.detach().clone() for k, v in net.state_dict().items()}))
    return out


def write_pulid(models: Path, hf_home: Path, facexlib_root: Path, seed: int = 0) -> dict[str, Path]:
    """models/pulid/ip-adapter_pulid_sdxl_fp16.safetensors (fp16), the EVA-CLIP checkpoint in the HF cache, the
    facexlib weights and the antelopev2 stand-ins."""
    models = Path(models)
    out = {"adapter": _save_safetensors(models / "pulid" / PULID_FILE, _half(pulid_state(seed)), "pulid_sdxl"),
           "eva_clip": write_eva_clip(hf_home, seed + 1), "insightface": write_insightface_pack(models, "antelopev2")}
    out.update(write_facexlib(facexlib_root, seed + 2))
    return out


# ------------------------------------------------------------------------------------------ IP-Adapter FaceID
def _perceiver(r: _Rand, prefix: str, dim: int, embedding_dim: int, depth: int = 4, ff_mult: int = 4) -> dict:
    """FacePerceiverResampler keys (IPAdapter_plus image_proj_models.py): heads = dim // 64, dim_head 64."""
    sd = {}
    sd.update(r.linear(prefix + "proj_in.", dim, embedding_dim))
    sd.update(r.linear(prefix + "proj_out.", dim, dim))
    sd.update(r.norm(prefix + "norm_out.", dim))
    for i in range(depth):
        p = f"{prefix}layers.{i}."
        sd.update(r.norm(p + "0.norm1.", dim))
        sd.update(r.norm(p + "0.norm2.", dim))
        sd.update(r.linear(p + "0.to_q.", dim, dim, bias=False))
        sd.update(r.linear(p + "0.to_kv.", 2 * dim, dim, bias=False))
        sd.update(r.linear(p + "0.to_out.", dim, dim, bias=False, gain=0.5))
        sd.update(r.norm(p + "1.0.", dim))
        sd.update(r.linear(p + "1.1.", dim * ff_mult, dim, bias=False))
        sd.update(r.linear(p + "1.3.", dim, dim * ff_mult, bias=False, gain=0.5))
    return sd


def faceid_plusv2_state(seed: int = 0, clip_dim: int = 1024, widths: list[int] | None = None,
                        context_dim: int | None = None) -> dict:
    """Flat image_proj.* (ProjModelFaceIdPlus(2048, 512, clip_dim, 4 tokens)) + ip_adapter.* keys of
    ip-adapter-faceid-plusv2_sdxl: per attention processor n (0..139; odd n = attn2) the FaceID LoRA
    to_{q,k,v,out}_lora.{down,up} (rank LORA_RANK here) and, for attn2, to_{k,v}_ip reading 2048-wide tokens."""
    widths = sdxl_attn2_widths() if widths is None else widths
    context_dim = tiny_models.CONTEXT_DIM if context_dim is None else context_dim
    r = _Rand(seed)
    d = FACEID_SDXL_DIM
    proj = {}
    proj.update(r.linear("proj.0.", FACEID_ID_DIM * 2, FACEID_ID_DIM))
    proj.update(r.linear("proj.2.", d * FACEID_TOKENS, FACEID_ID_DIM * 2))
    proj.update(r.norm("norm.", d))
    proj.update(_perceiver(r, "perceiver_resampler.", d, clip_dim))
    ip = {}
    for i, width in enumerate(widths):
        for n, kv_in in ((2 * i, width), (2 * i + 1, context_dim)):  # attn1 reads the image, attn2 the text
            for name, fan_in in (("to_q", width), ("to_k", kv_in), ("to_v", kv_in), ("to_out", width)):
                ip[f"{n}.{name}_lora.down.weight"] = r.w(LORA_RANK, fan_in)
                ip[f"{n}.{name}_lora.up.weight"] = r.w(width, LORA_RANK) * 0.1
    ip.update(_ip_layers(r, d, widths))
    sd = {"image_proj." + k: v for k, v in proj.items()}
    sd.update({"ip_adapter." + k: v for k, v in ip.items()})
    return sd


# kohya/diffusers names of the tiny SDXL's transformer blocks, in SDXL_ADAPTER_BLOCKS order
_DIFFUSERS_BLOCKS = {("input", 4): "down_blocks_1_attentions_0", ("input", 5): "down_blocks_1_attentions_1",
                     ("input", 7): "down_blocks_2_attentions_0", ("input", 8): "down_blocks_2_attentions_1",
                     ("output", 0): "up_blocks_0_attentions_0", ("output", 1): "up_blocks_0_attentions_1",
                     ("output", 2): "up_blocks_0_attentions_2", ("output", 3): "up_blocks_1_attentions_0",
                     ("output", 4): "up_blocks_1_attentions_1", ("output", 5): "up_blocks_1_attentions_2",
                     ("middle", 0): "mid_block_attentions_0"}


def faceid_lora_state(seed: int = 0, widths: list[int] | None = None, context_dim: int | None = None) -> dict:
    """A kohya-format UNet LoRA (lora_unet_<diffusers block>_transformer_blocks_<i>_attn{1,2}_to_{q,k,v,out_0}
    .lora_down/.lora_up/.alpha) over every attention projection of the tiny SDXL, rank LORA_RANK, non-zero, so the
    unified loader's LoRA visibly changes the model."""
    widths = sdxl_attn2_widths() if widths is None else widths
    context_dim = tiny_models.CONTEXT_DIM if context_dim is None else context_dim
    r = _Rand(seed)
    sd, i = {}, 0
    for kind, block, depth in SDXL_ADAPTER_BLOCKS:
        for t in range(depth):
            width = widths[i]
            i += 1
            base = f"lora_unet_{_DIFFUSERS_BLOCKS[(kind, block)]}_transformer_blocks_{t}_"
            for attn, kv_in in (("attn1", width), ("attn2", context_dim)):
                for name, fan_in in (("to_q", width), ("to_k", kv_in), ("to_v", kv_in), ("to_out_0", width)):
                    key = f"{base}{attn}_{name}"
                    sd[key + ".lora_down.weight"] = r.w(LORA_RANK, fan_in)
                    sd[key + ".lora_up.weight"] = r.w(width, LORA_RANK)
                    sd[key + ".alpha"] = torch.tensor(float(LORA_RANK))
    return sd


def clip_vision_vitl_state(seed: int = 0) -> dict:
    """Every weight of ComfyUI's CLIP vision ViT-L/14-224 (comfy/clip_vision_config_vitl.json, HF key names), as
    ComfyUI builds it: keys and shapes from the model built on the meta device, values N(0, 0.02), norms 1/0,
    biases 0. Needs ComfyUI importable."""
    import json
    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops
    with open(os.path.join(os.path.dirname(comfy.clip_vision.__file__), "clip_vision_config_vitl.json")) as f:
        config = json.load(f)
    meta = comfy.clip_model.CLIPVisionModelProjection(config, torch.float16, torch.device("meta"),
                                                      comfy.ops.manual_cast)
    r = _Rand(seed)
    sd = {}
    for k, v in meta.state_dict().items():
        if "layer_norm" in k or "layrnorm" in k or "layernorm" in k:
            sd[k] = torch.ones(v.shape) if k.endswith("weight") else torch.zeros(v.shape)
        elif k.endswith("bias"):
            sd[k] = torch.zeros(v.shape)
        else:
            sd[k] = r.n(*v.shape, std=0.02)
    assert "vision_model.encoder.layers.22.layer_norm1.weight" in sd and len(sd) > 390, len(sd)
    return sd


def write_faceid(models: Path, seed: int = 0) -> dict[str, Path]:
    """models/ipadapter/ip-adapter-faceid-plusv2_sdxl.safetensors, models/loras/..._lora.safetensors,
    models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors (ViT-L content, see the module docstring), all
    fp16, and the buffalo_l stand-ins (the pack's FaceID loader uses insightface's buffalo_l)."""
    models = Path(models)
    clip = _save_safetensors(models / "clip_vision" / CLIP_VISION_FILE, _half(clip_vision_vitl_state(seed + 2)),
                             "clip_vision_vitl")
    return {"adapter": _save_safetensors(models / "ipadapter" / FACEID_FILE, _half(faceid_plusv2_state(seed)),
                                         "faceid_plusv2_sdxl"),
            "lora": _save_safetensors(models / "loras" / FACEID_LORA_FILE, _half(faceid_lora_state(seed + 1)),
                                      "faceid_plusv2_sdxl_lora"),
            "clip_vision": clip, "insightface": write_insightface_pack(models, "buffalo_l")}


# ------------------------------------------------------------------------------------------ everything
def write_all(base: Path, seed: int = 0) -> dict[str, dict[str, Path]]:
    """The three packs' files under base/models, base/hf_home (EVA-CLIP) and base/facexlib_root (facexlib)."""
    base = Path(base)
    models = base / "models"
    return {"instantid": write_instantid(models, seed),
            "pulid": write_pulid(models, base / "hf_home", base / "facexlib_root", seed + 10),
            "faceid": write_faceid(models, seed + 20)}
