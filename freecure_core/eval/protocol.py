"""The FreeCure paper's benchmark protocol over a ComfyUI workflow: identities × prompts × seeds, baseline vs
FreeCure, then PC (CLIP-T), IF (ArcFace), Face Div (LPIPS) and hMean.

    python -m freecure_core.eval.protocol WORKFLOW.json --identities DIR --out DIR
        [--prompts FILE] [--seeds 0,1,2 | --num-seeds N] [--methods baseline,freecure]
        [--server URL ...] [--comfyui PATH] [--extra-model-paths YAML] [--cpu]
        [--insightface PACK_DIR] [--clip CLIP_DIR] [--lpips FILE [--lpips-backbone FILE]]
        [--set NODE.INPUT=VALUE ...] [--baseline-set NODE.INPUT=VALUE ...]
        [--prompt-input NODE.INPUT ...] [--image-input NODE.INPUT] [--output-node NODE_ID] [--no-plot]

WORKFLOW is an API-format prompt (``workflows/api/*.json``; with ``--server`` a UI-format workflow also works). For
each identity (``freecure_core.eval.identities``), prompt (default: the paper's 20, ``<class>`` replaced by the
identity's class word) and seed, the workflow is run once per method:
- ``freecure``: the workflow as it is;
- ``baseline``: the same prompt with FASA switched off — by default ``FreeCureFASAConfig.end_percent=0``, which is
  bit-identical to sampling the identity branch with a plain KSampler (tests/bridge/test_invariants.py);
  ``--baseline-set`` replaces that for other workflows.
The prompt text goes into every input whose value equals the workflow's own prompt (the ``prompt`` of its
FreeCureAttributeMask node, or the text written in the node that feeds it, e.g. the example workflows' Prompt node)
and into every input linked to that node's output, unless ``--prompt-input`` names the inputs; the identity photo
into the LoadImage node;
the seed into every seed / noise_seed input. Prompts run through the headless runner (``freecure_core.runner``:
embedded ComfyUI, or spread over the ``--server`` URLs). The image of the output node (the workflow's SaveImage) is
stored as ``<out>/images/<method>/<identity>/p<NN>_s<seed>.png``.

Resumable: images already stored are not generated again and rows already in ``<out>/results.csv`` are not scored
again, so an interrupted run goes on where it stopped (and a finished one recomputes nothing). Writes
``results.csv`` (one row per image), ``summary.md`` (the paper's Table 1 layout, plus PC by attribute count as in
Table 2) and ``pc_vs_if.png``. A metric whose model is not given is left empty ("—" in the table).
Exit status: 0 done, 1 some prompts failed (the others are stored), 2 bad arguments or setup.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import shutil
import sys
import time

import numpy as np

from ..runner.progress import Printer
from ..runner.run import Job, RunOptions, load_workflow, run_workflow
from ..runner.server_client import ComfyClient
from ..runner.workflow_format import (WorkflowError, apply_sets, backend_types, find_nodes, is_api_format,
                                     is_ui_format, split_spec, ui_to_api)
from . import table
from .identities import load_identities
from .prompts import load_prompts

METHODS = ("baseline", "freecure")
DEFAULT_BASELINE_SETS = ("FreeCureFASAConfig.end_percent=0",)
SEED_INPUTS = ("seed", "noise_seed")


class ProtocolError(ValueError):
    """Bad arguments or a workflow the protocol cannot drive; the message names the fix."""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m freecure_core.eval.protocol", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="API-format prompt JSON (UI format only with --server)")
    ap.add_argument("--identities", required=True, help="folder: a photo (or a folder of photos) per identity")
    ap.add_argument("--out", required=True, help="output folder (reused to resume)")
    ap.add_argument("--prompts", help="prompt file, one per line with <class> (default: the paper's 20)")
    ap.add_argument("--seeds", help="comma-separated seeds (default 0..num-seeds-1)")
    ap.add_argument("--num-seeds", type=int, default=4, help="seeds 0..N-1 when --seeds is not given (paper: 20)")
    ap.add_argument("--methods", default=",".join(METHODS), help="baseline,freecure or one of them")
    ap.add_argument("--default-class", default="person", help="class word for identities that name none")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="applied to every prompt (e.g. the checkpoint, size, steps)")
    ap.add_argument("--baseline-set", dest="baseline_sets", action="append", default=None, metavar="NODE.INPUT=VALUE",
                    help=f"what makes the baseline (default {' '.join(DEFAULT_BASELINE_SETS)})")
    ap.add_argument("--prompt-input", dest="prompt_inputs", action="append", default=[], metavar="NODE.INPUT")
    ap.add_argument("--image-input", default=None, metavar="NODE.INPUT", help="default: the LoadImage node's image")
    ap.add_argument("--output-node", default=None, help="node id whose image is scored (default: the SaveImage)")
    ap.add_argument("--server", dest="servers", action="append", default=[], metavar="URL")
    ap.add_argument("--timeout", type=float, default=0.0, help="seconds per prompt (0 = no limit)")
    ap.add_argument("--comfyui", help="embedded ComfyUI checkout (default as python -m freecure_core.run)")
    ap.add_argument("--extra-model-paths", dest="extra_model_paths", action="append", default=[], metavar="YAML")
    ap.add_argument("--custom-nodes", dest="custom_nodes", action="append", default=[], metavar="DIR")
    ap.add_argument("--cpu", action="store_true", help="embedded ComfyUI on the CPU")
    ap.add_argument("--insightface", help="insightface pack folder (antelopev2 or buffalo_l) for IF")
    ap.add_argument("--providers", default="auto", help="onnxruntime providers for IF, comma-separated or auto")
    ap.add_argument("--clip", help="local Hugging Face CLIP folder for PC (CLIP-T) and attribute accuracy")
    ap.add_argument("--lpips", help="LPIPS file (joined, or lpips' alex.pth with --lpips-backbone) for Face Div")
    ap.add_argument("--lpips-backbone", help="torchvision's alexnet-owt-7be5be79.pth")
    ap.add_argument("--no-plot", action="store_true", help="skip pc_vs_if.png")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in METHODS]
    if bad or not args.methods:
        ap.error(f"FreeCure: --methods takes {', '.join(METHODS)}; got {bad or args.methods}")
    try:
        args.seed_list = ([int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds
                          else list(range(args.num_seeds)))
    except ValueError:
        ap.error(f"FreeCure: --seeds must be integers separated by commas, got {args.seeds!r}")
    if not args.seed_list:
        ap.error("FreeCure: no seed to run; give --seeds or --num-seeds >= 1")
    return args


# ------------------------------------------------------------------------------------------ the prompt's slots
def _node_input(prompt: dict, spec: str) -> tuple[str, str]:
    node, name, _ = split_spec(spec + "=0")
    ids = find_nodes(prompt, node, name)
    if len(ids) != 1:
        raise ProtocolError(f"FreeCure: {spec} names {len(ids)} node inputs in the workflow; name one node id")
    return ids[0], name


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _written_prompt(prompt: dict, value):
    """(text, source link or None) of a FreeCureAttributeMask's prompt: written in it, or linked from a node with one
    written text (a String primitive, FreeCure Expression Split); None when neither."""
    if isinstance(value, str):
        return value, None
    if _is_link(value) and str(value[0]) in prompt:
        texts = [v for v in prompt[str(value[0])]["inputs"].values() if isinstance(v, str)]
        if len(texts) == 1:
            return texts[0], [str(value[0]), value[1]]
    return None


def prompt_slots(prompt: dict, specs=()) -> list[tuple[str, str]]:
    """(node id, input) pairs that receive the prompt text: the given NODE.INPUT specs, else every string input
    equal to the FreeCureAttributeMask node's prompt and, when that prompt is linked from a node that holds the text
    (the example workflows' Prompt node), every input linked to the same output (filled in place of the link)."""
    if specs:
        return [_node_input(prompt, s) for s in specs]
    found = [_written_prompt(prompt, n["inputs"].get("prompt")) for n in prompt.values()
             if n.get("class_type") == "FreeCureAttributeMask"]
    found = [f for f in found if f is not None]
    if not found:
        raise ProtocolError("FreeCure: the workflow has no FreeCure Attribute Mask with a written prompt (or one "
                            "linked from a node holding the text); name the inputs that take the prompt with "
                            "--prompt-input NODE.INPUT (repeatable)")
    text, source = found[0]
    return [(nid, k) for nid, n in prompt.items() for k, v in n["inputs"].items()
            if v == text or (source is not None and _is_link(v) and [str(v[0]), v[1]] == source)]


def image_slot(prompt: dict, spec: str | None) -> tuple[str, str]:
    """(node id, input) that takes the identity photo: --image-input, else the one LoadImage node's image."""
    if spec:
        return _node_input(prompt, spec)
    loads = [nid for nid, n in prompt.items() if n.get("class_type") == "LoadImage"]
    if len(loads) != 1:
        raise ProtocolError(f"FreeCure: the workflow has {len(loads)} LoadImage nodes; name the identity photo's "
                            "input with --image-input NODE.INPUT")
    return loads[0], "image"


def output_node(prompt: dict, node: str | None) -> str:
    """The node whose image is scored: --output-node, else the one SaveImage node."""
    if node:
        if node not in prompt:
            raise ProtocolError(f"FreeCure: --output-node {node} is not a node id of the workflow")
        return node
    saves = [nid for nid, n in prompt.items() if n.get("class_type") == "SaveImage"]
    if len(saves) != 1:
        raise ProtocolError(f"FreeCure: the workflow has {len(saves)} SaveImage nodes; pick the one to score with "
                            "--output-node NODE_ID")
    return saves[0]


def method_prompt(base: dict, method: str, baseline_sets) -> dict:
    """The workflow for one method: unchanged for freecure, with the baseline sets applied for baseline."""
    if method == "freecure":
        return copy.deepcopy(base)
    try:
        return apply_sets(base, baseline_sets)
    except WorkflowError as e:
        raise ProtocolError(f"{e} (the baseline is made with --baseline-set; this workflow needs its own)") from e


def fill(prompt: dict, text: str, slots, image_name: str, image_at, seed: int) -> dict:
    """A copy of the prompt with the text, the identity photo and the seed put in."""
    out = copy.deepcopy(prompt)
    for nid, name in slots:
        out[nid]["inputs"][name] = text
    out[image_at[0]]["inputs"][image_at[1]] = image_name
    for node in out.values():
        for name in SEED_INPUTS:
            if isinstance(node["inputs"].get(name), int) and not isinstance(node["inputs"].get(name), bool):
                node["inputs"][name] = seed
    return out


# ------------------------------------------------------------------------------------------ plan
def image_path(out: pathlib.Path, method: str, identity: str, prompt_index: int, seed: int) -> pathlib.Path:
    """Where one generated image is stored."""
    return out / "images" / method / identity / f"p{prompt_index:02d}_s{seed}.png"


def plan(args, identities, prompts) -> list[dict]:
    """Every (method, identity, prompt, seed) of the run, with its stored image path."""
    out = pathlib.Path(args.out)
    return [{"method": m, "identity": ident, "prompt_index": pi, "prompt": p.for_class(ident.class_word),
             "attributes": p.attributes, "seed": s, "path": image_path(out, m, ident.name, pi, s)}
            for m in args.methods for ident in identities for pi, p in enumerate(prompts) for s in args.seed_list]


# ------------------------------------------------------------------------------------------ generation
def _png_bytes(path: pathlib.Path) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def generate(args, base: dict, todo: list[dict], printer, slots, image_at, save: str) -> list[str]:
    """Run the prompts of `todo` through the headless runner (the prompt text into `slots`, the identity photo into
    `image_at`); store each image of node `save`; returns error lines."""
    out = pathlib.Path(args.out)
    gen = out / "generation" / time.strftime("%Y%m%d-%H%M%S")
    gen.mkdir(parents=True, exist_ok=True)
    baseline_sets = args.baseline_sets if args.baseline_sets is not None else list(DEFAULT_BASELINE_SETS)
    per_method = {m: method_prompt(base, m, baseline_sets) for m in args.methods}

    names = {}
    photos = {t["identity"].name: t["identity"].images[0] for t in todo}
    if args.servers:
        for client in [ComfyClient(u) for u in args.servers]:
            for ident, photo in photos.items():
                names[ident] = client.upload_image(f"freecure_eval_{ident}.png", _png_bytes(photo), "freecure_eval")
        input_dir = None
    else:
        input_dir = out / "inputs"
        input_dir.mkdir(parents=True, exist_ok=True)
        for ident, photo in photos.items():
            (input_dir / f"freecure_eval_{ident}.png").write_bytes(_png_bytes(photo))
            names[ident] = f"freecure_eval_{ident}.png"

    jobs = [Job(i, len(todo), fill(per_method[t["method"]], t["prompt"], slots, names[t["identity"].name],
                                   image_at, t["seed"]),
                {"method": t["method"], "identity": t["identity"].name, "prompt_index": t["prompt_index"],
                 "seed": t["seed"]})
            for i, t in enumerate(todo)]
    options = RunOptions(servers=list(args.servers), timeout=args.timeout, comfyui=args.comfyui,
                         custom_nodes=list(args.custom_nodes), extra_model_paths=list(args.extra_model_paths),
                         input_dir=str(input_dir) if input_dir else None, cpu=args.cpu)
    result = run_workflow(base, options, gen, jobs=jobs, printer=printer,
                          record_head={"tool": "python -m freecure_core.eval.protocol"})
    if result.error is not None:
        raise ProtocolError(result.error)
    errors = []
    for entry in result.record["prompts"]:
        t = todo[entry["index"]]
        files = [item["file"] for item in (entry.get("outputs") or {}).get(save, [])]
        if entry["status"] == "success" and files:
            t["path"].parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(gen / files[0], t["path"])
        else:
            msg = "; ".join(e.get("message", "") for e in entry.get("errors", [])) or f"no image from node {save}"
            errors.append(f"{t['method']} {t['identity'].name} prompt {t['prompt_index']} seed {t['seed']}: "
                          f"{entry['status']}: {msg}")
    return errors


# ------------------------------------------------------------------------------------------ scoring
def _rgb(path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))


