"""TEST-ONLY ComfyUI custom node pack (never shipped, never installed by users): looks inside the e2e server.

Loaded by the e2e server fixture (tests/conftest.py) as ``custom_nodes/zz_freecure_e2e_probe``; used by
tests/e2e/test_soak.py, test_interrupts.py, test_concurrency.py and test_peer_packs.py. Nothing here changes how a
node runs.

* ``FreeCureE2EProbe`` (output node, never cached): after an optional ``after`` input (any type, to order it after a
  node of the same prompt) it runs the garbage collector and reports, as UI text holding one JSON object, what
  FreeCure state is alive in the server process: KVStore objects (count and bytes), FasaRun objects, FreeCure
  guiders, FASA patch closures; every FreeCure function found in a live ModelPatcher's model_options, wrappers,
  callbacks, object patches or attachments; forward hooks and instance-level ``forward`` overrides on the modules of
  every live model; FreeCure functions put into ComfyUI's own modules (monkeypatches); the attn1/attn2 replace keys
  of the loaded models; and the process's resident memory. It also lists the FreeCure record modules (fasa.record) it
  recognises, so a test can tell an empty count from a probe that cannot see FreeCure at all.
* ``FreeCureE2EFaultyModel``: a clone of a MODEL whose ``optimized_attention_override`` (a ComfyUI transformer
  option) raises ``RuntimeError`` when called from inside FreeCure's FASA patch (the ``fasa_attn1`` closure of
  freecure_core/comfy_bridge/patches.py) after ``after_calls`` such calls; everywhere else it calls the attention
  function unchanged. Used as FreeCureSampler's ``model_pd`` it simulates an exception raised inside the patch.
* ``FreeCureE2EModelPatches`` (output node): the replace patches one MODEL carries (block keys and the module that
  defined each patch's class) and its weight-patch count; tests/e2e/test_peer_packs.py checks with it that a peer
  pack really patched the model.
"""
from __future__ import annotations

import gc
import json
import os
import sys
import time

FAULT_MESSAGE = "FreeCureE2E: simulated fault inside the FASA patch"
_FREECURE_WORD = "freecure"


class _AnyType(str):
    """A socket type that matches every other type (ComfyUI compares types with ``!=``)."""

    def __ne__(self, other):
        return False

    __hash__ = str.__hash__


ANY = _AnyType("*")


# ------------------------------------------------------------------------------------------ probe
def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return -1


def _is_freecure_module(mod) -> bool:
    """A module of the FreeCure pack (not of the test-only packs: zz_freecure_e2e*, freecure_e2e_support).

    ComfyUI names a custom node package by its path (``/.../custom_nodes/comfyui-freecure``, submodules
    ``...comfyui-freecure.freecure_core.fasa.record``), so only the last path component is looked at."""
    name = str(mod or "").replace(os.sep, "/").rsplit("/", 1)[-1].lower()
    return _FREECURE_WORD in name and "e2e" not in name


def _callable_name(obj) -> str:
    fn = getattr(obj, "__func__", obj)
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{mod}.{qual}"


def _is_freecure_callable(obj) -> bool:
    if not callable(obj):
        return False
    fn = getattr(obj, "__func__", obj)
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    return _is_freecure_module(mod)


def _freecure_items(obj, path: str, out: list, depth: int = 0) -> None:
    """Paths of FreeCure callables (or FreeCure objects) nested in dicts/lists/tuples under obj."""
    if depth > 8:
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _freecure_items(v, f"{path}[{k!r}]", out, depth + 1)
    elif isinstance(obj, (list, tuple, set)):
        for i, v in enumerate(obj):
            _freecure_items(v, f"{path}[{i}]", out, depth + 1)
    elif _is_freecure_callable(obj) or _is_freecure_module(type(obj).__module__):
        out.append(f"{path} = {_callable_name(obj)}")


def _patcher_report(p) -> dict:
    found: list[str] = []
    _freecure_items(p.model_options, "model_options", found)
    for attr in ("wrappers", "callbacks", "object_patches", "attachments", "injections", "additional_models",
                 "hook_patches", "forced_hooks", "patches"):
        _freecure_items(getattr(p, attr, None), attr, found)
    topts = p.model_options.get("transformer_options", {})
    replace = topts.get("patches_replace", {})
    return {"freecure": found,
            "attn1_replace": sorted(str(k) for k in replace.get("attn1", {})),
            "attn2_replace": sorted(str(k) for k in replace.get("attn2", {})),
            "patches": sorted(str(k) for k in topts.get("patches", {})),
            "wrappers": sorted(str(k) for k in getattr(p, "wrappers", {}) or {}),
            "callbacks": sorted(str(k) for k in getattr(p, "callbacks", {}) or {})}


