"""TEST-ONLY ComfyUI custom node pack for tests/e2e/test_peer_pulid_flux.py (never shipped, never installed by users).

The pinned lldacing/ComfyUI_PuLID_Flux_ll snapshot (ba90657fe6ff, 2025-04-08) registers OUTER_SAMPLE wrappers whose
signature ends at ``seed``; ComfyUI passes ``latent_shapes=`` to OUTER_SAMPLE wrappers since about 0.3.67 (ComfyUI
commit 1bcda6df), so every sampling run on its MODEL fails with ``TypeError: pulid_outer_sample_wrappers_with_override()
got an unexpected keyword argument 'latent_shapes'`` (upstream issues #86/#88, fixed upstream by accepting and
forwarding ``latent_shapes``). The test records that failure, then inserts this pack's node after Apply PuLID Flux:

``FreeCureE2EOuterSampleLatentShapes`` (MODEL -> MODEL) clones the model and wraps each of its OUTER_SAMPLE wrappers
under one key (the port's "PULID_wrappers") in an adapter that takes ``latent_shapes`` and hands it on to the next
executor, around the wrapper's own call. The port's wrappers, dit patches and forward_orig run unchanged; only the
argument the pinned snapshot predates is passed around them. Nothing of the port is copied here.
"""
from __future__ import annotations

import functools


class _ForwardLatentShapes:
    """The next OUTER_SAMPLE executor, called with ``latent_shapes`` added (the wrapper itself drops it)."""

    def __init__(self, executor, latent_shapes):
        self._executor, self._latent_shapes = executor, latent_shapes
        self.class_obj = executor.class_obj

    def __call__(self, *args, **kwargs):
        if self._latent_shapes is not None and "latent_shapes" not in kwargs:
            kwargs["latent_shapes"] = self._latent_shapes
        return self._executor(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._executor, name)


def _adapt(wrapper):
    @functools.wraps(wrapper)
    def outer_sample(executor, *args, latent_shapes=None, **kwargs):
        return wrapper(_ForwardLatentShapes(executor, latent_shapes), *args, **kwargs)
    outer_sample.freecure_e2e_adapted = True
    return outer_sample


class FreeCureE2EOuterSampleLatentShapes:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "key": ("STRING", {"default": "PULID_wrappers"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "testing/freecure_e2e"

    def run(self, model, key):
        import comfy.patcher_extension
        kind = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
        wrappers = list(model.get_wrappers(kind, key))
        if not wrappers:
            raise ValueError(f"no OUTER_SAMPLE wrappers under {key!r} on this MODEL (was the port's Apply skipped?)")
        model = model.clone()
        model.remove_wrappers_with_key(kind, key)
        for w in wrappers:
            model.add_wrapper_with_key(kind, key, w if getattr(w, "freecure_e2e_adapted", False) else _adapt(w))
        return (model,)


NODE_CLASS_MAPPINGS = {"FreeCureE2EOuterSampleLatentShapes": FreeCureE2EOuterSampleLatentShapes}
NODE_DISPLAY_NAME_MAPPINGS = {"FreeCureE2EOuterSampleLatentShapes": "FreeCure E2E OUTER_SAMPLE latent_shapes adapter "
                                                                    "(test only)"}
