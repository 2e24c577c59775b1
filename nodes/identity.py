"""FreeCure identity-branch nodes (interop with peer packs). Declarations only."""
from __future__ import annotations

from ..freecure_core.identity.face_embeds import zero_face_embeds
from .spec import In, NodeSpec, Out

CATEGORY = "FreeCure/identity"

ZERO_FACE_EMBEDS = NodeSpec(
    node_id="FreeCureZeroFaceEmbeds", display_name="FreeCure Zero Face Embeds", category=CATEGORY,
    description="Foundation branch for InstantID packs (cubiq's ComfyUI_InstantID): face embeds with the identity "
                "removed (the zero-face tokens), for the FD side's Apply InstantID ControlNet with the same keypoints.",
    inputs=[In("FACE_EMBEDS", "face_embeds", "FACE_EMBEDS from InstantID Attention Patch. Set its noise to 0 for the "
               "exact FreeCure foundation branch (noise > 0 makes the 'zero' tokens noisy).")],
    outputs=[Out("FACE_EMBEDS", "fd_face_embeds", "Zero-identity face embeds: connect to the FD Apply InstantID "
                 "ControlNet (same control net, keypoint image and strength as PD) to make fd_positive/fd_negative.")],
    run=lambda face_embeds: (zero_face_embeds(face_embeds),))

SPECS = [ZERO_FACE_EMBEDS]
