"""Loading the InstantID adapter (InstantX ``ip-adapter.bin``, MFaceTech CrossFaceID ``pytorch_model.bin``).

The file holds two parts: ``image_proj``, the Resampler turning a 512-wide insightface face embedding into
16 image tokens (see resampler.py), and ``ip_adapter``, the decoupled cross-attention weights
``{n}.to_k_ip.weight`` / ``{n}.to_v_ip.weight`` (hidden, C) for n = 1, 3, 5, ... — one pair per UNet
cross-attention layer, in the UNet's attn2 order (70 for SDXL, C = 2048).

Formats: torch pickles (.bin/.pt/.pth/.ckpt, loaded with weights_only=True, so no code in them runs)
holding the nested dict {"image_proj": {...}, "ip_adapter": {...}} (or the flat form), and .safetensors
with flat ``image_proj.*`` / ``ip_adapter.*`` keys (what ``python -m freecure_core.convert`` writes).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ..safe_load import load_safetensors, refusal_reason, torch_load_weights
from .resampler import Resampler, check_image_proj, resampler_from_state_dict

TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
WHERE = ("Put InstantX's InstantID ip-adapter.bin (or CrossFaceID's pytorch_model.bin, or a .safetensors "
         "conversion of either) in ComfyUI/models/instantid/ and choose it there.")
_IP_KEY = re.compile(r"^(\d+)\.(to_k_ip|to_v_ip)\.weight$")
_CLIP_WIDTHS = (768, 1024, 1280, 1664)  # CLIP image-feature widths: IP-Adapter Plus resamplers take these


@dataclass(eq=False)
class InstantIDWeights:
    """The InstantID adapter: the Resampler (eval, float32, CPU) and the per-layer to_k_ip / to_v_ip weights."""
    resampler: Resampler
    to_k_ip: list[torch.Tensor]
    to_v_ip: list[torch.Tensor]
    path: str | None = None

    @property
    def num_layers(self) -> int:
        """How many cross-attention layers the adapter patches (70 for SDXL)."""
        return len(self.to_k_ip)

    @property
    def cross_attention_dim(self) -> int:
        """C: the width of the image tokens and the in-width of every to_k_ip / to_v_ip (2048 for SDXL)."""
        return int(self.to_k_ip[0].shape[1])

    @property
    def num_tokens(self) -> int:
        """How many image tokens the Resampler makes (16 for InstantID)."""
        return int(self.resampler.config["num_queries"])

    @property
    def embedding_dim(self) -> int:
        """The face-embedding width the Resampler takes (512, insightface antelopev2)."""
        return int(self.resampler.config["embedding_dim"])

    def face_tokens(self, embeds: torch.Tensor) -> torch.Tensor:
        """Resampler tokens (B, num_tokens, C) for face embeddings (B, embedding_dim) or (B, N, embedding_dim).

        float32, computed without grad on the Resampler's device."""
        if not torch.is_tensor(embeds) or embeds.dim() not in (2, 3) or embeds.shape[-1] != self.embedding_dim:
            got = tuple(embeds.shape) if torch.is_tensor(embeds) else type(embeds).__name__
            raise ValueError(f"FreeCure: InstantID face embeddings must be (B, {self.embedding_dim}) or "
                             f"(B, N, {self.embedding_dim}) (insightface antelopev2 embeddings); got {got}")
        device = self.resampler.latents.device
        with torch.no_grad():
            return self.resampler(embeds.to(device=device, dtype=torch.float32))