def _module_hooks(torch_module) -> list[str]:
    """Modules of a torch model with forward hooks or an instance-level forward (a monkeypatch)."""
    found = []
    for name, m in torch_module.named_modules():
        hooks = sum(len(getattr(m, a, {}) or {}) for a in ("_forward_hooks", "_forward_pre_hooks",
                                                            "_backward_hooks", "_forward_hooks_with_kwargs"))
        if hooks or "forward" in vars(m):
            found.append(f"{name or '<root>'}: hooks={hooks} forward_override={'forward' in vars(m)}")
    return found


def _comfy_monkeypatches() -> list[str]:
    """FreeCure functions found as attributes of ComfyUI's own modules or their classes."""
    found = []
    for modname, mod in list(sys.modules.items()):
        if mod is None or not (modname.startswith(("comfy", "comfy_extras", "comfy_execution")) or modname in (
                "nodes", "execution", "latent_preview", "server", "folder_paths", "node_helpers")):
            continue
        for attr, value in list(vars(mod).items()):
            if _is_freecure_callable(value) and not isinstance(value, type):
                found.append(f"{modname}.{attr} = {_callable_name(value)}")
            elif isinstance(value, type) and value.__module__ == modname:
                for meth, fn in list(vars(value).items()):
                    if _is_freecure_callable(fn):
                        found.append(f"{modname}.{attr}.{meth} = {_callable_name(fn)}")
    return found


def _kind_of(t: type) -> str | None:
    """What the probe counts objects of type t as (None: not counted)."""
    if t.__name__ == "function":
        return "function"
    if _is_freecure_module(t.__module__):
        for name, suffix in (("KVStore", "fasa.record"), ("FasaRun", "patches"), ("FASAConfig", "fasa.config")):
            if t.__name__ == name and str(t.__module__).endswith(suffix):
                return name
        if t.__name__ in ("FoundationGuider", "LockstepGuider", "ReplayGuider"):
            return "guider"
        return None
    if any(c.__name__ == "ModelPatcher" and str(c.__module__).startswith("comfy") for c in t.__mro__):
        return "ModelPatcher"
    return None