class Scorers:
    """The metric models the arguments name (None for the others), loaded once."""

    def __init__(self, args):
        from .identity import IdentityScorer
        self.identity = self.clip = self.lpips = None
        if args.insightface:
            providers = "auto" if args.providers == "auto" else [p.strip() for p in args.providers.split(",")]
            self.identity = IdentityScorer.load(args.insightface, providers)
        if args.clip:
            from .clip_score import ClipScorer
            self.clip = ClipScorer.load(args.clip)
        if args.lpips:
            from .face_diversity import LpipsScorer
            self.lpips = LpipsScorer.load(args.lpips, args.lpips_backbone)
        self._refs = {}

    def reference(self, identity):
        if identity.name not in self._refs:
            self._refs[identity.name] = self.identity.reference_embedding([_rgb(p) for p in identity.images])
        return self._refs[identity.name]


def score(t: dict, scorers: Scorers) -> dict:
    """One results row for a stored image."""
    from .attribute_accuracy import accuracy, attribute_zero_shot
    from .identity import cosine
    image = _rgb(t["path"])
    row = {"method": t["method"], "identity": t["identity"].name, "class_word": t["identity"].class_word,
           "prompt_index": t["prompt_index"], "attributes": t["attributes"], "seed": t["seed"], "prompt": t["prompt"],
           "image": str(t["path"].relative_to(t["path"].parents[3]))}
    if scorers.identity is not None:
        e = scorers.identity.embed(image)
        row["face_found"] = int(e is not None)
        row["if"] = None if e is None else 100.0 * cosine(scorers.reference(t["identity"]), e)
    if scorers.clip is not None:
        row["pc"] = float(scorers.clip.clip_t([image], [t["prompt"]])[0])
        shot = attribute_zero_shot(scorers.clip, image, t["prompt"], t["identity"].class_word)
        row["attr_acc"] = accuracy(list(shot.values())) if shot else None
    return row