def split_instantid_state_dict(state: dict) -> tuple[dict, dict]:
    """(image_proj, ip_adapter) sub-dicts of a nested {"image_proj", "ip_adapter"} or flat prefixed state dict."""
    if not isinstance(state, dict):
        raise ValueError(f"FreeCure: an InstantID adapter file holds a dict of tensors, not a "
                         f"{type(state).__name__}. {WHERE}")
    nested = {k: state.get(k) for k in ("image_proj", "ip_adapter")}
    if any(isinstance(v, dict) for v in nested.values()):
        parts = tuple(dict(v) if isinstance(v, dict) else {} for v in nested.values())
    else:
        parts = tuple({k[len(p):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(p)}
                      for p in ("image_proj.", "ip_adapter."))
    if not any(parts):
        raise ValueError(f"FreeCure: {_what_else(state)}: it has no image_proj / ip_adapter weights, so it is "
                         f"not an InstantID adapter. {WHERE}")
    for name, part in zip(("image_proj", "ip_adapter"), parts):
        odd = [k for k, v in part.items() if not torch.is_tensor(v)]
        if odd:
            raise ValueError(f"FreeCure: {name} entries {odd[:8]} are not tensors; this is not an InstantID "
                             f"adapter file. {WHERE}")
    return parts


def _what_else(state: dict) -> str:
    """A phrase saying what a state dict without image_proj/ip_adapter keys looks like."""
    keys = [k for k in state if isinstance(k, str)]
    has = lambda *prefixes: any(k.startswith(prefixes) for k in keys)
    if has("controlnet_cond_embedding.", "controlnet_down_blocks.", "control_model.", "input_hint_block."):
        return "this is a ControlNet (InstantID's IdentityNet belongs in ComfyUI/models/controlnet/)"
    if has("cp.resnet.", "ffm."):
        return "this is a BiSeNet face parser (it belongs in ComfyUI/models/face_parsing/)"
    if has("image_encoder.", "mask_decoder."):
        return "this is a SAM segmentation checkpoint"
    if has("id_encoder.", "lora_weights."):
        return "this is a PhotoMaker file"
    if has("id_adapter.", "id_adapter_attn_layers."):
        return "this is a PuLID file"
    sample = ", ".join(repr(k) for k in keys[:5]) or "none"
    return f"this file is not an InstantID adapter (first keys: {sample})"


def _ip_adapter_kind(image_proj: dict, ip_adapter: dict) -> str | None:
    """Why an image_proj/ip_adapter pair is an IP-Adapter rather than InstantID, or None."""
    if any(".to_q_lora." in k or ".to_out_lora." in k for k in ip_adapter) or "proj.0.weight" in image_proj:
        return "this is an IP-Adapter FaceID file (not InstantID)"
    if "latents" not in image_proj and any(k.startswith(("proj.", "norm.")) for k in image_proj):
        return ("this is an IP-Adapter file (not InstantID): its image_proj is a linear projection of CLIP image "
                "features")
    proj_in = image_proj.get("proj_in.weight")
    if torch.is_tensor(proj_in) and proj_in.dim() == 2 and proj_in.shape[1] in _CLIP_WIDTHS:
        return (f"this is an IP-Adapter Plus file (not InstantID): its Resampler takes {proj_in.shape[1]}-wide CLIP "
                "image features, InstantID's takes 512-wide face embeddings")
    return None


def check_adapter_keys(image_proj: dict, ip_adapter: dict) -> tuple[int, int]:
    """(num_layers, cross_attention_dim) after checking the file is InstantID-like and its ip_adapter pairs.

    Pairs must be complete, indexed by consecutive odd numbers from 1, all with one in-width, equal to the
    image_proj output width (proj_out) when that is present.  The Resampler itself is not checked here.
    """
    kind = _ip_adapter_kind(image_proj, ip_adapter)
    if kind:
        raise ValueError(f"FreeCure: {kind}. IP-Adapter files belong in ComfyUI/models/ipadapter/. {WHERE}")
    if not image_proj or not ip_adapter:
        absent = "image_proj" if not image_proj else "ip_adapter"
        raise ValueError(f"FreeCure: this adapter has no {absent} weights; an InstantID adapter holds both "
                         f"image_proj (the Resampler) and ip_adapter (to_k_ip / to_v_ip). {WHERE}")
    stray = [k for k in ip_adapter if not _IP_KEY.match(k)]
    if stray:
        raise ValueError(f"FreeCure: unexpected ip_adapter key(s) {stray[:8]}: an InstantID adapter has only "
                         f"'N.to_k_ip.weight' / 'N.to_v_ip.weight'. {WHERE}")
    indices = sorted({int(_IP_KEY.match(k).group(1)) for k in ip_adapter})
    even = [n for n in indices if n % 2 == 0]
    if even:
        raise ValueError(f"FreeCure: ip_adapter index(es) {even[:8]} are even; InstantID numbers its adapter layers "
                         f"1, 3, 5, ... (one per cross-attention layer). {WHERE}")
    expected = [f"{n}.{w}.weight" for n in range(1, indices[-1] + 1, 2) for w in ("to_k_ip", "to_v_ip")]
    missing = [k for k in expected if k not in ip_adapter]
    if missing:
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        raise ValueError(f"FreeCure: the ip_adapter weights are incomplete: missing "
                         f"{', '.join(repr(k) for k in missing[:6])}{more}. {WHERE}")
    shapes = {k: tuple(ip_adapter[k].shape) for k in expected}
    bad = [f"{k} {s}" for k, s in shapes.items() if len(s) != 2]
    if bad:
        raise ValueError(f"FreeCure: ip_adapter weights must be 2-D (hidden, C): {bad[:6]}. {WHERE}")
    unpaired = [f"{n}: {shapes[f'{n}.to_k_ip.weight']} vs {shapes[f'{n}.to_v_ip.weight']}"
                for n in range(1, indices[-1] + 1, 2) if shapes[f"{n}.to_k_ip.weight"] != shapes[f"{n}.to_v_ip.weight"]]
    if unpaired:
        raise ValueError(f"FreeCure: to_k_ip and to_v_ip shapes differ for layer(s) {unpaired[:6]}. {WHERE}")
    widths = sorted({s[1] for s in shapes.values()})
    if len(widths) > 1:
        raise ValueError(f"FreeCure: the ip_adapter weights take different in-widths {widths}; one adapter has a "
                         f"single cross-attention width. {WHERE}")
    proj_out = image_proj.get("proj_out.weight")
    if torch.is_tensor(proj_out) and proj_out.dim() == 2 and proj_out.shape[0] != widths[0]:
        raise ValueError(f"FreeCure: image_proj makes {proj_out.shape[0]}-wide tokens but the ip_adapter weights take "
                         f"{widths[0]}-wide ones: the two parts come from different files. {WHERE}")
    return len(expected) // 2, int(widths[0])


def validate_instantid_state_dict(image_proj: dict, ip_adapter: dict) -> None:
    """Raise ValueError (saying what the file is instead, and the fix) unless the two parts are an InstantID adapter."""
    check_adapter_keys(image_proj, ip_adapter)
    try:
        check_image_proj(image_proj)  # proj_out's width was matched against ip_adapter's above
    except ValueError as exc:
        raise ValueError(f"{exc} InstantID adapters go in ComfyUI/models/instantid/.") from None


def instantid_from_state_dict(state: dict, path: str | None = None) -> InstantIDWeights:
    """InstantIDWeights from a nested or flat state dict (validated; on CPU).

    The Resampler runs in float32; the adapter matrices keep their stored precision (fp16 halves the ~340 M
    parameters' RAM) and are only ever used in float32 for the few image tokens (instantid_tokens.layer_kv).
    """
    image_proj, ip_adapter = split_instantid_state_dict(state)
    validate_instantid_state_dict(image_proj, ip_adapter)
    layers = range(1, 2 * (len(ip_adapter) // 2), 2)
    keep = (torch.float32, torch.float16, torch.bfloat16)
    weight = lambda k: ip_adapter[k].detach().to("cpu", ip_adapter[k].dtype if ip_adapter[k].dtype in keep
                                                 else torch.float32)
    return InstantIDWeights(resampler=resampler_from_state_dict(image_proj),
                            to_k_ip=[weight(f"{n}.to_k_ip.weight") for n in layers],
                            to_v_ip=[weight(f"{n}.to_v_ip.weight") for n in layers],
                            path=path)


def _read(path: str) -> dict:
    lower = path.lower()
    if lower.endswith(".safetensors"):
        # own storage per tensor, so .bin and .safetensors of the same weights compute identically
        return {k: v.clone() for k, v in load_safetensors(path, "InstantID", f"re-download it. {WHERE}").items()}
    if not lower.endswith(TORCH_SUFFIXES):
        raise ValueError(f"FreeCure: {path}: InstantID adapters are .bin, .pt, .pth, .ckpt or .safetensors files. "
                         f"{WHERE}")
    try:
        return torch_load_weights(path)
    except Exception as exc:  # pickled objects (refused by weights_only), truncated or foreign files
        raise ValueError(
            f"FreeCure: refusing {path}: torch.load(weights_only=True) cannot read it as plain tensors "
            f"({refusal_reason(exc)}). Pickled Python objects are never unpickled; download the "
            f"original file again. {WHERE}") from None


def load_instantid(path: str) -> InstantIDWeights:
    """The InstantID adapter in `path` (.bin/.pt/.pth/.ckpt weights-only, or .safetensors), validated, on CPU."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FreeCure: InstantID adapter not found: {path}. {WHERE}")
    state = _read(path)
    try:
        return instantid_from_state_dict(state, path=path)
    except ValueError as exc:
        raise ValueError(f"{exc} (file: {path})") from None
