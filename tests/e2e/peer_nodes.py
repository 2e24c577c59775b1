"""/object_info entries for the peer packs' nodes that workflows/freecure_peer_*.json use.

The e2e server does not install those packs, so tests/e2e/test_workflows_identity.py merges these entries into
the server's /object_info to check the peer workflows (and to write their API copies). Each entry has the shape
ComfyUI's server gives a V1 node (server.py ``node_info``): input (required/optional specs), input_order, output,
output_is_list, output_name, name, display_name, description, python_module, category, output_node.

Written by hand from reading the packs' sources (class names, input names and order, types, defaults, return
types and names, display names); file-list combos list the file names the workflows use, since the real lists are
the user's model folders:

* cubiq/ComfyUI_InstantID, InstantID.py at commit 1ef34ef573581bd9727c1e0ac05aa956b356a510 (2024-09-30):
  InstantIDModelLoader, InstantIDFaceAnalysis, FaceKeypointsPreprocessor, InstantIDAttentionPatch,
  ApplyInstantIDControlNet.
* cubiq/PuLID_ComfyUI, pulid.py at commit 4e1fd4024cae77a0c53edb8ecc3c8ee04027ebef (2024-10-05):
  PulidModelLoader, PulidEvaClipLoader, PulidInsightFaceLoader, ApplyPulid.
* cubiq/ComfyUI_IPAdapter_plus, IPAdapterPlus.py at commit 9d076a3df0d2763cef5510ec5ab807f6632c39f5 (2025-02-26):
  IPAdapterUnifiedLoaderFaceID (RETURN_TYPES inherited from IPAdapterUnifiedLoader), IPAdapterFaceID.
* lldacing/ComfyUI_PuLID_Flux_ll, pulidflux.py at commit ba90657fe6ff (2025-04-08): PulidFluxModelLoader,
  PulidFluxEvaClipLoader, PulidFluxInsightFaceLoader, ApplyPulidFlux (its hidden unique_id is left out, like the
  frontend-invisible inputs of the others). tests/e2e/test_peer_pulid_flux.py compares these entries with the real
  port's /object_info.
"""
from __future__ import annotations

import copy

INSTANTID_MODULE = "custom_nodes.ComfyUI_InstantID"
PULID_MODULE = "custom_nodes.PuLID_ComfyUI"
IPADAPTER_MODULE = "custom_nodes.ComfyUI_IPAdapter_plus"
PULID_FLUX_MODULE = "custom_nodes.ComfyUI_PuLID_Flux_ll"


def _float(default, lo, hi, step) -> list:
    return ["FLOAT", {"default": default, "min": lo, "max": hi, "step": step}]


def _node(name: str, display_name: str, category: str, module: str, required: dict, optional: dict | None,
          outputs: list[str], output_names: list[str] | None = None) -> dict:
    inputs = {"required": required}
    if optional is not None:
        inputs["optional"] = optional
    return {
        "input": inputs,
        "input_order": {group: list(specs) for group, specs in inputs.items()},
        "output": list(outputs),
        "output_is_list": [False] * len(outputs),
        "output_name": list(output_names or outputs),
        "name": name,
        "display_name": display_name,
        "description": "",
        "python_module": module,
        "category": category,
        "output_node": False,
    }


START_AT = _float(0.0, 0.0, 1.0, 0.001)
END_AT = _float(1.0, 0.0, 1.0, 0.001)
PROVIDERS_INSIGHTFACE = [["CPU", "CUDA", "ROCM", "CoreML"]]  # InstantID and PuLID packs: first = default

