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
                "first photo). As in the reference, both outputs start with the clean prompt (trigger removed, class "
                "word once) and its pooled output; from merge_start on, pd_conditioning has each photo's identity "
                "fused into its copy of the class word and fd_conditioning is that repeated-class-word prompt without "
                "the identity (both with its pooled output). Use one negative prompt for both, and SDXL with the "
                "PhotoMaker LoRA as the model of both branches.",
    inputs=[
        In("PHOTOMAKER", "photomaker", "PhotoMaker v1 model from ComfyUI's Load PhotoMaker node."),
        In("IMAGE", "image", "Reference photo(s) of the person, preprocessed like core PhotoMaker Encode. All photos "
           "are used: one copy of the class word per photo (as in PhotoMaker's reference pipeline)."),
        In("CLIP", "clip", "The SDXL checkpoint's CLIP (PhotoMaker v1 fuses 2048-wide SDXL text embeddings)."),
        In("STRING", "text", "Prompt with the trigger word 'photomaker' right after a plain class word, e.g. 'a photo "
           "of a woman photomaker with blonde hair'. The trigger is removed from the prompt (as in PhotoMaker's "
           "reference) and the identity goes into the class word's last token.",
           default="photograph of photomaker", multiline=True),
        In("FLOAT", "merge_start", "Where the identity comes in, as ComfyUI's conditioning percent (the same scale "
           "as ConditioningSetTimestepRange: percent p is the model timestep (1 - p) x 999, not a fraction of your "
           "steps). Before it both outputs are the clean prompt (trigger removed, class word once), like PhotoMaker's "
           "reference for its steps i <= start_merge_step; after it PD has the identity. The default 0.23 (timestep "
           "769) gives the reference's switch on its own schedule: DDIM, 50 steps (sampler ddim, scheduler "
           "ddim_uniform) runs steps 0-10 clean and fuses from step 11. Other schedules reach that timestep at "
           "another step: euler/normal 30 steps at step 7, karras 30 at step 8, normal 50 at step 12. "
           "0 = identity from the first step; 1 = never (PD equals FD).",
           default=bridge.MERGE_START, min=0.0, max=1.0, step=0.01),
    ],
    outputs=[
        Out("CONDITIONING", "pd_conditioning", "Personalised-branch positive: the clean prompt before merge_start, "
            "then the prompt with the identity fused in."),
        Out("CONDITIONING", "fd_conditioning", "Foundation-branch positive: the clean prompt before merge_start, then "
            "the same repeated-class-word prompt as PD without the identity."),
    ],
    run=bridge.encode_pair)

SPECS = [PHOTOMAKER_ENCODE_PAIR]
