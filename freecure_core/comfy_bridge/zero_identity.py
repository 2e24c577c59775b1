"""The paper's foundation branch for identity adapters that live in cross-attention (attn2) replace patches.

FreeCure's FD is "the personalization model with a zero identity embedding" (arXiv 2411.15277, A.2.1). The cubiq packs
(ComfyUI_InstantID's attention patch, PuLID_ComfyUI, ComfyUI_IPAdapter_plus FaceID) already compute the adapter's
zero-identity tokens: their attn2 patches give the unconditional rows the tokens of a zero embedding passed through the
adapter (InstantID: Resampler(0) when noise is 0; PuLID: IDEncoder(0); FaceID: the projection of a zero embedding) and
pick cond or uncond tokens per row from ComfyUI's ``cond_or_uncond``. ``zero_identity_model`` clones model_pd and
wraps each of its attn2 replaces so that every row is handed to the adapter as an unconditional row: the same
weights and adapter, with the zero-identity tokens on every row, i.e. the paper's FD. Nothing else changes, so
lockstep still sees the same weights.
"""
from __future__ import annotations

from .checks import FreeCureConflict


class UnconditionalRows:
    """An attn2 replace that calls `patch` as if every row of the batch were an unconditional row."""

    def __init__(self, patch):
        self.patch = patch

    def __call__(self, q, k, v, extra_options):
        rows = extra_options.get("cond_or_uncond")
        if rows:
            extra_options = {**extra_options, "cond_or_uncond": [1] * len(rows)}
        return self.patch(q, k, v, extra_options)


def zero_identity_model(model_pd, is_flux: bool = False):
    """(model_fd, number of wrapped attn2 patches): a clone of model_pd whose identity adapter gets its own
    zero-identity tokens on every row. Refuses a MODEL without attn2 replaces (nothing to zero) and FLUX models."""
    if is_flux:
        raise FreeCureConflict(
            "FreeCure: Zero-ID Model: FLUX identity ports (PuLID-FLUX) do not use attn2 patches with zero-identity "
            "rows; use the FLUX MODEL going into the port's Apply node as model_fd (the identity term off).")
    to = model_pd.model_options.get("transformer_options", {})
    replaces = to.get("patches_replace", {})
    attn2 = replaces.get("attn2", {})
    if not attn2:
        raise FreeCureConflict(
            "FreeCure: Zero-ID Model: this MODEL has no cross-attention (attn2) patches, so there is no identity "
            "adapter to zero. Connect the MODEL output of the identity node (InstantID Patch Attention, Apply PuLID, "
            "IPAdapter FaceID), after every node that patches it.")
    model_fd = model_pd.clone()
    fd_to = dict(model_fd.model_options.get("transformer_options", {}))
    fd_replaces = dict(fd_to.get("patches_replace", {}))
    fd_replaces["attn2"] = {key: (p if isinstance(p, UnconditionalRows) else UnconditionalRows(p))
                            for key, p in fd_replaces.get("attn2", {}).items()}
    fd_to["patches_replace"] = fd_replaces
    model_fd.model_options["transformer_options"] = fd_to
    return model_fd, len(attn2)