# ------------------------------------------------------------------------------------------ ComfyUI_InstantID
INSTANTID = {
    "InstantIDModelLoader": _node(
        "InstantIDModelLoader", "Load InstantID Model", "InstantID", INSTANTID_MODULE,
        {"instantid_file": [["ip-adapter.bin"]]}, None, ["INSTANTID"]),
    "InstantIDFaceAnalysis": _node(
        "InstantIDFaceAnalysis", "InstantID Face Analysis", "InstantID", INSTANTID_MODULE,
        {"provider": PROVIDERS_INSIGHTFACE}, None, ["FACEANALYSIS"]),
    "FaceKeypointsPreprocessor": _node(
        "FaceKeypointsPreprocessor", "Face Keypoints Preprocessor", "InstantID", INSTANTID_MODULE,
        {"faceanalysis": ["FACEANALYSIS"], "image": ["IMAGE"]}, None, ["IMAGE"]),
    "InstantIDAttentionPatch": _node(
        "InstantIDAttentionPatch", "InstantID Patch Attention", "InstantID", INSTANTID_MODULE,
        {"instantid": ["INSTANTID"], "insightface": ["FACEANALYSIS"], "image": ["IMAGE"], "model": ["MODEL"],
         "weight": _float(1.0, -1.0, 3.0, 0.01), "start_at": START_AT, "end_at": END_AT,
         "noise": _float(0.0, 0.0, 1.0, 0.1)},
        {"mask": ["MASK"]}, ["MODEL", "FACE_EMBEDS"]),
    "ApplyInstantIDControlNet": _node(
        "ApplyInstantIDControlNet", "InstantID Apply ControlNet", "InstantID", INSTANTID_MODULE,
        {"face_embeds": ["FACE_EMBEDS"], "control_net": ["CONTROL_NET"], "image_kps": ["IMAGE"],
         "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "strength": _float(1.0, 0.0, 10.0, 0.01),
         "start_at": START_AT, "end_at": END_AT},
        {"mask": ["MASK"]}, ["CONDITIONING", "CONDITIONING"], ["positive", "negative"]),
}

# ------------------------------------------------------------------------------------------ PuLID_ComfyUI
PULID = {
    "PulidModelLoader": _node(
        "PulidModelLoader", "Load PuLID Model", "pulid", PULID_MODULE,
        {"pulid_file": [["ip-adapter_pulid_sdxl_fp16.safetensors"]]}, None, ["PULID"]),
    "PulidEvaClipLoader": _node(
        "PulidEvaClipLoader", "Load Eva Clip (PuLID)", "pulid", PULID_MODULE, {}, None, ["EVA_CLIP"]),
    "PulidInsightFaceLoader": _node(
        "PulidInsightFaceLoader", "Load InsightFace (PuLID)", "pulid", PULID_MODULE,
        {"provider": PROVIDERS_INSIGHTFACE}, None, ["FACEANALYSIS"]),
    "ApplyPulid": _node(
        "ApplyPulid", "Apply PuLID", "pulid", PULID_MODULE,
        {"model": ["MODEL"], "pulid": ["PULID"], "eva_clip": ["EVA_CLIP"], "face_analysis": ["FACEANALYSIS"],
         "image": ["IMAGE"], "method": [["fidelity", "style", "neutral"]],
         "weight": _float(1.0, -1.0, 5.0, 0.05), "start_at": START_AT, "end_at": END_AT},
        {"attn_mask": ["MASK"]}, ["MODEL"]),
}

# ------------------------------------------------------------------------------------------ ComfyUI_IPAdapter_plus
WEIGHT_TYPES = ["linear", "ease in", "ease out", "ease in-out", "reverse in-out", "weak input", "weak output",
                "weak middle", "strong middle", "style transfer", "composition", "strong style transfer",
                "style and composition", "style transfer precise", "composition precise"]
