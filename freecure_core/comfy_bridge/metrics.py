"""ComfyUI side of the evaluation nodes: models from ComfyUI's folders, IMAGE batches to numpy, progress bars and
interrupts around freecure_core.eval."""
from __future__ import annotations

import math

import comfy.model_management
import comfy.utils
import numpy as np
import torch

from ..eval import attribute_accuracy as aa
from ..eval.face_diversity import LpipsScorer, face_diversity
from ..eval.identity import IdentityScorer, cosine, crop_box
from . import model_paths


def to_numpy(images: torch.Tensor, what: str = "images") -> list[np.ndarray]:
    """RGB uint8 arrays (H, W, 3) from an IMAGE batch (B, H, W, 3) in 0..1."""
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[-1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"FreeCure: {what} must be an IMAGE batch (B, H, W, 3), got {shape}")
    arr = (images.detach().float().cpu().clamp(0, 1).numpy() * np.float32(255.0)).astype(np.uint8)  # as SaveImage
    return [np.ascontiguousarray(a) for a in arr]


def _each(items, fn):
    """[fn(x) for x in items] with a ComfyUI progress bar, stopping when the user interrupts."""
    bar, out = comfy.utils.ProgressBar(len(items)), []
    for x in items:
        comfy.model_management.throw_exception_if_processing_interrupted()
        out.append(fn(x))
        bar.update(1)
    return out


def _fmt(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def load_clip(folder_name: str):
    """A ClipScorer for models/clip_eval/<folder_name> on ComfyUI's torch device."""
    from ..eval.clip_score import ClipScorer
    return ClipScorer.load(model_paths.clip_eval_path(folder_name), device=comfy.model_management.get_torch_device())


def load_lpips(lpips_file: str, backbone_file: str = "none", size: int = 128) -> LpipsScorer:
    """An LpipsScorer from models/lpips (a joined file, or lpips' alex.pth plus torchvision's AlexNet file)."""
    backbone = None if backbone_file in ("", "none", None) else model_paths.lpips_path(backbone_file)
    return LpipsScorer.load(model_paths.lpips_path(lpips_file), backbone, size=size)


def identity_similarity(face_analysis, reference: torch.Tensor, images: torch.Tensor) -> tuple[float, list, str]:
    """(mean IF × 100 with faceless images counted as 0, per-image cosines × 100 or None, report)."""
    scorer = IdentityScorer(face_analysis)
    ref = scorer.reference_embedding(to_numpy(reference, "reference"))
    embs = _each(to_numpy(images), scorer.embed)
    values = [None if e is None else 100.0 * cosine(ref, e) for e in embs]
    mean = float(np.mean([0.0 if v is None else v for v in values]))
    found = sum(v is not None for v in values)
    text = (f"identity similarity (ArcFace cosine x 100): mean {mean:.2f} over {len(values)} image(s), face found in "
            f"{found}; per image: " + ", ".join(_fmt(v) for v in values))
    return mean, values, text


def prompt_consistency(clip, images: torch.Tensor, prompt: str) -> tuple[float, list, str]:
    """(mean CLIP-T, per-image CLIP-T, report)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("FreeCure: Prompt Consistency needs the prompt the images were made from")
    arr = to_numpy(images)
    scores = [float(s) for s in _each(arr, lambda a: clip.clip_t([a], [prompt])[0])]
    mean = float(np.mean(scores))
    text = (f"CLIP-T ({clip.name}): mean {mean:.2f} over {len(scores)} image(s); per image: "
            + ", ".join(f"{s:.2f}" for s in scores))
    return mean, scores, text


def attribute_accuracy(clip, images: torch.Tensor, prompt: str, subject: str = "a person",
                       face_parse=None) -> tuple[float, str]:
    """(fraction of requested attributes judged shown over all images, report): CLIP zero-shot per attribute, and
    with a FACE_PARSE of the same images also whether each attribute's region was parsed."""
    arr = to_numpy(images)
    requested = [a for a, _ in aa.requested_attributes(prompt)]
    if not requested:
        return float("nan"), "attribute accuracy: the prompt asks for no face attribute the parser knows"
    shots = _each(arr, lambda a: aa.attribute_zero_shot(clip, a, prompt, subject))
    judgements = [p for s in shots for p in s.values()]
    lines = [f"attribute accuracy (CLIP zero-shot, {clip.name}): {100 * aa.accuracy(judgements):.0f}% of "
             f"{len(judgements)} judgements; requested: {', '.join(requested)}"]
    for i, s in enumerate(shots, start=1):
        lines.append(f"image {i}: " + ", ".join(f"{a} {p:.2f}" for a, p in s.items()))
    if face_parse is not None:
        labels = face_parse.labels
        if labels.shape[0] != len(arr):
            raise ValueError(f"FreeCure: face_parse has {labels.shape[0]} label maps for {len(arr)} images; parse "
                             "the same images")
        present = [aa.attribute_presence(prompt, labels[i], face_parse.schema) for i in range(len(arr))]
        parsed = [v for p in present for v in p.values()]
        lines.append(f"parsed regions present: {100 * aa.accuracy(parsed):.0f}% of {len(parsed)} ("
                     + "; ".join(", ".join(f"{a} {'yes' if v else 'no'}" for a, v in p.items()) for p in present) + ")")
        judgements = judgements + parsed
    return aa.accuracy(judgements), "\n".join(lines)


def face_diversity_of(lpips: LpipsScorer, face_analysis, images: torch.Tensor, margin: float = 0.1) -> tuple[float, str]:
    """(mean pairwise LPIPS × 100 between the images' largest face crops, report)."""
    scorer = IdentityScorer(face_analysis)
    faces = _each(to_numpy(images), lambda a: (a, scorer.largest_face(a)))
    crops = [crop_box(a, f.box, margin) for a, f in faces if f is not None]
    value = 100.0 * face_diversity(lpips, crops)
    text = (f"face diversity (LPIPS x 100 between face crops): {_fmt(value)} from {len(crops)} face(s) in "
            f"{len(faces)} image(s)" + ("" if len(crops) >= 2 else "; needs at least two faces"))
    return value, text
