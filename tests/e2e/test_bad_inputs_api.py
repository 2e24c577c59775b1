"""Bad inputs through the real server API, table-driven over every FreeCure node (issue 7, items 4 and 5).

Each row of BAD is one prompt with one bad input for one node: a wrong type (a link from an output of another type),
an out-of-range number (zero steps, omega, gamma, weights), an unknown choice (refused at validation by ComfyUIs that
check combo values at queue time, as 0.33 does; 0.3.75 does not, so FreeCure's node refuses it: see ``Choice``), a mismatched mask, a batch or size mismatch, an unsupported model, a replay of
a record with another seed / size / sampler / scheduler, a file name that leaves the model folders, a hostile or
broken file. The prompt must either be refused at validation with a node error on that node naming the input (400;
or 200 with node_errors when other outputs of the prompt are valid, which ComfyUI then runs), or fail at execution with an error of that node whose message starts with "FreeCure:" and names the input or the
fix (never a bare library traceback). After each node's rows the server is alive, and at the end it still runs a
good FreeCure prompt.

* ``test_table_covers_every_node``: the table has rows for every node id the pack declares (nodes/*.py) and every
  FreeCure node the server lists, so a new node without rows fails;
* path traversal: a valid parser and adapter are placed outside the models folder (in the server's base folder);
  '../../', absolute and backslash names pointing at them are refused as "not allowed" (had they been read, the
  loader would have succeeded);
* a pickle that would run code (writes a marker file when unpickled), put in models/face_parsing and
  models/instantid, is refused by the loaders through the server without running: the marker never appears.
"""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import sys
from dataclasses import dataclass, field

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import test_server_freecure as tsf  # noqa: E402
from make_identity_models import ADAPTER, IDENTITYNET, PHOTOMAKER, SDXL_2048_CKPT, SDXL_CKPT  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
PACK_MODULE = "custom_nodes.comfyui-freecure"
PARSER = "tiny_bisenet.safetensors"
PORTRAIT = "astronaut_640.png"
CKPT = "tiny_sd15.safetensors"
SIZE = 64
KS = dict(seed=7, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal")
FASA = dict(omega=1.0, layers="reference", custom_layers="", start_percent=0.0, end_percent=1.0, uncond_blend=0.0,
            mask_resample="nearest")
FOUNDATION = dict(KS, denoise=1.0, record="cond", layers="reference", custom_layers="", store="auto", offload_kv=True)
APG = dict(KS, gamma=0.5, inversion_cfg=1.0, inversion_refine=0)
PAIR = dict(ip_weight=0.8, cn_strength=0.8, start_at=0.0, end_at=1.0, noise=0.0, combine_embeds="average")


# ------------------------------------------------------------------------------------------ expectations
@dataclass
class Invalid:
    """Refused at validation: a node error on the node for `input` (of `kind`, e.g. value_bigger_than_max)."""
    input: str
    kind: str


@dataclass
class Fails:
    """Fails at execution in the node (or `node_type`); the message starts with "FreeCure" and holds every text."""
    texts: tuple
    node_type: str | None = None
    prefix: str = "FreeCure:"


@dataclass
class Choice:
    """A value that is none of a combo input's options (an unknown choice, a file name outside the models folder).
    ComfyUIs that check combo values at queue time (0.33) refuse the prompt at validation with value_not_in_list on
    the node for `input`; those that do not (0.3.75) run it, and the node fails as `Fails(texts)` says.  Both tell the
    user which input to fix; which one happened is printed (pytest -s)."""
    input: str
    texts: tuple
    node_type: str | None = None
    prefix: str = "FreeCure:"


@dataclass
class Case:
    label: str
    build: object  # (files) -> (prompt, node key expected to fail)
    expect: object
    files: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ prompt building
class Graph(dict):
    """An API prompt built node by node: g("Class", input=value, other=[node, slot]) -> node key."""

    def __call__(self, class_type: str, **inputs) -> str:
        key = str(len(self) + 1)
        self[key] = {"class_type": class_type, "inputs": inputs}
        return key


def _sd15(g: Graph, width=SIZE, height=SIZE, ckpt=CKPT) -> dict:
    ck = g("CheckpointLoaderSimple", ckpt_name=ckpt)
    enc = lambda text: [g("CLIPTextEncode", text=text, clip=[ck, 1]), 0]  # noqa: E731
    return dict(model=[ck, 0], clip=[ck, 1], vae=[ck, 2], pos=enc("a photo of a woman img, red hair"),
                fd_pos=enc("a photo of a woman, red hair"), neg=enc("blurry"),
                latent=[g("EmptyLatentImage", width=width, height=height, batch_size=1), 0],
                mask=[g("SolidMask", value=1.0, width=width, height=height), 0])


def _image(g: Graph) -> list:
    return [g("EmptyImage", width=SIZE, height=SIZE, batch_size=1, color=0), 0]


def _portrait(g: Graph) -> list:
    return [g("LoadImage", image=PORTRAIT), 0]


def _two_masks(g: Graph, b: dict) -> list:
    image = g("RepeatImageBatch", image=[g("MaskToImage", mask=b["mask"]), 0], amount=2)
    return [g("ImageToMask", image=[image, 0], channel="red"), 0]


def _preview_latent(g: Graph, b: dict, latent: list) -> None:
    g("PreviewImage", images=[g("VAEDecode", samples=latent, vae=b["vae"]), 0])


def _fasa(over=None, mask=None):
    def build(files):
        g = Graph()
        b = _sd15(g)
        fasa = g("FreeCureFASAConfig", mask=mask(g) if mask else b["mask"], **{**FASA, **(over or {})})
        g("PreviewAny", source=[fasa, 0])
        return g, fasa
    return build


def _freecure(fasa=None, foundation=None, sampler=None, kv=True, mask=None, latent=None, links=None):
    """FASA Config -> Foundation Sampler (record) -> FreeCure Sampler (replay when kv) -> preview; returns the
    FreeCure Sampler's key, or the key named by `links` ("fasa" / "foundation")."""
    def build(files):
        g = Graph()
        b = _sd15(g)
        f = g("FreeCureFASAConfig", mask=mask(g, b) if mask else b["mask"], **{**FASA, **(fasa or {})})
        found = g("FreeCureFoundationSampler", model_fd=b["model"], positive=b["fd_pos"], negative=b["neg"],
                  latent_image=b["latent"], **{**FOUNDATION, **(foundation or {})})
        ins = dict(KS, model_pd=b["model"], model_fd=b["model"], positive=b["pos"], negative=b["neg"],
                   fd_positive=b["fd_pos"], fd_negative=b["neg"], latent_image=latent(g) if latent else b["latent"],
                   denoise=1.0, fasa=[f, 0])
        if kv:
            ins["kv"] = [found, 1]
        ins.update(sampler(g, b) if callable(sampler) else (sampler or {}))
        fc = g("FreeCureSampler", **ins)
        _preview_latent(g, b, [fc, 0])
        if not kv:
            _preview_latent(g, b, [found, 0])
        return g, {"fasa": f, "foundation": found}.get(links, fc)
    return build


def _foundation(over=None, latent=None):
    def build(files):
        g = Graph()
        b = _sd15(g)
        found = g("FreeCureFoundationSampler", model_fd=b["model"], positive=b["fd_pos"], negative=b["neg"],
                  latent_image=latent(g) if latent else b["latent"], **{**FOUNDATION, **(over or {})})
        _preview_latent(g, b, [found, 0])
        return g, found
    return build


def _guider(over=None, fasa_link=None, noise_seed=None):
    """FreeCure Guider (+ record when noise_seed is set) -> SamplerCustomAdvanced -> Split Pair -> preview."""
    def build(files):
        g = Graph()
        b = _sd15(g)
        f = g("FreeCureFASAConfig", mask=b["mask"], **FASA)
        ins = dict(model_pd=b["model"], model_fd=b["model"], positive=b["pos"], negative=b["neg"],
                   fd_positive=b["fd_pos"], fd_negative=b["neg"], cfg=4.0,
                   fasa=fasa_link(g, b) if fasa_link else [f, 0])
        if noise_seed is not None:
            found = g("FreeCureFoundationSampler", model_fd=b["model"], positive=b["fd_pos"], negative=b["neg"],
                      latent_image=b["latent"], **FOUNDATION)
            ins["kv"] = [found, 1]
        guider = g("FreeCureGuider", **{**ins, **(over or {})})
        sca = g("SamplerCustomAdvanced", noise=[g("RandomNoise", noise_seed=KS["seed"] if noise_seed is None
                                                  else noise_seed), 0],
                guider=[guider, 0], sampler=[g("KSamplerSelect", sampler_name="euler"), 0],
                sigmas=[g("BasicScheduler", scheduler="normal", steps=KS["steps"], denoise=1.0, model=b["model"]), 0],
                latent_image=b["latent"])
        split = g("FreeCureSplitPair", latent=[sca, 0])
        _preview_latent(g, b, [split, 0])
        return g, (sca if noise_seed is not None else guider)
    return build


def _split(source):
    def build(files):
        g = Graph()
        b = _sd15(g)
        split = g("FreeCureSplitPair", latent=source(g, b))
        _preview_latent(g, b, [split, 0])
        return g, split
    return build


def _apg(over=None, samples=None):
    def build(files):
        g = Graph()
        b = _sd15(g)
        apg = g("FreeCureAPG", model=b["model"], samples=samples(g) if samples else b["latent"], template=b["fd_pos"],
                attributes=b["pos"], negative=b["neg"], **{**APG, **(over or {})})
        _preview_latent(g, b, [apg, 0])
        return g, apg
    return build


def _expression_split(prompt_link=None):
    def build(files):
        g = Graph()
        split = g("FreeCureExpressionSplit", prompt=prompt_link(g) if prompt_link else "a woman laughing",
                  keep_attributes=True)
        g("PreviewAny", source=[split, 0])
        return g, split
    return build


def _parser(parser=PARSER, face_detector="none", device="cpu", mode="face crop", crop_margin=0.5, image=None,
            attributes=None, grow=0, target="loader"):
    """Parser Loader -> Face Parse (-> Attribute Mask) -> previews."""
    def build(files):
        g = Graph()
        loader = g("FreeCureFaceParserLoader", parser=files.get(parser, parser), face_detector=face_detector,
                   device=device)
        img = image(g) if image else _portrait(g)
        parse = g("FreeCureFaceParse", face_parser=[loader, 0], image=img, mode=mode, crop_margin=crop_margin)
        if attributes is None:
            g("PreviewImage", images=[parse, 1])
        keys = {"loader": loader, "parse": parse}
        if attributes is not None:
            keys["mask"] = g("FreeCureAttributeMask", face_parse=[parse, 0], prompt="", attributes=attributes,
                             grow=grow, feather=0.0)
            g("PreviewImage", images=[keys["mask"], 1])
        return g, keys[target]
    return build


def _sam(box="", points="", region=None, sam_model="sam_vit_b_01ec64.pth", combine="replace"):
    def build(files):
        g = Graph()
        ins = dict(image=_portrait(g), sam_model=files.get(sam_model, sam_model), combine=combine, device="cpu",
                   box=box, points=points)
        if region is not None:
            ins["region"] = region(g)
        sam = g("FreeCureSAMRefine", **ins)
        g("PreviewImage", images=[g("MaskToImage", mask=[sam, 0]), 0])
        return g, sam
    return build


def _zero_face_embeds(source):
    def build(files):
        g = Graph()
        z = g("FreeCureZeroFaceEmbeds", face_embeds=source(g))
        g("PreviewAny", source=[z, 0])
        return g, z
    return build


def _zero_identity(source):
    def build(files):
        g = Graph()
        b = _sd15(g)
        z = g("FreeCureZeroIdentityModel", model_pd=source(g, b))
        g("PreviewAny", source=[z, 0])
        return g, z
    return build


def _instantid_loader(name):
    def build(files):
        g = Graph()
        loader = g("FreeCureInstantIDLoader", instantid_file=files.get(name, name))
        g("PreviewAny", source=[loader, 0])
        return g, loader
    return build


def _face_analysis(provider):
    def build(files):
        g = Graph()
        fa = g("FreeCureInstantIDFaceAnalysis", provider=provider)
        g("PreviewAny", source=[fa, 0])
        return g, fa
    return build


def _pair(ckpt=SDXL_CKPT, image=None, over=None):
    def build(files):
        g = Graph()
        b = _sd15(g, ckpt=ckpt)
        pair = g("FreeCureInstantIDPair", instantid=[g("FreeCureInstantIDLoader", instantid_file=ADAPTER), 0],
                 face_analysis=[g("FreeCureInstantIDFaceAnalysis", provider="CPU"), 0],
                 control_net=[g("ControlNetLoader", control_net_name=IDENTITYNET), 0],
                 image=image(g) if image else _portrait(g), model=b["model"], positive=b["pos"], negative=b["neg"],
                 **{**PAIR, **(over or {})})
        g("PreviewImage", images=[pair, 6])
        return g, pair
    return build


def _photomaker(ckpt=SDXL_2048_CKPT, over=None):
    def build(files):
        g = Graph()
        ck = g("CheckpointLoaderSimple", ckpt_name=ckpt)
        pm = g("PhotoMakerLoader", photomaker_model_name=PHOTOMAKER)
        pair = g("FreeCurePhotoMakerEncodePair", photomaker=[pm, 0], image=_portrait(g), clip=[ck, 1],
                 **{"text": "a photo of a woman photomaker", "merge_start": 0.2, **(over or {})})
        g("PreviewAny", source=[pair, 0])
        return g, pair
    return build


def _clip_loader(name):
    def build(files):
        g = Graph()
        loader = g("FreeCureCLIPScoreLoader", clip_folder=name)
        g("PreviewAny", source=[loader, 0])
        return g, loader
    return build


def _lpips_loader(name, alexnet="none", size=128):
    def build(files):
        g = Graph()
        loader = g("FreeCureLPIPSLoader", lpips_file=name, alexnet_file=alexnet, size=size)
        g("PreviewAny", source=[loader, 0])
        return g, loader
    return build


def _metric(class_type, **over):
    """One evaluation node with its usual inputs (loaders, the portrait), `over` replacing some of them."""
    def build(files):
        g = Graph()
        ins = {
            "FreeCureIdentitySimilarity": lambda: dict(
                face_analysis=[g("FreeCureInstantIDFaceAnalysis", provider="CPU"), 0], reference=_portrait(g),
                images=_portrait(g)),
            "FreeCurePromptConsistency": lambda: dict(
                clip_scorer=[g("FreeCureCLIPScoreLoader", clip_folder="tiny_clip"), 0], images=_portrait(g),
                prompt="a photo of a woman with red hair"),
            "FreeCureAttributeAccuracy": lambda: dict(
                clip_scorer=[g("FreeCureCLIPScoreLoader", clip_folder="tiny_clip"), 0], images=_portrait(g),
                prompt="a photo of a woman with red hair", subject="a woman"),
            "FreeCureFaceDiversity": lambda: dict(
                lpips=[g("FreeCureLPIPSLoader", lpips_file="lpips_alex.safetensors", alexnet_file="none", size=64), 0],
                face_analysis=[g("FreeCureInstantIDFaceAnalysis", provider="CPU"), 0], images=_portrait(g)),
        }[class_type]()
        ins.update({k: v(g) if callable(v) else v for k, v in over.items()})
        node = g(class_type, **ins)
        g("PreviewAny", source=[node, 1])
        return g, node
    return build


# ------------------------------------------------------------------------------------------ the table
OUTSIDE = "../../secret/"  # from models/<folder>/ to <server base>/secret/
BAD: dict[str, list[Case]] = {
    "FreeCureFASAConfig": [
        Case("omega out of range", _fasa({"omega": 50.0}), Invalid("omega", "value_bigger_than_max")),
        Case("mask is an IMAGE", _fasa(mask=_image), Invalid("mask", "return_type_mismatch")),
        Case("custom layers empty", _fasa({"layers": "custom"}), Fails(("custom_layers", "output:6-11"))),
        Case("unknown layers", _fasa({"layers": "../../etc"}),
             Choice("layers", ("layers", "reference, decoder, all, single, custom"))),
        Case("unknown omega_mode", _fasa({"omega_mode": "sometimes"}),
             Choice("omega_mode", ("omega_mode", "-1 = auto, auto, value"))),
        Case("start after end", _fasa({"start_percent": 0.9, "end_percent": 0.1}), Fails(("start_percent",))),
    ],
    "FreeCureFoundationSampler": [
        Case("zero steps", _foundation({"steps": 0}), Invalid("steps", "value_smaller_than_min")),
        Case("latent is an IMAGE", _foundation(latent=_image), Invalid("latent_image", "return_type_mismatch")),
        Case("unknown sampler", _foundation({"sampler_name": "warp_drive"}), Choice("sampler_name", ("sampler_name", "euler"))),
        Case("unknown record", _foundation({"record": "sometimes"}), Choice("record", ("record", "cond"))),
        Case("layers matching nothing", _foundation({"layers": "custom", "custom_layers": "output:40"}),
             Fails(("output:40",))),
    ],
    "FreeCureSampler": [
        Case("zero steps", _freecure(sampler={"steps": 0}), Invalid("steps", "value_smaller_than_min")),
        Case("fasa is a MASK", _freecure(sampler=lambda g, b: {"fasa": b["mask"]}),
             Invalid("fasa", "return_type_mismatch")),
        Case("mask of another aspect", _freecure(kv=False, mask=lambda g, b: [g("SolidMask", value=1.0, width=SIZE,
                                                                              height=2 * SIZE), 0]),
             Fails(("mask", "aspect"))),
        Case("2 masks for 1 image", _freecure(kv=False, mask=_two_masks), Fails(("mask", "batch of 2", "latent has 1"))),
        Case("replay with another seed", _freecure(sampler={"seed": 8}), Fails(("noise differs", "same seed"))),
        Case("replay with another size", _freecure(latent=lambda g: [g("EmptyLatentImage", width=2 * SIZE,
                                                                       height=2 * SIZE, batch_size=1), 0]),
             Fails(("latent of shape", "size"))),
        Case("replay with another sampler", _freecure(sampler={"sampler_name": "heun"}), Fails(("sampler",))),
        Case("replay with another scheduler", _freecure(foundation={"steps": 4},  # 2 steps: same sigmas
                                                        sampler={"steps": 4, "scheduler": "karras"}),
             Fails(("sigma schedule differs", "scheduler"))),
        Case("replay of a record that is off", _freecure(foundation={"record": "off"}), Fails(("record",))),
    ],
    "FreeCureGuider": [
        Case("cfg out of range", _guider({"cfg": 500.0}), Invalid("cfg", "value_bigger_than_max")),
        Case("fasa is a LATENT", _guider(fasa_link=lambda g, b: b["latent"]), Invalid("fasa", "return_type_mismatch")),
        Case("replay with another noise seed", _guider(noise_seed=KS["seed"] + 1),
             Fails(("noise differs", "same seed"), node_type="SamplerCustomAdvanced")),
    ],
    "FreeCureSplitPair": [
        Case("latent is an IMAGE", _split(lambda g, b: _image(g)), Invalid("latent", "return_type_mismatch")),
        Case("not a pair", _split(lambda g, b: b["latent"]), Fails(("1 images", "even count", "FreeCureGuider"))),
    ],
    "FreeCureAPG": [
        Case("gamma out of range", _apg({"gamma": 1.5}), Invalid("gamma", "value_bigger_than_max")),
        Case("zero steps", _apg({"steps": 0}), Invalid("steps", "value_smaller_than_min")),
        Case("samples is an IMAGE", _apg(samples=_image), Invalid("samples", "return_type_mismatch")),
        Case("unknown scheduler", _apg({"scheduler": "sometimes"}), Choice("scheduler", ("scheduler", "normal"))),
        Case("unknown gamma_mode", _apg({"gamma_mode": "percent"}),
             Choice("gamma_mode", ("gamma_mode", "'percent'", "timestep (paper)", "steps"))),
    ],
    "FreeCureExpressionSplit": [
        Case("prompt is an IMAGE", _expression_split(_image), Invalid("prompt", "return_type_mismatch")),
    ],
    "FreeCureFaceParserLoader": [
        Case("parser ../../ outside", _parser(OUTSIDE + "parser.safetensors"), Choice("parser", ("parser", "not allowed"))),
        Case("parser absolute path", _parser("abs parser"), Choice("parser", ("not allowed", "models/face_parsing"))),
        Case("parser backslashes", _parser("..\\..\\secret\\parser.safetensors"), Choice("parser", ("not allowed",))),
        Case("parser pickle with code", _parser("evil parser"), Fails(("refusing", "weights_only=True",
                                                                       "not only tensors"))),
        Case("truncated parser", _parser("truncated parser"), Fails(("truncated or corrupt",))),
        Case("face_detector is a path", _parser(face_detector="../../secret"), Choice("face_detector", ("face_detector", "antelopev2"))),
        Case("unknown device", _parser(device="tpu"), Choice("device", ("device", "auto, cpu"))),
    ],
    "FreeCureFaceParse": [
        Case("unknown mode", _parser(mode="banana", target="parse"), Choice("mode", ("mode", "face crop"))),
        Case("crop_margin out of range", _parser(crop_margin=5.0, target="parse"),
             Invalid("crop_margin", "value_bigger_than_max")),
        Case("image is a MASK", _parser(image=lambda g: [g("SolidMask", value=1.0, width=SIZE, height=SIZE), 0],
                                        target="parse"), Invalid("image", "return_type_mismatch")),
    ],
    "FreeCureAttributeMask": [
        Case("unknown attribute", _parser(attributes="hair, wings", target="mask"),
             Fails(("unknown attribute", "wings", "hair"))),
        Case("grow out of range", _parser(attributes="hair", grow=1000, target="mask"),
             Invalid("grow", "value_bigger_than_max")),
    ],
    "FreeCureSAMRefine": [
        Case("box of three numbers", _sam(box="1,2,3"), Fails(("box", "x0,y0,x1,y1"))),
        Case("nothing to segment", _sam(), Fails(("region mask", "box or points"))),
        Case("region of another size", _sam(region=lambda g: [g("SolidMask", value=1.0, width=32, height=32), 0]),
             Fails(("region mask is 32x32", "640x640"))),
        Case("unknown combine", _sam(box="1,1,20,20", combine="xor"), Choice("combine", ("combine", "replace"))),
        Case("sam_model ../../ outside", _sam(box="1,1,20,20", sam_model=OUTSIDE + "sam.pth"),
             Choice("sam_model", ("not allowed", "models/sams"))),
    ],
    "FreeCureZeroFaceEmbeds": [
        Case("face_embeds is a LATENT",
             _zero_face_embeds(lambda g: [g("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1), 0]),
             Invalid("face_embeds", "return_type_mismatch")),
    ],
    "FreeCureZeroIdentityModel": [
        Case("model_pd is a LATENT",
             _zero_identity(lambda g, b: b["latent"]),
             Invalid("model_pd", "return_type_mismatch")),
        Case("model_pd without an identity adapter", _zero_identity(lambda g, b: b["model"]),
             Fails(("no cross-attention (attn2) patches", "Apply PuLID"))),
    ],
    "FreeCureInstantIDLoader": [
        Case("adapter ../../ outside", _instantid_loader(OUTSIDE + "adapter.safetensors"),
             Choice("instantid_file", ("not allowed", "models/instantid"))),
        Case("adapter absolute path", _instantid_loader("abs adapter"), Choice("instantid_file", ("not allowed",))),
        Case("adapter pickle with code", _instantid_loader("evil adapter"),
             Fails(("refusing", "weights_only=True", "not only tensors"))),
        Case("truncated adapter", _instantid_loader("truncated adapter"), Fails(("truncated or corrupt",))),
    ],
    "FreeCureInstantIDFaceAnalysis": [
        Case("unknown provider", _face_analysis("TPU"), Choice("provider", ("provider", "CPU"))),
    ],
    "FreeCureInstantIDPair": [
        Case("SD1.5 model with the SDXL adapter", _pair(ckpt=CKPT), Fails(("SDXL",))),
        Case("ip_weight out of range", _pair(over={"ip_weight": 5.0}), Invalid("ip_weight", "value_bigger_than_max")),
        Case("start_at after end_at", _pair(over={"start_at": 0.8, "end_at": 0.2}), Fails(("start_at", "end_at"))),
        Case("photo without a face", _pair(image=_image), Fails(("no face found in reference image 1",))),
    ],
    "FreeCureCLIPScoreLoader": [
        Case("folder ../../ outside", _clip_loader(OUTSIDE + "clip"), Choice("clip_folder", ("not allowed", "models/clip_eval"))),
        Case("folder missing", _clip_loader("clip-vit-large-patch14"),
             Fails(("clip-vit-large-patch14", "models/clip_eval", "never downloads"))),
    ],
    "FreeCureLPIPSLoader": [
        Case("file ../../ outside", _lpips_loader(OUTSIDE + "lpips.pth"), Choice("lpips_file", ("not allowed", "models/lpips"))),
        Case("size out of range", _lpips_loader("lpips_alex.safetensors", size=4), Invalid("size", "value_smaller_than_min")),
    ],
    "FreeCureIdentitySimilarity": [
        Case("reference without a face", _metric("FreeCureIdentitySimilarity", reference=_image),
             Fails(("no face found in reference image 1",))),
        Case("images is a MASK", _metric("FreeCureIdentitySimilarity",
                                         images=lambda g: [g("SolidMask", value=1.0, width=SIZE, height=SIZE), 0]),
             Invalid("images", "return_type_mismatch")),
    ],
    "FreeCurePromptConsistency": [
        Case("images is a LATENT", _metric("FreeCurePromptConsistency", images=lambda g: [
            g("EmptyLatentImage", width=SIZE, height=SIZE, batch_size=1), 0]), Invalid("images", "return_type_mismatch")),
    ],
    "FreeCureAttributeAccuracy": [
        Case("face_parse is an IMAGE", _metric("FreeCureAttributeAccuracy", face_parse=_image),
             Invalid("face_parse", "return_type_mismatch")),
    ],
    "FreeCureFaceDiversity": [
        Case("images is a MASK", _metric("FreeCureFaceDiversity",
                                         images=lambda g: [g("SolidMask", value=1.0, width=SIZE, height=SIZE), 0]),
             Invalid("images", "return_type_mismatch")),
    ],
    "FreeCurePhotoMakerEncodePair": [
        Case("SD1.5 CLIP", _photomaker(ckpt=CKPT), Fails(("2048-wide", "SDXL's CLIP"))),
        Case("merge_start out of range", _photomaker(over={"merge_start": 2.0}),
             Invalid("merge_start", "value_bigger_than_max")),
        Case("no trigger word", _photomaker(over={"text": "a photo of a woman"}), Fails(("trigger word",))),
    ],
}


# ------------------------------------------------------------------------------------------ files
class Payload:
    def __init__(self, marker: pathlib.Path):
        self.code = f"open({str(marker)!r}, 'w').write('code from a model file ran')"

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture(scope="module")
def files(comfy_server):
    """Hostile and broken files in the server's model folders, valid ones outside them; cleaned up after."""
    import torch
    base = comfy_server.tmp
    models = base / "models"
    secret = base / "secret"
    secret.mkdir(exist_ok=True)
    marker = base / "code_ran.marker"
    made = [secret / "parser.safetensors", secret / "adapter.safetensors", secret / "sam.pth",
            models / "face_parsing" / "evil_parser.pth", models / "instantid" / "evil_adapter.bin",
            models / "face_parsing" / "truncated_parser.safetensors",
            models / "instantid" / "truncated_adapter.safetensors"]
    shutil.copy(models / "face_parsing" / PARSER, made[0])  # valid: the loaders would succeed if they read them
    shutil.copy(models / "instantid" / ADAPTER, made[1])
    made[2].write_bytes(b"not read")
    for path in made[3:5]:
        torch.save({"state_dict": {"w": torch.zeros(2)}, "evil": Payload(marker)}, path)
    for src, dst in ((made[0], made[5]), (made[1], made[6])):
        data = src.read_bytes()
        dst.write_bytes(data[:len(data) // 2])
    names = {"abs parser": str(made[0]), "abs adapter": str(made[1]), "evil parser": made[3].name,
             "evil adapter": made[4].name, "truncated parser": made[5].name, "truncated adapter": made[6].name,
             "marker": marker}
    try:
        yield names
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        shutil.rmtree(secret, ignore_errors=True)


# ------------------------------------------------------------------------------------------ tests
def _declared_node_ids() -> set[str]:
    return {m for p in (REPO / "nodes").glob("*.py") for m in re.findall(r'node_id="(\w+)"', p.read_text())}


def test_table_covers_every_node():
    declared = _declared_node_ids()
    assert len(declared) >= 16
    assert set(BAD) == declared, f"nodes without bad-input rows: {sorted(declared - set(BAD))}; " \
                                 f"rows for unknown nodes: {sorted(set(BAD) - declared)}"


@pytest.mark.e2e
def test_table_covers_every_node_the_server_lists(comfy_server):
    listed = {k for k, v in comfy_server.object_info().items() if v.get("python_module") == PACK_MODULE}
    assert listed == set(BAD) == _declared_node_ids()


def _check(server, case: Case, node_id: str, files: dict) -> None:
    prompt, key = case.build(files)
    where = f"{node_id} / {case.label}"
    code, body = server.queue(prompt)
    if isinstance(case.expect, Choice):
        refused = code == 400 or body.get("node_errors")
        print(f"{where}: {'refused at validation' if refused else 'accepted; the node must fail'} "
              f"(ComfyUI {server.version})")
        choice = case.expect
        case = Case(case.label, case.build,
                    Invalid(choice.input, "value_not_in_list") if refused
                    else Fails(choice.texts, choice.node_type, choice.prefix))
    _check_answer(server, case, node_id, where, key, code, body)


def _check_answer(server, case: Case, node_id: str, where: str, key: str, code: int, body: dict) -> None:
    if isinstance(case.expect, Invalid):
        # 400; or 200 when the prompt has other, valid outputs: ComfyUI then runs those and reports node_errors
        assert code == 400 or (code == 200 and body.get("node_errors")), \
            f"{where}: expected a validation error, got {code}: {json.dumps(body)[:2000]}"
        if code == 400:
            assert body["error"]["type"] == "prompt_outputs_failed_validation", (where, body)
        else:
            server.wait(body["prompt_id"], timeout=240)
        errors = body["node_errors"].get(key)
        assert errors and errors["class_type"] == node_id, (where, body["node_errors"])
        found = [(e["type"], e["extra_info"].get("input_name")) for e in errors["errors"]]
        assert (case.expect.kind, case.expect.input) in found, (where, errors)
        return
    assert code == 200 and not body.get("node_errors"), f"{where}: refused at validation ({code}): {body}"
    entry = server.wait(body["prompt_id"], timeout=240)
    err = tsf._execution_error(entry)
    assert err["node_type"] == (case.expect.node_type or node_id), (where, err["node_type"], err["exception_message"])
    if case.expect.node_type is None:
        assert err["node_id"] == key, (where, err)
    msg = err["exception_message"]
    assert msg.startswith(case.expect.prefix) and "Traceback" not in msg, (where, msg)
    print(f"{where}: {msg.strip()}")  # shown with -s: the messages users get
    missing = [t for t in case.expect.texts if t not in msg]
    assert not missing, f"{where}: {missing} not in {msg!r}"


@pytest.mark.e2e
@pytest.mark.parametrize("node_id", sorted(BAD))
def test_bad_inputs_are_refused_naming_the_input(comfy_server, files, node_id):
    for case in BAD[node_id]:
        _check(comfy_server, case, node_id, files)
        assert comfy_server.alive(), f"{node_id} / {case.label} took the server down:\n{comfy_server.log_tail()}"
    assert not files["marker"].exists(), "code from a model file ran in the server"


@pytest.mark.e2e
def test_the_server_still_runs_a_good_prompt(comfy_server, files):
    assert not files["marker"].exists()
    tsf._assert_good_prompt_runs(comfy_server)