IPADAPTER = {
    "IPAdapterUnifiedLoaderFaceID": _node(
        "IPAdapterUnifiedLoaderFaceID", "IPAdapter Unified Loader FaceID", "ipadapter/faceid", IPADAPTER_MODULE,
        {"model": ["MODEL"],
         "preset": [["FACEID", "FACEID PLUS - SD1.5 only", "FACEID PLUS V2", "FACEID PORTRAIT (style transfer)",
                     "FACEID PORTRAIT UNNORM - SDXL only (strong)"]],
         "lora_strength": ["FLOAT", {"default": 0.6, "min": 0, "max": 1, "step": 0.01}],
         "provider": [["CPU", "CUDA", "ROCM", "DirectML", "OpenVINO", "CoreML"]]},
        {"ipadapter": ["IPADAPTER"]}, ["MODEL", "IPADAPTER"], ["MODEL", "ipadapter"]),
    "IPAdapterFaceID": _node(
        "IPAdapterFaceID", "IPAdapter FaceID", "ipadapter/faceid", IPADAPTER_MODULE,
        {"model": ["MODEL"], "ipadapter": ["IPADAPTER"], "image": ["IMAGE"],
         "weight": ["FLOAT", {"default": 1.0, "min": -1, "max": 3, "step": 0.05}],
         "weight_faceidv2": ["FLOAT", {"default": 1.0, "min": -1, "max": 5.0, "step": 0.05}],
         "weight_type": [WEIGHT_TYPES],
         "combine_embeds": [["concat", "add", "subtract", "average", "norm average"]],
         "start_at": START_AT, "end_at": END_AT,
         "embeds_scaling": [["V only", "K+V", "K+V w/ C penalty", "K+mean(V) w/ C penalty"]]},
        {"image_negative": ["IMAGE"], "attn_mask": ["MASK"], "clip_vision": ["CLIP_VISION"],
         "insightface": ["INSIGHTFACE"]},
        ["MODEL", "IMAGE"], ["MODEL", "face_image"]),
}

# ------------------------------------------------------------------------------------------ ComfyUI_PuLID_Flux_ll
PULID_FLUX = {
    "PulidFluxModelLoader": _node(
        "PulidFluxModelLoader", "Load PuLID Flux Model", "pulid", PULID_FLUX_MODULE,
        {"pulid_file": [["pulid_flux_v0.9.1.safetensors"]]}, None, ["PULIDFLUX"]),
    "PulidFluxEvaClipLoader": _node(
        "PulidFluxEvaClipLoader", "Load Eva Clip (PuLID Flux)", "pulid", PULID_FLUX_MODULE, {}, None, ["EVA_CLIP"]),
    "PulidFluxInsightFaceLoader": _node(
        "PulidFluxInsightFaceLoader", "Load InsightFace (PuLID Flux)", "pulid", PULID_FLUX_MODULE,
        {"provider": [["CPU", "CUDA", "ROCM"]]}, None, ["FACEANALYSIS"]),
    "ApplyPulidFlux": _node(
        "ApplyPulidFlux", "Apply PuLID Flux", "pulid", PULID_FLUX_MODULE,
        {"model": ["MODEL"], "pulid_flux": ["PULIDFLUX"], "eva_clip": ["EVA_CLIP"], "face_analysis": ["FACEANALYSIS"],
         "image": ["IMAGE"], "weight": _float(1.0, -1.0, 5.0, 0.05), "start_at": START_AT, "end_at": END_AT},
        {"attn_mask": ["MASK"], "options": ["OPTIONS"]}, ["MODEL"]),
}

# PULID_FLUX shares no node name with the others, but balazik's ComfyUI-PuLID-Flux registers the same names
PEER_NODES: dict[str, dict] = {**INSTANTID, **PULID, **IPADAPTER, **PULID_FLUX}
# which pack each peer workflow needs
PACKS = {"freecure_peer_instantid": INSTANTID, "freecure_peer_pulid": PULID, "freecure_peer_faceid": IPADAPTER,
         "freecure_peer_pulid_flux": PULID_FLUX}


def object_info() -> dict[str, dict]:
    """A deep copy of every peer entry (safe to merge into a server's /object_info)."""
    return copy.deepcopy(PEER_NODES)
