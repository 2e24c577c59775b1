"""Refuse setups FreeCure cannot run correctly, with a message that names the fix."""
from __future__ import annotations

from ..fasa.layers import Site


class FreeCureConflict(ValueError):
    """Another patch or wrapper on the MODEL would break or silently change FASA."""


def qualified_name(obj) -> str:
    """"module.qualname" of a function, bound method or object (its class), to name what patched a model."""
    fn = getattr(obj, "__func__", obj)
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{mod}.{qual}"


def check_attn1_conflicts(model_patcher, sites: list[Site], what: str) -> None:
    """Raise FreeCureConflict if the MODEL already has an attn1 replace on a FASA site."""
    replaces = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn1", {})
    for site in sites:
        for key in (site.key, site.key[:2]):
            if key in replaces:
                raise FreeCureConflict(
                    f"FreeCure: {what} already has a self-attention (attn1) replace on {key} from "
                    f"{qualified_name(replaces[key])}; FASA needs that layer. Remove the other node from this model's "
                    f"chain, or pick FASA layers that avoid it (custom layer list).")


_CACHE_WORDS = ("cache", "deepcache", "teacache")


def check_no_caching(model_patcher, what: str) -> None:
    """Raise FreeCureConflict if a step-caching accelerator (EasyCache, LazyCache, TeaCache...) is attached.

    Those reuse earlier model outputs, so the attention FASA changes would not be computed.
    """
    found = []
    for wtype, by_key in getattr(model_patcher, "wrappers", {}).items():
        found += [f"wrapper '{k}'" for k in by_key if any(w in str(k).lower() for w in _CACHE_WORDS)]
    for ctype, by_key in getattr(model_patcher, "callbacks", {}).items():
        found += [f"callback '{k}'" for k in by_key if any(w in str(k).lower() for w in _CACHE_WORDS)]
    topts = model_patcher.model_options.get("transformer_options", {})
    found += [f"transformer option '{k}'" for k in topts if any(w in str(k).lower() for w in _CACHE_WORDS)]
    wrapper = model_patcher.model_options.get("model_function_wrapper")
    if wrapper is not None and any(w in qualified_name(wrapper).lower() for w in _CACHE_WORDS):
        found.append(f"model function wrapper {qualified_name(wrapper)}")
    for key, obj in getattr(model_patcher, "object_patches", {}).items():
        if any(w in qualified_name(obj).lower() for w in _CACHE_WORDS):
            found.append(f"object patch {key} ({qualified_name(obj)})")
    if found:
        raise FreeCureConflict(f"FreeCure: {what} has a step-caching accelerator attached ({', '.join(sorted(set(found)))}). "
                               f"It reuses earlier model outputs, so FASA's attention would be skipped. Remove the "
                               f"caching node (EasyCache/LazyCache/TeaCache/DeepCache) from this model's chain.")


def weights_identity(model_patcher) -> str:
    """A string equal for two patchers exactly when they run the same weights and object patches."""
    patches = model_patcher.patches_uuid if model_patcher.patches else "no-weight-patches"
    objs = sorted((k, id(v)) for k, v in model_patcher.object_patches.items())
    hooks = getattr(model_patcher, "hook_patches", {}) or {}
    return f"{id(model_patcher.model)}|{patches}|{objs}|hooks={len(hooks)}"


def check_same_weights(model_pd, model_fd) -> None:
    """Raise FreeCureConflict unless PD and FD can share one loaded model (lockstep mode)."""
    if model_pd is model_fd:
        return
    if not model_pd.is_clone(model_fd) or weights_identity(model_pd) != weights_identity(model_fd):
        raise FreeCureConflict(
            "FreeCure lockstep: model_fd has other weights than model_pd (a LoRA, weight patch or object patch "
            "differs, or they are different checkpoints), but lockstep runs both branches through one loaded "
            "model. Either take model_fd from the same chain after the LoRA, or use record/replay: sample the "
            "foundation branch with FreeCureFoundationSampler (record on, store 'kv') and connect its "
            "FREECURE_KV output to this node.")
