"""What each branch of a lockstep pair is evaluated with: its own MODEL's options, plus what the run added.

A lockstep run samples the pair [PD rows; FD rows] through one guider built on model_pd, so ComfyUI hands every model
evaluation model_pd's options (its patches, CFG hooks, wrappers and callbacks, merged as ComfyUI's
``prepare_model_patcher`` merges them) plus what the run itself added (``sample_sigmas``, a CFG++ sampler's post-CFG
hook, hook patches of the conds...). ``LockstepOptions`` splits those runtime options into the run's additions and
model_pd's own, and gives FD the same additions on top of model_fd's own options, so each branch is evaluated with
exactly its own model_options: patches, replaces, CFG hooks, ``model_function_wrapper`` and the per-evaluation wrappers
(PREDICT_NOISE, CALC_COND_BATCH, APPLY_MODEL, DIFFUSION_MODEL). A post-CFG hook the sampler added for the run reads the
whole batch (CFG++ samplers keep its uncond prediction), so it is called once on the pair, with each branch's own
predictions, as in a plain run.

What cannot differ per branch inside one run is refused by ``check_lockstep_pair``: the run-level wrappers
(OUTER_SAMPLE, PREPARE_SAMPLING, SAMPLER_SAMPLE and any kind this ComfyUI adds), the model patcher's callbacks (only
the loaded model_pd fires them) and the denoise-mask function (applied to the pair before each evaluation).
"""
from __future__ import annotations

import torch

import comfy.model_patcher
import comfy.patcher_extension as ext
import comfy.samplers

from .checks import FreeCureConflict, check_same_weights, qualified_name

# wrapper kinds ComfyUI applies once per model evaluation, from the options that evaluation is given
EVAL_WRAPPERS = tuple(getattr(ext.WrappersMP, n) for n in ("PREDICT_NOISE", "CALC_COND_BATCH", "APPLY_MODEL",
                                                          "DIFFUSION_MODEL") if hasattr(ext.WrappersMP, n))
# top-level options ComfyUI reads for the whole pair (KSamplerX0Inpaint), never per branch
RUN_LEVEL_KEYS = ("denoise_mask_function",)
POST_CFG = "sampler_post_cfg_function"

_NOTHING = object()


class _Tail(list):
    """Items a run appended to a list of model_pd's options (as opposed to a list it replaced)."""


def prepared_options(model_patcher) -> dict:
    """A copy of a MODEL's options with its patcher's wrappers and callbacks merged in, as ComfyUI samples it."""
    opts = comfy.model_patcher.create_model_options_clone(model_patcher.model_options)
    to = opts.setdefault("transformer_options", {})
    for name in ("wrappers", "callbacks"):
        ext.merge_nested_dicts(to.setdefault(name, {}), getattr(model_patcher, name, {}) or {}, copy_dict1=False)
    return opts


def same(a, b) -> bool:
    """Equality of two option trees: callables and tensors by identity, plain values by value."""
    if a is b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    if callable(a) or callable(b):  # the same bound method, fetched twice, is equal but not identical
        return hasattr(a, "__self__") and hasattr(b, "__self__") and a == b
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - objects whose == is not a plain truth value
        return False


def run_part(value, base):
    """What the runtime options tree `value` adds to `base` (the MODEL's own): _NOTHING when they are the same."""
    if base is _NOTHING:
        return _Tail(value) if isinstance(value, list) else value
    if same(value, base):
        return _NOTHING
    if isinstance(value, dict) and isinstance(base, dict):
        out = {}
        for k, v in value.items():
            part = run_part(v, base.get(k, _NOTHING))
            if part is not _NOTHING:
                out[k] = part
        return out if out else _NOTHING
    if isinstance(value, list) and isinstance(base, list) and same(value[:len(base)], list(base)):
        return _Tail(value[len(base):])
    return value


def with_part(base, part):
    """`base` (a MODEL's own options tree) with a run's additions `part` applied (a fresh tree)."""
    if part is _NOTHING:
        return base
    if isinstance(part, _Tail):
        return (list(base) if isinstance(base, list) else []) + list(part)
    if isinstance(part, dict) and isinstance(base, dict):
        out = dict(base)
        for k, v in part.items():
            out[k] = with_part(base[k], v) if k in base else with_part(_NOTHING, v)
        return out
    if isinstance(part, dict):
        return {k: with_part(_NOTHING, v) for k, v in part.items()}
    return part