def face_div_by_method(rows, out: pathlib.Path, scorers: Scorers) -> dict:
    """method -> mean over (identity, prompt) groups of the mean pairwise LPIPS of the group's face crops × 100."""
    from .face_diversity import face_diversity
    if scorers.lpips is None or scorers.identity is None:
        return {}
    result = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        groups = {}
        for r in rows:
            if r["method"] == method:
                groups.setdefault((r["identity"], r["prompt_index"]), []).append(r)
        values = []
        for g in groups.values():
            crops = [scorers.identity.face_crop(_rgb(out / r["image"])) for r in g]
            d = face_diversity(scorers.lpips, crops)
            if not math.isnan(d):
                values.append(100.0 * d)
        result[method] = float(np.mean(values)) if values else float("nan")
    return result


# ------------------------------------------------------------------------------------------ main
def load_base(args) -> dict:
    """The workflow as an API prompt with --set applied (a UI workflow is converted with the server's nodes)."""
    workflow, fmt = load_workflow(args.workflow)
    if fmt == "ui":
        if not args.servers:
            raise ProtocolError(f"FreeCure: {args.workflow} is a UI-format workflow; without --server use its API "
                                "copy (workflows/api/<name>.json, or Export (API) in ComfyUI)")
        workflow = ui_to_api(workflow, ComfyClient(args.servers[0]).object_info(backend_types(workflow)))
    if not is_api_format(workflow) or is_ui_format(workflow):
        raise ProtocolError(f"FreeCure: {args.workflow} is not an API-format prompt")
    return apply_sets(workflow, args.sets)


