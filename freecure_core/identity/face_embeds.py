"""FD conditioning for InstantID through peer packs' FACE_EMBEDS (cubiq's ComfyUI_InstantID and forks).

Those packs pass image tokens as a dict {"cond": Resampler(face embedding), "uncond": Resampler(zeros)} and
their ControlNet node puts "cond" into the positive conditioning's IdentityNet context. The FreeCure
reference defines InstantID's FD as the zero face embedding through the same Resampler, with the same
keypoints: i.e. "uncond" everywhere. (With the pack's `noise` option above 0, "uncond" is Resampler(noise),
not Resampler(0); set noise to 0 for the exact reference FD.) Duck-typed: no import of the pack's code.
"""
from __future__ import annotations

import torch


def zero_face_embeds(face_embeds) -> dict:
    """A new FACE_EMBEDS dict whose "cond" tokens are the "uncond" (zero-identity) tokens; other keys kept."""
    if not isinstance(face_embeds, dict) or not all(torch.is_tensor(face_embeds.get(k)) for k in ("cond", "uncond")):
        got = sorted(face_embeds) if isinstance(face_embeds, dict) else type(face_embeds).__name__
        raise ValueError("FreeCure: expected FACE_EMBEDS from an InstantID attention-patch node (a dict with 'cond' "
                         f"and 'uncond' tensors); got {got}")
    cond, uncond = face_embeds["cond"], face_embeds["uncond"]
    if cond.shape[-2:] != uncond.shape[-2:]:
        raise ValueError(f"FreeCure: FACE_EMBEDS 'cond' {tuple(cond.shape)} and 'uncond' {tuple(uncond.shape)} "
                         "tokens differ in shape")
    out = dict(face_embeds)
    out["cond"] = uncond.clone().expand_as(cond).clone() if uncond.shape != cond.shape else uncond.clone()
    out["uncond"] = uncond.clone()
    return out
