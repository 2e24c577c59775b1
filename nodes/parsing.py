"""FreeCure stage-2 nodes: face-parser loader, face parsing, attribute masks, SAM refinement.
Declarations only; the work is in freecure_core.parsing and freecure_core.comfy_bridge.face_parsing."""
from __future__ import annotations

import logging

from ..freecure_core.attributes import ALL_ATTRIBUTES
from ..freecure_core.comfy_bridge import face_parsing as bridge
from ..freecure_core.comfy_bridge import model_paths
from ..freecure_core.parsing import pipeline
from .spec import In, NodeSpec, Out, WithUI

CATEGORY = "FreeCure/parsing"
log = logging.getLogger("FreeCure")


# ------------------------------------------------------------------------------------------ loader
def _load(parser, face_detector, device):
    return (bridge.load_face_parser(parser, face_detector, device),)


PARSER_LOADER = NodeSpec(
    node_id="FreeCureFaceParserLoader", display_name="FreeCure Face Parser Loader", category=CATEGORY,
    description="Loads the BiSeNet face parser (CelebAMask-HQ, 19 classes) and an insightface face detector.",
    inputs=[
        In("COMBO", "parser", "BiSeNet weights from ComfyUI/models/face_parsing (79999_iter.pth or its .safetensors), "
           "or parsing_bisenet.pth from models/facedetection.", options=model_paths.parser_choices),
        In("COMBO", "face_detector", "Face detector from ComfyUI/models/insightface/models/<name>/ used to parse a crop "
           "around each face (any aspect ratio, small faces). auto = antelopev2 or buffalo_l if installed, else whole "
           "images; none = always whole images.", options=list(bridge.DETECTOR_CHOICES), default="auto"),
        In("COMBO", "device", "auto = ComfyUI's device (GPU when available).", options=list(bridge.DEVICE_CHOICES),
           default="auto"),
    ],
    outputs=[Out("FACE_PARSER", "face_parser", "The loaded parser (and detector).")],
    run=_load)


# ------------------------------------------------------------------------------------------ parse
def _parse(face_parser, image, mode, crop_margin):
    parse = bridge.parse(face_parser, image, mode, crop_margin)
    return parse, pipeline.preview(parse)


FACE_PARSE = NodeSpec(
    node_id="FreeCureFaceParse", display_name="FreeCure Face Parse", category=CATEGORY,
    description="Parses faces into labelled regions (hair, eyes, glasses, ...) at the image's full resolution.",
    inputs=[
        In("FACE_PARSER", "face_parser", "From FreeCure Face Parser Loader."),
        In("IMAGE", "image", "The foundation image(s), e.g. VAE Decode of FreeCure Foundation Sampler's latent."),
        In("COMBO", "mode", "face crop = parse a square crop around each detected face and paste it back (falls back "
           "to the whole image when no face or no detector); whole image = squash the frame to 512² like the "
           "FreeCure code.", options=list(pipeline.MODES), default="face crop"),
        In("FLOAT", "crop_margin", "Extra space around the detected face box, as a fraction of its size, so hair and "
           "hats are inside the crop.", default=0.5, min=0.0, max=2.0, step=0.05),
    ],
    outputs=[Out("FACE_PARSE", "face_parse", "Label maps for FreeCure Attribute Mask."),
             Out("IMAGE", "preview", "Colour-coded label map.")],
    run=_parse)


# ------------------------------------------------------------------------------------------ attribute mask
def _attribute_mask(face_parse, prompt, attributes, grow, feather, image=None):
    if not isinstance(face_parse, pipeline.FaceParse):
        raise ValueError("FreeCure: face_parse must come from FreeCure Face Parse")
    chosen, text = pipeline.choose_attributes(prompt, attributes)
    mask = pipeline.attribute_mask(face_parse, chosen, grow, feather)
    if not bool((mask > 0).any()):
        text += (" - WARNING: the mask is empty" + ("" if chosen else " (no attribute chosen)") +
                 "; FreeCure will sample without FASA")
        log.warning("FreeCure: %s", text)
    return WithUI((mask, pipeline.preview(face_parse, image, mask), text), {"text": [text]})