def main(argv=None) -> int:
    args = parse_args(argv)
    printer = Printer(quiet=args.quiet)
    out = pathlib.Path(args.out)
    try:
        identities = load_identities(args.identities, args.default_class)
        prompts = load_prompts(args.prompts)
        base = load_base(args)
        slots, image_at = prompt_slots(base, args.prompt_inputs), image_slot(base, args.image_input)
        save = output_node(base, args.output_node)  # all three checked before anything runs
        out.mkdir(parents=True, exist_ok=True)
        csv_path = out / "results.csv"
        done = {table.row_key(r) for r in table.read_rows(csv_path)}
        everything = plan(args, identities, prompts)
        todo = [t for t in everything if not t["path"].is_file()]
        printer.line(f"{len(everything)} image(s) planned: {len(identities)} identities x {len(prompts)} prompts x "
                     f"{len(args.seed_list)} seeds x {len(args.methods)} methods; {len(todo)} to generate, "
                     f"{len(everything) - len(todo)} stored")
        errors = generate(args, base, todo, printer, slots, image_at, save) if todo else []
        (out / "protocol.json").write_text(json.dumps({
            "workflow": str(pathlib.Path(args.workflow).resolve()), "sets": args.sets,
            "baseline_sets": args.baseline_sets if args.baseline_sets is not None else list(DEFAULT_BASELINE_SETS),
            "seeds": args.seed_list, "methods": args.methods, "identities": [i.name for i in identities],
            "prompts": [p.text for p in prompts]}, indent=2) + "\n")
        to_score = [t for t in everything if t["path"].is_file()
                    and table.row_key({**t, "identity": t["identity"].name}) not in done]
        scorers = Scorers(args)
        for i, t in enumerate(to_score, start=1):
            table.append_rows(csv_path, [score(t, scorers)])
            if not args.quiet:
                printer.line(f"scored {i}/{len(to_score)}: {t['method']} {t['identity'].name} p{t['prompt_index']:02d} "
                             f"s{t['seed']}")
        printer.line(f"scored {len(to_score)} new image(s); {len(done)} row(s) were already in {csv_path}")
        rows = table.read_rows(csv_path)
        summary = table.summarize(rows, face_div_by_method(rows, out, scorers))
        text = table.markdown(summary, title=f"{pathlib.Path(args.workflow).stem}: {len(identities)} identities x "
                              f"{len(prompts)} prompts x {len(args.seed_list)} seeds")
        (out / "summary.md").write_text(text)
        printer.line(text)
        if not args.no_plot:
            from .plots import plot_pc_vs_if
            printer.line("plot: " + plot_pc_vs_if(rows, summary, out / "pc_vs_if.png"))
    except (ProtocolError, WorkflowError, FileNotFoundError, ValueError, ImportError) as e:
        printer.line(str(e))
        return 2
    for line in errors:
        printer.line("failed: " + line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
