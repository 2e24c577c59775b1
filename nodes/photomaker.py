"""FreeCure PhotoMaker node: the PD/FD conditioning pair from one PhotoMaker prompt. Declarations only;
the work is in freecure_core.comfy_bridge.photomaker."""
from __future__ import annotations

from ..freecure_core.comfy_bridge import photomaker as bridge
from .spec import In, NodeSpec, Out

CATEGORY = "FreeCure/identity"

PHOTOMAKER_ENCODE_PAIR = NodeSpec(
    node_id="FreeCurePhotoMakerEncodePair", display_name="FreeCure PhotoMaker Encode Pair", category=CATEGORY,
    description="PhotoMaker Encode for FreeCure, following PhotoMaker's reference pipeline: the trigger word "
                "'photomaker' is removed and the class word before it is repeated once per reference photo, so every "
                "photo counts (ComfyUI 0.3.75's core PhotoMaker Encode keeps the trigger tokens and uses only the "
                "first photo). pd_conditioning has each photo's identity fused into its copy of the class word; "
                "fd_conditioning is the same trigger-free encoding without the identity, for the foundation branch. "
                "Use one negative prompt for both, and SDXL with the PhotoMaker LoRA as the model of both branches.",
    inputs=[
        In("PHOTOMAKER", "photomaker", "PhotoMaker v1 model from ComfyUI's Load PhotoMaker node."),
        In("IMAGE", "image", "Reference photo(s) of the person, preprocessed like core PhotoMaker Encode. All photos "
           "are used: one copy of the class word per photo (as in PhotoMaker's reference pipeline)."),
        In("CLIP", "clip", "The SDXL checkpoint's CLIP (PhotoMaker v1 fuses 2048-wide SDXL text embeddings)."),
        In("STRING", "text", "Prompt with the trigger word 'photomaker' right after a plain class word, e.g. 'a photo "
           "of a woman photomaker with blonde hair'. The trigger is removed from the prompt (as in PhotoMaker's "
           "reference) and the identity goes into the class word's last token.",
           default="photograph of photomaker", multiline=True),
        In("FLOAT", "merge_start", "Fraction of the sampling (from the start) during which PD uses the plain text "
           "embedding before the identity is fused in, like PhotoMaker's start_merge_step (10 of 50 steps = 0.2). "
           "0 = identity from the first step; 1 = never (PD equals FD).",
           default=0.2, min=0.0, max=1.0, step=0.01),
    ],
    outputs=[
        Out("CONDITIONING", "pd_conditioning", "Personalised-branch positive: the prompt with the identity fused in "
            "(from merge_start on)."),
        Out("CONDITIONING", "fd_conditioning", "Foundation-branch positive: the same trigger-free prompt encoding "
            "(class word repeated per photo) without the identity."),
    ],
    run=bridge.encode_pair)

SPECS = [PHOTOMAKER_ENCODE_PAIR]