class LockstepOptions:
    """One evaluation's options for each branch (see the module docstring): `pd` and `fd`, and `finish` to run the
    post-CFG hooks the sampler added for this run once on the pair."""

    def __init__(self, runtime: dict, model_pd, model_fd):
        own_pd, own_fd = prepared_options(model_pd), prepared_options(model_fd)
        part = run_part(runtime, own_pd)
        part = {} if part is _NOTHING else part
        post = part.get(POST_CFG, _NOTHING)
        self.pair_post = list(post) if isinstance(post, _Tail) else []
        self._seen: dict[str, dict] = {}
        if self.pair_post:
            part = {k: v for k, v in part.items() if k != POST_CFG}
            self.pd = comfy.model_patcher.create_model_options_clone(runtime)
            self.pd[POST_CFG] = list(own_pd.get(POST_CFG, [])) + [self._keep("pd")]
        else:
            self.pd = runtime
        self.fd = with_part(own_fd, part)
        if self.pair_post:
            self.fd[POST_CFG] = list(own_fd.get(POST_CFG, [])) + [self._keep("fd")]

    def _keep(self, branch: str):
        def keep_branch_args(args):
            self._seen[branch] = args
            return args["denoised"]
        return keep_branch_args

    def finish(self, x, timestep, pd: torch.Tensor, fd: torch.Tensor, runtime: dict) -> torch.Tensor:
        """The pair's denoised output [PD; FD], after the run's own post-CFG hooks saw the whole pair."""
        denoised = torch.cat([pd, fd])
        if not self.pair_post:
            return denoised
        a, b = self._seen.pop("pd"), self._seen.pop("fd")

        def pair(key):
            u, v = a.get(key), b.get(key)
            return None if u is None or v is None else torch.cat([u, v])
        for fn in self.pair_post:
            denoised = fn({"denoised": denoised, "cond": a.get("cond"), "uncond": a.get("uncond"),
                           "cond_scale": a.get("cond_scale"), "model": a.get("model"),
                           "uncond_denoised": pair("uncond_denoised"), "cond_denoised": pair("cond_denoised"),
                           "sigma": timestep, "model_options": runtime, "input": x})
        return denoised


def predict_branch(guider, x, timestep, negative, positive, model_options: dict, seed):
    """ComfyUI's sampling_function for one branch, inside that branch's own PREDICT_NOISE wrappers."""
    def branch(x, timestep, model_options, seed):
        return comfy.samplers.sampling_function(guider.inner_model, x, timestep, negative, positive, guider.cfg,
                                                model_options=model_options, seed=seed)
    wrappers = ext.get_all_wrappers(ext.WrappersMP.PREDICT_NOISE, model_options, is_model_options=True)
    return ext.WrapperExecutor.new_class_executor(branch, guider, wrappers).execute(x, timestep, model_options, seed)


def _entries(tree: dict) -> dict[str, list[tuple]]:
    """kind -> [(key, callable)] of a wrappers/callbacks tree."""
    return {kind: [(key, fn) for key, fns in by_key.items() for fn in fns] for kind, by_key in tree.items()}


def _differences(pd: dict, fd: dict, what: str, kinds) -> list[str]:
    out = []
    for kind in sorted(set(pd) | set(fd)):
        if kinds is not None and kind not in kinds:
            continue
        a, b = pd.get(kind, []), fd.get(kind, [])
        only_pd = [(k, f) for k, f in a if not any(same(f, g) for _, g in b)]
        only_fd = [(k, f) for k, f in b if not any(same(f, g) for _, g in a)]
        out += [f"{kind} {what} '{k}' ({qualified_name(f)}) on model_pd only" for k, f in only_pd]
        out += [f"{kind} {what} '{k}' ({qualified_name(f)}) on model_fd only" for k, f in only_fd]
    return out


def check_lockstep_pair(model_pd, model_fd) -> None:
    """FreeCureConflict unless both models share weights and what acts on the whole run (see the module docstring)."""
    check_same_weights(model_pd, model_fd)
    if model_pd is model_fd:
        return
    own_pd, own_fd = prepared_options(model_pd), prepared_options(model_fd)
    to_pd, to_fd = own_pd["transformer_options"], own_fd["transformer_options"]
    wrappers_pd, wrappers_fd = _entries(to_pd["wrappers"]), _entries(to_fd["wrappers"])
    run_kinds = (set(wrappers_pd) | set(wrappers_fd)) - set(EVAL_WRAPPERS)
    found = _differences(wrappers_pd, wrappers_fd, "wrapper", run_kinds)
    found += _differences(_entries(to_pd["callbacks"]), _entries(to_fd["callbacks"]), "callback", None)
    for key in RUN_LEVEL_KEYS:
        if not same(own_pd.get(key, _NOTHING), own_fd.get(key, _NOTHING)):
            found.append(f"{key} ({qualified_name(own_pd.get(key, own_fd.get(key)))}) differs")
    if found:
        raise FreeCureConflict(
            f"FreeCure lockstep: model_pd and model_fd differ in what acts on the whole sampling run: "
            f"{'; '.join(found)}. One lockstep run cannot apply it to one branch only. Use record/replay: sample the "
            f"foundation branch with FreeCure Foundation Sampler (record on, store 'kv') and connect its kv output "
            f"here, or give both models the same node.")