ATTRIBUTE_MASK = NodeSpec(
    node_id="FreeCureAttributeMask", display_name="FreeCure Attribute Mask", category=CATEGORY,
    description="The prompt's attributes (hair, eyes, glasses, earrings, hat, ...) as a MASK on the foundation image.",
    inputs=[
        In("FACE_PARSE", "face_parse", "From FreeCure Face Parse."),
        In("STRING", "prompt", "The generation prompt; attributes are read from it with synonyms and plurals "
           "('curly' -> hair, 'sunglasses' -> glasses; 'chair' is not hair; 'no glasses' is ignored).",
           default="", multiline=True),
        In("STRING", "attributes", "Optional manual list that overrides the prompt, comma separated, from: "
           + ", ".join(ALL_ATTRIBUTES) + ".", default=""),
        In("INT", "grow", "Grow (positive) or shrink (negative) the mask by this many pixels.", default=0, min=-256,
           max=256),
        In("FLOAT", "feather", "Soften the mask edge over about this many pixels (0 = hard edge, as the FreeCure "
           "code). FASA reads the soft values as weights (mask_resample nearest): a foundation feature at mask value "
           "m counts m x e^omega, fading out at the edge.", default=0.0, min=0.0, max=256.0, step=0.5),
        In("IMAGE", "image", "Optional: the parsed image, to preview the mask over it.", optional=True),
    ],
    outputs=[Out("MASK", "mask", "Attribute mask for FreeCure FASA Config."),
             Out("IMAGE", "preview", "The mask over the image (or over the label map)."),
             Out("STRING", "info", "What was understood, e.g. \"from prompt: hair ('curly'), glasses "
                 "('sunglasses')\", with a warning when the mask is empty.")],
    run=_attribute_mask)


# ------------------------------------------------------------------------------------------ SAM refine
def _numbers(text: str, what: str) -> list[list[float]]:
    groups = [g for g in text.replace("\n", ";").split(";") if g.strip()]
    try:
        return [[float(x) for x in g.replace(" ", ",").split(",") if x] for g in groups]
    except ValueError:
        raise ValueError(f"FreeCure: cannot read {what} {text!r}") from None


def _sam_refine(image, sam_model, combine, device, region=None, box="", points=""):
    boxes = _numbers(box, "box 'x0,y0,x1,y1'")  # the inputs first: no model is loaded for a prompt that fails
    pts = _numbers(points, "points 'x,y,label; x,y,label'")
    if any(len(b) != 4 for b in boxes) or any(len(p) not in (2, 3) for p in pts):
        raise ValueError("FreeCure: write box as 'x0,y0,x1,y1' and points as 'x,y,1; x,y,0' (1 = on the object)")
    if region is None and not boxes and not pts:
        raise ValueError("FreeCure: give SAM something to segment: a region mask to refine, a box or points")
    pipeline.check_sam_inputs(image, region)
    refiner = bridge.load_sam(sam_model, device)
    return (bridge.sam_refine(refiner, image, region, boxes[0] if boxes else None, pts, combine),)


SAM_REFINE = NodeSpec(
    node_id="FreeCureSAMRefine", display_name="FreeCure SAM Refine", category=CATEGORY,
    description="Segment Anything: sharpen a parsed region's edges (box prompt from its bounding box), or segment "
                "an object the face parser has no class for (face mask, headphones) from a box or points.",
    inputs=[
        In("IMAGE", "image", "The foundation image(s)."),
        In("COMBO", "sam_model", "SAM checkpoint from ComfyUI/models/sams (sam_vit_b_01ec64.pth, ...). Needs the "
           "segment-anything package.", options=model_paths.sam_choices),
        In("COMBO", "combine", "How the SAM result meets the region mask: replace it, union, or intersect.",
           options=list(pipeline.SAM_COMBINE), default="replace"),
        In("COMBO", "device", "auto = ComfyUI's device.", options=list(bridge.DEVICE_CHOICES), default="auto"),
        In("MASK", "region", "Optional region to refine, e.g. FreeCure Attribute Mask (its bounding box is the SAM "
           "prompt).", optional=True),
        In("STRING", "box", "Optional box 'x0,y0,x1,y1' in pixels.", default="", optional=True),
        In("STRING", "points", "Optional points 'x,y,1; x,y,0' in pixels (1 = on the object, 0 = not).", default="",
           optional=True),
    ],
    outputs=[Out("MASK", "mask", "The refined mask.")],
    run=_sam_refine)

SPECS = [PARSER_LOADER, FACE_PARSE, ATTRIBUTE_MASK, SAM_REFINE]
