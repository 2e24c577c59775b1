"""FreeCure InstantID nodes: adapter loader, antelopev2 face analysis, and the PD/FD pair. Declarations only;
the work is in freecure_core.identity and freecure_core.comfy_bridge.instantid."""
from __future__ import annotations

from ..freecure_core.comfy_bridge import instantid as bridge
from ..freecure_core.comfy_bridge import model_paths
from ..freecure_core.identity.instantid_tokens import COMBINE_METHODS
from .spec import In, NodeSpec, Out, WithUI

CATEGORY = "FreeCure/identity"
PROVIDERS = {"auto": None, "CPU": ["CPUExecutionProvider"],
             "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "ROCm": ["ROCMExecutionProvider", "CPUExecutionProvider"],
             "DirectML": ["DmlExecutionProvider", "CPUExecutionProvider"],
             "CoreML": ["CoreMLExecutionProvider", "CPUExecutionProvider"]}


def _load_adapter(instantid_file):
    from ..freecure_core.identity.instantid_weights import load_instantid
    return (load_instantid(model_paths.instantid_path(instantid_file)),)


LOADER = NodeSpec(
    node_id="FreeCureInstantIDLoader", display_name="FreeCure InstantID Loader", category=CATEGORY,
    description="Loads an InstantID adapter (Resampler + 70 image-token attention layers): the official "
                "ip-adapter.bin or CrossFaceID's fine-tuned weights, as .bin or .safetensors.",
    inputs=[In("COMBO", "instantid_file", "From ComfyUI/models/instantid/: InstantX ip-adapter.bin, CrossFaceID "
               "pytorch_model.bin, or either converted with python -m freecure_core.convert.",
               options=model_paths.instantid_choices)],
    outputs=[Out("FREECURE_INSTANTID", "instantid", "For FreeCure InstantID Pair.")],
    run=_load_adapter)


def _load_face_analysis(provider):
    from ..freecure_core.identity.face_analysis import FaceAnalysis
    analysis = FaceAnalysis.load(model_paths.detector_folder("antelopev2"), providers=PROVIDERS[provider])
    text = analysis.describe()
    return WithUI((analysis,), {"text": [text]})


FACE_ANALYSIS = NodeSpec(
    node_id="FreeCureInstantIDFaceAnalysis", display_name="FreeCure InstantID Face Analysis", category=CATEGORY,
    description="insightface antelopev2 (SCRFD detector + ArcFace glintr100) run with onnxruntime: the face "
                "embedding and the 5 keypoints InstantID needs. Shows which onnxruntime provider really runs.",
    inputs=[In("COMBO", "provider", "onnxruntime execution provider. auto = CUDA when onnxruntime-gpu offers it, "
               "else CPU. The node's text shows the provider actually used.", options=list(PROVIDERS), default="auto")],
    outputs=[Out("FREECURE_FACE_ANALYSIS", "face_analysis", "For FreeCure InstantID Pair. Files from "
                 "ComfyUI/models/insightface/models/antelopev2/.")],
    run=_load_face_analysis)


def _pair(instantid, face_analysis, control_net, image, model, positive, negative, ip_weight, cn_strength,
          start_at, end_at, noise, combine_embeds, image_kps=None):
    settings = bridge.InstantIDSettings(ip_weight=ip_weight, cn_strength=cn_strength, start_at=start_at,
                                        end_at=end_at, noise=noise, combine_embeds=combine_embeds)
    *outs, info = bridge.instantid_pair(model, positive, negative, instantid, face_analysis, control_net, image,
                                        settings, image_kps=image_kps)
    return WithUI(tuple(outs), {"text": [info]})


PAIR = NodeSpec(
    node_id="FreeCureInstantIDPair", display_name="FreeCure InstantID Pair", category=CATEGORY,
    description="Applies InstantID twice: the personalized branch (PD, your face) and its foundation branch (FD: "
                "the zero face embedding through the same Resampler for the image tokens and the IdentityNet, same "
                "keypoints and strengths), ready for FreeCure Foundation Sampler and FreeCure Sampler.",
    inputs=[
        In("FREECURE_INSTANTID", "instantid", "From FreeCure InstantID Loader."),
        In("FREECURE_FACE_ANALYSIS", "face_analysis", "From FreeCure InstantID Face Analysis."),
        In("CONTROL_NET", "control_net", "The IdentityNet ControlNet from Load ControlNet Model "
           "(ComfyUI/models/controlnet/; InstantID's or CrossFaceID's)."),
        In("IMAGE", "image", "Reference photo(s) of the person; several photos are combined (combine_embeds)."),
        In("MODEL", "model", "The SDXL MODEL (after any LoRA). It is cloned, never modified."),
        In("CONDITIONING", "positive", "The prompt (no trigger word needed for InstantID)."),
        In("CONDITIONING", "negative", "The negative prompt."),
        In("FLOAT", "ip_weight", "Strength of the face tokens in the UNet's cross-attention (InstantID default 0.8; "
           "lower = more prompt, less likeness).", default=0.8, min=0.0, max=3.0, step=0.01),
        In("FLOAT", "cn_strength", "IdentityNet ControlNet strength (0.8 in InstantID's demo; CrossFaceID's code "
           "effectively used 1.0).", default=0.8, min=0.0, max=10.0, step=0.01),
        In("FLOAT", "start_at", "Start of the sampling window where InstantID acts (0 = first step).",
           default=0.0, min=0.0, max=1.0, step=0.001),
        In("FLOAT", "end_at", "End of that window (1 = last step).", default=1.0, min=0.0, max=1.0, step=0.001),
        In("FLOAT", "noise", "Noise in the negative rows' face embedding (other InstantID packs default to 0.35 "
           "against burn-in). 0 = the reference InstantID/FreeCure setup. FD's positive always uses the zero face.",
           default=0.0, min=0.0, max=1.0, step=0.05),
        In("COMBO", "combine_embeds", "How several reference photos become one identity.",
           options=list(COMBINE_METHODS), default="average"),
        In("IMAGE", "image_kps", "Optional pose photo: its face keypoints drive the IdentityNet (e.g. a side profile). "
           "Default: the first reference photo.", optional=True),
    ],
    outputs=[
        Out("MODEL", "pd_model", "Personalized MODEL (face tokens)."),
        Out("CONDITIONING", "pd_positive", "Positive with the IdentityNet (face tokens)."),
        Out("CONDITIONING", "pd_negative", "Negative with the IdentityNet (uncond tokens)."),
        Out("MODEL", "fd_model", "Foundation MODEL (zero-face tokens); same weights, so lockstep works."),
        Out("CONDITIONING", "fd_positive", "Positive with the IdentityNet fed zero-face tokens."),
        Out("CONDITIONING", "fd_negative", "Negative, as PD's."),
        Out("IMAGE", "kps_image", "The keypoint image the IdentityNet sees."),
    ],
    run=_pair)

SPECS = [LOADER, FACE_ANALYSIS, PAIR]
