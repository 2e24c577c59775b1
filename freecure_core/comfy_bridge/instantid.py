"""InstantID on ComfyUI for a FreeCure pair: image-token attention on SDXL's attn2 layers, IdentityNet on the conds.

PD = the face tokens; FD = the zero-face tokens (Resampler(0)) for both the UNet image-token attention and the
IdentityNet context, with the same keypoint image and strengths, exactly as the FreeCure reference defines
InstantID's foundation branch. Both MODELs are clones of the incoming one that differ only in attn2 replace
patches (no weights change), so lockstep mode can run them through one loaded model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..identity.instantid_tokens import IdentityTokens, combine_embeddings, identity_tokens, layer_kv
from ..identity.kps_image import draw_kps
from ..fasa.layers import Site
from .checks import FreeCureConflict, qualified_name
from .patches import ROW_BY_INDEX, plain_attention
from .probe import attn2_module, model_family, probe_sites

log = logging.getLogger("FreeCure")

_BLOCK_ORDER = {"input": 0, "output": 1, "middle": 2}


@dataclass(frozen=True)
class InstantIDSettings:
    """What a user of InstantID sets: adapter weight, IdentityNet strength, step window, uncond noise, combining."""
    ip_weight: float = 0.8
    cn_strength: float = 0.8
    start_at: float = 0.0
    end_at: float = 1.0
    noise: float = 0.0
    combine_embeds: str = "average"

    def check(self) -> None:
        if not 0.0 <= self.start_at <= self.end_at <= 1.0:
            raise ValueError(f"FreeCure: InstantID start_at ({self.start_at}) must be <= end_at ({self.end_at}), "
                             "both within 0..1")


def adapter_sites(inner_model, device) -> list[Site]:
    """The UNet's cross-attention sites in InstantID adapter order: input blocks, output blocks, then middle.

    This is diffusers' attention-processor order (down, up, mid blocks), so site i uses adapter pair 2i+1.
    """
    return sorted(probe_sites(inner_model, device), key=lambda s: (_BLOCK_ORDER[s.block], s.block_id, s.index))


def check_adapter_fits(weights, inner_model, sites: list[Site]) -> None:
    """Raise ValueError unless the adapter has one to_k_ip/to_v_ip pair per attn2 layer with matching widths."""
    family = model_family(inner_model)
    if weights.num_layers != len(sites):
        hint = " InstantID is made for SDXL; use an SDXL checkpoint." if family != "sdxl" else ""
        raise ValueError(f"FreeCure: this InstantID adapter has {weights.num_layers} attention layers but the "
                         f"model has {len(sites)} ({family}).{hint}")
    unet = inner_model.diffusion_model
    for i, site in enumerate(sites):
        attn2 = attn2_module(unet, site)
        if attn2 is None:
            raise ValueError(f"FreeCure: {site.label()} has no cross-attention, so InstantID cannot patch it")
        hidden, context = attn2.to_k.weight.shape
        w = weights.to_k_ip[i]
        if tuple(w.shape) != (hidden, context):
            raise ValueError(f"FreeCure: InstantID adapter layer {2 * i + 1} is {tuple(w.shape)} (hidden, context) "
                             f"but {site.label()} of this model is ({hidden}, {context}); the adapter was made for "
                             f"another model (InstantID needs SDXL, 2048-wide text context)")


class ImageTokenAttention:
    """attn2 replace: text attention plus `weight` x attention over precomputed image-token keys/values.

    kv maps "cond"/"uncond" to (k, v) of shape (1, T, hidden); each chunk of rows gets the pair of its
    cond_or_uncond index. Outside the sigma window (or with weight 0) it is exactly ComfyUI's attention.
    """

    def __init__(self, kv: dict, weight: float, sigma_start: float, sigma_end: float):
        self.kv, self.weight = kv, float(weight)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self._cast: dict = {}

    def _get(self, row: str, like: torch.Tensor):
        key = (row, like.device, like.dtype)
        if key not in self._cast:
            k, v = self.kv[row]
            self._cast[key] = (k.to(like.device, like.dtype), v.to(like.device, like.dtype))
        return self._cast[key]

    def active(self, extra_options) -> bool:
        if self.weight == 0.0:
            return False
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True
        sigma = float(sigmas.detach().flatten()[0])
        return self.sigma_end <= sigma <= self.sigma_start

    def __call__(self, q, k, v, extra_options):
        out = plain_attention(q, k, v, extra_options)
        if not self.active(extra_options):
            return out
        cou = extra_options.get("cond_or_uncond") or [0]
        rows = q.shape[0] // len(cou)
        ks, vs = [], []
        for c in cou:
            ki, vi = self._get(ROW_BY_INDEX.get(c, "uncond"), q)
            ks.append(ki.expand(rows, -1, -1))
            vs.append(vi.expand(rows, -1, -1))
        ip = plain_attention(q, torch.cat(ks), torch.cat(vs), extra_options)
        return out + ip * self.weight


def _check_no_attn2_replaces(model, sites: list[Site]) -> None:
    replaces = model.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for site in sites:
        for key in (site.key, site.key[:2]):
            if key in replaces:
                raise FreeCureConflict(
                    f"FreeCure: this MODEL already has a cross-attention (attn2) replace on {key} from "
                    f"{qualified_name(replaces[key])} (another InstantID or IP-Adapter node?). FreeCure InstantID Pair "
                    f"applies InstantID itself: connect the checkpoint's MODEL (after LoRAs) instead.")


def patched_model(model, weights, sites: list[Site], cond_tokens, uncond_tokens, settings: InstantIDSettings):
    """A clone of `model` with one ImageTokenAttention per attn2 site (cond rows: cond_tokens)."""
    ms = model.get_model_object("model_sampling")
    sigma_start, sigma_end = ms.percent_to_sigma(settings.start_at), ms.percent_to_sigma(settings.end_at)
    out = model.clone()
    for i, site in enumerate(sites):
        kv = {"cond": layer_kv(weights.to_k_ip[i], weights.to_v_ip[i], cond_tokens),
              "uncond": layer_kv(weights.to_k_ip[i], weights.to_v_ip[i], uncond_tokens)}
        patch = ImageTokenAttention(kv, settings.ip_weight, sigma_start, sigma_end)
        out.set_model_attn2_replace(patch, site.block, site.block_id, site.index)
    return out


def with_identitynet(conditioning, control_net, hint: torch.Tensor, tokens: torch.Tensor,
                     settings: InstantIDSettings):
    """New conditioning with the IdentityNet ControlNet added (context = tokens), like Apply ControlNet (Advanced).

    hint is (1, 3, H, W) in 0..1. Nothing incoming is modified: each entry gets a copied dict and its own
    ControlNet copy chained after any control already there.
    """
    out = []
    for entry in conditioning:
        d = dict(entry[1])
        c_net = control_net.copy().set_cond_hint(hint, settings.cn_strength, (settings.start_at, settings.end_at))
        prev = d.get("control")
        if prev is not None:
            c_net.set_previous_controlnet(prev)
        d["control"] = c_net
        d["control_apply_to_uncond"] = False
        d["cross_attn_controlnet"] = tokens.clone()
        out.append([entry[0], d])
    return out


def keypoint_image(face_analysis, image_kps_rgb: np.ndarray | None, reference_kps: np.ndarray,
                   reference_hw: tuple[int, int]) -> np.ndarray:
    """The IdentityNet condition: 5 keypoints drawn on a black image the size of their source photo.

    With a separate pose image, its largest face gives the keypoints (a clear error if it has none).
    """
    if image_kps_rgb is None:
        h, w = reference_hw
        return draw_kps(w, h, reference_kps)
    faces = face_analysis.analyze(image_kps_rgb)
    if not faces:
        raise ValueError("FreeCure: no face found in image_kps; use a pose photo with a clearly visible face, "
                         "or disconnect image_kps to take the pose from the reference")
    h, w = image_kps_rgb.shape[:2]
    return draw_kps(w, h, faces[0].kps)


def to_uint8(images: torch.Tensor) -> list[np.ndarray]:
    """ComfyUI IMAGE (B, H, W, 3) floats in 0..1 -> RGB uint8 arrays, truncating as ComfyUI's SaveImage and the
    InstantID/PuLID packs do (so the same IMAGE gives the peers' pixels, hence their face embeddings)."""
    if images.ndim != 4 or images.shape[-1] < 3:
        raise ValueError(f"FreeCure: expected an IMAGE (B, H, W, 3), got {tuple(images.shape)}")
    arr = (images[..., :3].detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8).numpy()
    return [np.ascontiguousarray(a) for a in arr]


def instantid_pair(model, positive, negative, weights, face_analysis, control_net, image: torch.Tensor,
                   settings: InstantIDSettings, image_kps: torch.Tensor | None = None):
    """(pd_model, pd_positive, pd_negative, fd_model, fd_positive, fd_negative, kps IMAGE, info text).

    PD: face tokens in the UNet and the IdentityNet; FD: zero-face tokens in both, same keypoints and strengths;
    negatives of both use the uncond tokens. The incoming MODEL and CONDITIONING are cloned, never modified.
    """
    settings.check()
    if control_net is None or not hasattr(control_net, "set_cond_hint"):
        raise ValueError("FreeCure: control_net must be the InstantID IdentityNet from Load ControlNet Model "
                         "(ComfyUI/models/controlnet/)")
    inner = model.model
    device = model.load_device
    sites = adapter_sites(inner, device)
    check_adapter_fits(weights, inner, sites)
    _check_no_attn2_replaces(model, sites)

    photos = to_uint8(image)
    _mean, reference_kps, faces = face_analysis.embed_faces(photos)
    per_photo = torch.from_numpy(np.stack([f.embedding for f in faces]).astype(np.float32))
    if per_photo.shape[-1] != weights.embedding_dim:
        raise ValueError(f"FreeCure: the face recognizer gives {per_photo.shape[-1]}-d embeddings but the InstantID "
                         f"adapter expects {weights.embedding_dim}-d (antelopev2's glintr100.onnx)")
    combined = combine_embeddings(per_photo, settings.combine_embeds)
    tokens: IdentityTokens = identity_tokens(weights, combined, settings.noise)

    pose = to_uint8(image_kps)[0] if image_kps is not None else None
    kps_rgb = keypoint_image(face_analysis, pose, reference_kps, photos[0].shape[:2])
    hint = torch.from_numpy(kps_rgb).float().div(255.0).permute(2, 0, 1).unsqueeze(0)

    pd_model = patched_model(model, weights, sites, tokens.face, tokens.uncond, settings)
    fd_model = patched_model(model, weights, sites, tokens.zero, tokens.uncond, settings)
    pd_positive = with_identitynet(positive, control_net, hint, tokens.face, settings)
    pd_negative = with_identitynet(negative, control_net, hint, tokens.uncond, settings)
    fd_positive = with_identitynet(positive, control_net, hint, tokens.zero, settings)
    fd_negative = with_identitynet(negative, control_net, hint, tokens.uncond, settings)
    info = (f"InstantID pair: {len(photos)} reference photo(s), {len(sites)} attention layers, "
            f"{tokens.face.shape[1]} image tokens; {face_analysis.describe()}")
    log.info("FreeCure: %s", info)
    return (pd_model, pd_positive, pd_negative, fd_model, fd_positive, fd_negative,
            torch.from_numpy(kps_rgb).float().div(255.0).unsqueeze(0), info)