def probe_report(label: str = "") -> dict:
    t0 = time.perf_counter()
    gc.collect()
    t_gc = time.perf_counter() - t0
    n_objects = 0
    kinds: dict[type, str | None] = {}
    found: dict[str, list] = {"KVStore": [], "FasaRun": [], "FASAConfig": [], "guider": [], "ModelPatcher": [],
                              "closure": []}
    for obj in gc.get_objects():
        n_objects += 1
        t = type(obj)
        kind = kinds.get(t, "?")
        if kind == "?":
            kind = kinds[t] = _kind_of(t)
        if kind is None:
            continue
        if kind == "function":
            if (obj.__qualname__.startswith("FasaRun.") and "<locals>" in obj.__qualname__
                    and _is_freecure_module(obj.__module__)):
                found["closure"].append(obj.__qualname__)
        elif kind == "guider":
            found[kind].append(t.__name__)
        else:
            found[kind].append(obj)
    kv, patchers = found["KVStore"], found["ModelPatcher"]

    patcher_reports = [_patcher_report(p) for p in patchers]
    hooks, seen_models = [], set()
    for p in patchers:
        model = getattr(p, "model", None)
        if model is not None and id(model) not in seen_models and hasattr(model, "named_modules"):
            seen_models.add(id(model))
            hooks += _module_hooks(model)
    loaded = []
    try:
        import comfy.model_management as mm
        for lm in list(mm.current_loaded_models):
            p = lm.model
            if p is not None:
                r = _patcher_report(p)
                loaded.append({"model": type(getattr(p, "model", None)).__name__, "attn1_replace": r["attn1_replace"],
                               "attn2_replace": r["attn2_replace"], "freecure": r["freecure"]})
    except Exception as e:  # noqa: BLE001 - a report, not a check
        loaded.append({"error": repr(e)})

    kv_modules = sorted(n for n, m in list(sys.modules.items())
                        if m is not None and n.endswith("freecure_core.fasa.record") and _is_freecure_module(n))
    report = {
        "label": label,
        "kv_store_modules": kv_modules,  # the probe recognises FreeCure's modules (else its counts mean nothing)
        "pid": os.getpid(),
        "rss_bytes": _rss_bytes(),
        "kv_stores": len(kv),
        "kv_bytes": int(sum(s.nbytes() for s in kv)),
        "kv_compacted": sum(bool(getattr(s, "compacted", False)) for s in kv),
        "fasa_runs": len(found["FasaRun"]),
        "fasa_closures": sorted(found["closure"]),
        "guiders": sorted(found["guider"]),
        "fasa_configs": len(found["FASAConfig"]),
        "model_patchers": len(patchers),
        "patcher_freecure": sorted({x for r in patcher_reports for x in r["freecure"]}),
        "patcher_attn1_replace": sorted({x for r in patcher_reports for x in r["attn1_replace"]}),
        "patcher_attn2_replace": sorted({x for r in patcher_reports for x in r["attn2_replace"]}),
        "module_hooks": hooks,
        "comfy_monkeypatches": _comfy_monkeypatches(),
        "loaded_models": loaded,
        "gc_objects": n_objects,
        "gc_seconds": round(t_gc, 3),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return report


class FreeCureE2EProbe:
    """Reports the FreeCure state alive in the server (UI text: one JSON object). Never cached."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"default": ""})},
                "optional": {"after": (ANY, {"tooltip": "Anything: runs the probe after the node it comes from."})}}

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # never equal to itself: run every time

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing/freecure_e2e"

    def run(self, label="", after=None):
        del after
        return {"ui": {"text": [json.dumps(probe_report(label))]}}


# ------------------------------------------------------------------------------------------ fault
def _inside_fasa_patch(max_depth: int = 12) -> bool:
    f = sys._getframe(2)
    for _ in range(max_depth):
        if f is None:
            return False
        code = f.f_code
        if code.co_name == "fasa_attn1" and code.co_filename.replace(os.sep, "/").endswith("comfy_bridge/patches.py"):
            return True
        f = f.f_back
    return False


def _faulty_override(after_calls: int):
    state = {"calls": 0}

    def freecure_e2e_faulty_attention(func, *args, **kwargs):
        if _inside_fasa_patch():
            state["calls"] += 1
            if state["calls"] > after_calls:
                raise RuntimeError(f"{FAULT_MESSAGE} (call {state['calls']})")
        return func(*args, **kwargs)
    return freecure_e2e_faulty_attention


class FreeCureE2EFaultyModel:
    """A MODEL clone whose attention raises inside FreeCure's FASA patch after `after_calls` calls there."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",),
                             "after_calls": ("INT", {"default": 0, "min": 0, "max": 1_000_000})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "testing/freecure_e2e"

    def run(self, model, after_calls):
        m = model.clone()
        m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = \
            _faulty_override(after_calls)
        return (m,)


# ------------------------------------------------------------------------------------------ model patches
def model_patch_report(model) -> dict:
    """What one MODEL carries in its transformer options: per kind of replace patch (attn1, attn2, ...) the block
    keys and, for each, the module that defined the patch object's class (so a test can tell whose patch it is)."""
    topts = model.model_options.get("transformer_options", {})
    replace = {kind: {str(k): type(v).__module__ for k, v in patches.items()}
               for kind, patches in topts.get("patches_replace", {}).items()}
    return {"patches_replace": replace, "patches": sorted(str(k) for k in topts.get("patches", {})),
            "weight_patches": len(getattr(model, "patches", {}) or {})}


class FreeCureE2EModelPatches:
    """Reports a MODEL's replace patches (UI text: one JSON object, ``model_patch_report``); changes nothing."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "label": ("STRING", {"default": ""})}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "testing/freecure_e2e"

    def run(self, model, label=""):
        return {"ui": {"text": [json.dumps(dict(model_patch_report(model), label=label))]}}


NODE_CLASS_MAPPINGS = {"FreeCureE2EProbe": FreeCureE2EProbe, "FreeCureE2EFaultyModel": FreeCureE2EFaultyModel,
                       "FreeCureE2EModelPatches": FreeCureE2EModelPatches}
NODE_DISPLAY_NAME_MAPPINGS = {"FreeCureE2EProbe": "FreeCure E2E probe (test only)",
                              "FreeCureE2EFaultyModel": "FreeCure E2E faulty model (test only)",
                              "FreeCureE2EModelPatches": "FreeCure E2E model patches (test only)"}
