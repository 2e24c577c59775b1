"""FreeCure evaluation nodes: the papers' measurements on generated images. Declarations only; the work is in
freecure_core.eval and freecure_core.comfy_bridge.metrics."""
from __future__ import annotations

from ..freecure_core.comfy_bridge import metrics as bridge
from ..freecure_core.comfy_bridge import model_paths
from .spec import In, NodeSpec, Out, WithUI

CATEGORY = "FreeCure/evaluate"


def _lpips_backbones() -> list[str]:
    return ["none"] + [f for f in model_paths.lpips_choices() if "alexnet" in f.lower()]


CLIP_LOADER = NodeSpec(
    node_id="FreeCureCLIPScoreLoader", display_name="FreeCure CLIP Score Loader", category=CATEGORY,
    description="Loads a CLIP model for prompt consistency (CLIP-T) and attribute checks from a local Hugging Face "
                "folder in ComfyUI/models/clip_eval/ (nothing is downloaded).",
    inputs=[In("COMBO", "clip_folder", "A folder in ComfyUI/models/clip_eval/ with config.json, model.safetensors, "
               "vocab.json and merges.txt (e.g. openai/clip-vit-large-patch14).", options=model_paths.clip_eval_choices)],
    outputs=[Out("FREECURE_CLIP_SCORER", "clip_scorer", "For FreeCure Prompt Consistency and Attribute Accuracy.")],
    run=lambda clip_folder: (bridge.load_clip(clip_folder),))

LPIPS_LOADER = NodeSpec(
    node_id="FreeCureLPIPSLoader", display_name="FreeCure LPIPS Loader", category=CATEGORY,
    description="Loads LPIPS (AlexNet) for face diversity from ComfyUI/models/lpips/: a file joined with "
                "python -m freecure_core.eval.face_diversity, or lpips' alex.pth plus torchvision's AlexNet file.",
    inputs=[In("COMBO", "lpips_file", "Joined LPIPS .safetensors, or lpips' alex.pth (lin heads).",
               options=model_paths.lpips_choices),
            In("COMBO", "alexnet_file", "none for a joined file; else torchvision's alexnet-owt-7be5be79.pth.",
               options=_lpips_backbones, default="none"),
            In("INT", "size", "Face crops are resized to size x size before comparison.", default=128, min=32,
               max=1024)],
    outputs=[Out("FREECURE_LPIPS", "lpips", "For FreeCure Face Diversity.")],
    run=lambda lpips_file, alexnet_file, size: (bridge.load_lpips(lpips_file, alexnet_file, size),))


def _identity(face_analysis, reference, images):
    mean, _, text = bridge.identity_similarity(face_analysis, reference, images)
    return WithUI((mean, text), {"text": [text]})


IDENTITY = NodeSpec(
    node_id="FreeCureIdentitySimilarity", display_name="FreeCure Identity Similarity", category=CATEGORY,
    description="Identity fidelity (IF): ArcFace cosine x 100 between each image's largest face and the reference "
                "face(s); an image without a face scores 0 (the text says how many had one).",
    inputs=[In("FREECURE_FACE_ANALYSIS", "face_analysis", "From FreeCure InstantID Face Analysis (antelopev2)."),
            In("IMAGE", "reference", "The identity photo(s); several are averaged."),
            In("IMAGE", "images", "The generated images.")],
    outputs=[Out("FLOAT", "identity_similarity", "Mean ArcFace cosine x 100."),
             Out("STRING", "report", "Per-image values.")],
    run=_identity)


def _consistency(clip_scorer, images, prompt):
    mean, _, text = bridge.prompt_consistency(clip_scorer, images, prompt)
    return WithUI((mean, text), {"text": [text]})


CONSISTENCY = NodeSpec(
    node_id="FreeCurePromptConsistency", display_name="FreeCure Prompt Consistency", category=CATEGORY,
    description="Prompt consistency (PC): CLIP-T = 100 x max(cos(image, prompt), 0), as the papers report it.",
    inputs=[In("FREECURE_CLIP_SCORER", "clip_scorer", "From FreeCure CLIP Score Loader."),
            In("IMAGE", "images", "The generated images."),
            In("STRING", "prompt", "The prompt the images were made from.", default="", multiline=True)],
    outputs=[Out("FLOAT", "clip_t", "Mean CLIP-T."), Out("STRING", "report", "Per-image values.")],
    run=_consistency)


def _attributes(clip_scorer, images, prompt, subject, face_parse=None):
    acc, text = bridge.attribute_accuracy(clip_scorer, images, prompt, subject, face_parse)
    return WithUI((acc, text), {"text": [text]})


ATTRIBUTES = NodeSpec(
    node_id="FreeCureAttributeAccuracy", display_name="FreeCure Attribute Accuracy", category=CATEGORY,
    description="Does each image show the face attributes the prompt asked for (hair, glasses, earrings ...)? "
                "CLIP zero-shot per attribute ('a photo of <subject> with <the prompt's words>' vs 'a photo of "
                "<subject>'), and with a face parse of the same images, whether the attribute's region was parsed.",
    inputs=[In("FREECURE_CLIP_SCORER", "clip_scorer", "From FreeCure CLIP Score Loader."),
            In("IMAGE", "images", "The generated images."),
            In("STRING", "prompt", "The prompt the images were made from.", default="", multiline=True),
            In("STRING", "subject", "Who is in the image, for the zero-shot labels.", default="a person"),
            In("FACE_PARSE", "face_parse", "Optional: FreeCure Face Parse of the same images.", optional=True)],
    outputs=[Out("FLOAT", "accuracy", "Fraction of attribute judgements that say 'shown' (0..1)."),
             Out("STRING", "report", "Per-image, per-attribute values.")],
    run=_attributes)


def _diversity(lpips, face_analysis, images):
    value, text = bridge.face_diversity_of(lpips, face_analysis, images)
    return WithUI((value, text), {"text": [text]})


DIVERSITY = NodeSpec(
    node_id="FreeCureFaceDiversity", display_name="FreeCure Face Diversity", category=CATEGORY,
    description="Face diversity (Face Div.): mean LPIPS x 100 between the largest face crops of a batch (e.g. one "
                "prompt over several seeds); higher = the faces vary more instead of copying the reference.",
    inputs=[In("FREECURE_LPIPS", "lpips", "From FreeCure LPIPS Loader."),
            In("FREECURE_FACE_ANALYSIS", "face_analysis", "From FreeCure InstantID Face Analysis (finds the faces)."),
            In("IMAGE", "images", "At least two generated images.")],
    outputs=[Out("FLOAT", "face_diversity", "Mean pairwise LPIPS x 100 (NaN with fewer than two faces)."),
             Out("STRING", "report", "How many faces were compared.")],
    run=_diversity)

SPECS = [CLIP_LOADER, LPIPS_LOADER, IDENTITY, CONSISTENCY, ATTRIBUTES, DIVERSITY]
