"""FreeCure identity-branch nodes (interop with peer packs). Declarations only."""
from __future__ import annotations

from ..freecure_core.comfy_bridge.flux import is_flux
from ..freecure_core.comfy_bridge.zero_identity import zero_identity_model
from ..freecure_core.identity.face_embeds import zero_face_embeds
from .spec import In, NodeSpec, Out, WithUI

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



def _zero_identity(model_pd):
    model_fd, n = zero_identity_model(model_pd, is_flux(model_pd))
    return WithUI((model_fd,), {"text": [f"{n} identity attention patches now get the adapter's zero-identity tokens "
                                         f"on every row (the paper's foundation branch)"]})


ZERO_IDENTITY_MODEL = NodeSpec(
    node_id="FreeCureZeroIdentityModel", display_name="FreeCure Zero-ID Model", category=CATEGORY,
    description="The paper's exact foundation branch for identity packs that patch cross-attention (cubiq's "
                "InstantID Patch Attention, Apply PuLID, IPAdapter FaceID): the same model and adapter, fed the "
                "adapter's own zero-identity tokens (what those packs give the negative rows) on every row. Use its "
                "output as model_fd instead of the MODEL before the identity node.",
    inputs=[In("MODEL", "model_pd", "The MODEL out of the identity pack's node (after every node that patches it). "
               "For InstantID set the patch's noise to 0, so the zero-identity tokens are exactly the zero face's.")],
    outputs=[Out("MODEL", "model_fd", "model_fd for FreeCure Foundation Sampler / FreeCure Sampler: same weights as "
                 "model_pd, so lockstep works.")],
    run=_zero_identity)

SPECS = [ZERO_FACE_EMBEDS, ZERO_IDENTITY_MODEL]
