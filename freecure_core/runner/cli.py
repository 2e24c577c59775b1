"""Run a ComfyUI workflow headless: in an embedded (in-process) ComfyUI, or on one or more running servers.

    python -m freecure_core.run WORKFLOW.json [--set NODE.INPUT=VALUE ...] [--sweep NODE.INPUT=V1,V2 ...]
                                [--repeat N] [--server URL ...] [--out DIR] [--timeout S] [--quiet]

WORKFLOW.json is a UI-format workflow (what the frontend saves; converted with the node definitions of the ComfyUI
that runs it) or an API-format prompt.  ``--set`` edits inputs, ``--sweep`` and ``--repeat`` make a batch (syntax
in ``freecure_core.runner.workflow_format``).  Without ``--server`` the prompts run one after another in this
process (ComfyUI from ``--comfyui``, ``$COMFYUI_PATH`` or this repo's ``.comfyui``; this pack loaded as a custom
node); with ``--server`` (repeatable) they are queued on the servers, each server working through its share
concurrently.  Progress is printed per node; every image a SaveImage/PreviewImage node produced is copied into
``--out`` with ``record.json`` (see ``freecure_core.runner.record``).  Exit status: 0 all prompts succeeded, 1 some
failed (they are recorded, the others still run), 2 bad arguments or setup, 130 interrupted (Ctrl-C; a second one
quits at once).

This module is the command line only (arguments in, exit status out); the run itself is
``freecure_core.runner.run.run_workflow``.  ``python -m freecure_core.run`` calls ``main`` here.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

from .progress import Printer
from .run import RunOptions, default_out, load_workflow, run_workflow
from .workflow_format import WorkflowError


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m freecure_core.run", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="NODE is a node id, a node title, a class type that occurs once, or * (every node with INPUT).\n"
               "VALUE is JSON where it parses (4, 0.5, true, [\"3\", 0]) else text; null removes the input.\n"
               "Sweep values: V1,V2,... or a JSON list; several sweeps combine as a product.\n"
               "--repeat N: copy r of each prompt adds r to every seed / noise_seed input.\n"
               "Example: python -m freecure_core.run workflows/freecure_face_parsing.json \\\n"
               "    --set EmptyLatentImage.width=768 --sweep '*.seed=1,2,3' --server http://127.0.0.1:8188")
    ap.add_argument("workflow", help="UI-format workflow or API-format prompt (JSON)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NODE.INPUT=VALUE",
                    help="set an input (repeatable, applied in order)")
    ap.add_argument("--sweep", dest="sweeps", action="append", default=[], metavar="NODE.INPUT=V1,V2",
                    help="one prompt per value (repeatable: product)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="run each prompt N times with seed offsets")
    ap.add_argument("--server", dest="servers", action="append", default=[], metavar="URL",
                    help="a running ComfyUI (repeatable: prompts are spread over the servers); default: embedded")
    ap.add_argument("--out", metavar="DIR", help="output folder (default out/run/<timestamp>)")
    ap.add_argument("--timeout", type=float, default=0.0, metavar="S",
                    help="seconds per prompt before it is interrupted and recorded as timeout (0 = no limit)")
    ap.add_argument("--quiet", action="store_true", help="print only each prompt's result and errors")
    emb = ap.add_argument_group("embedded ComfyUI (without --server)")
    emb.add_argument("--comfyui", metavar="PATH", help="ComfyUI checkout (default $COMFYUI_PATH, this repo's "
                     ".comfyui, or the ComfyUI whose custom_nodes holds this pack)")
    emb.add_argument("--extra-model-paths", dest="extra_model_paths", action="append", default=[], metavar="YAML",
                     help="an extra_model_paths.yaml (repeatable)")
    emb.add_argument("--custom-nodes", dest="custom_nodes", action="append", default=[], metavar="DIR",
                     help="another custom node pack, or a folder of packs (repeatable)")
    emb.add_argument("--input-dir", dest="input_dir", metavar="DIR", help="ComfyUI input folder (LoadImage files)")
    emb.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU")
    emb.add_argument("--verbose", action="store_true", help="show ComfyUI's own log (INFO)")
    args = ap.parse_args(argv)
    if args.servers and (args.comfyui or args.extra_model_paths or args.custom_nodes or args.input_dir or args.cpu):
        ap.error("FreeCure: --comfyui/--extra-model-paths/--custom-nodes/--input-dir/--cpu are for the embedded "
                 "ComfyUI; drop them with --server (a server has its own settings)")
    if args.repeat < 1:
        ap.error(f"FreeCure: --repeat must be at least 1, got {args.repeat}")
    return args


def options_from(args) -> RunOptions:
    """The run's options from the parsed command line."""
    return RunOptions(sets=list(args.sets), sweeps=list(args.sweeps), repeat=args.repeat, servers=list(args.servers),
                      timeout=args.timeout, comfyui=args.comfyui, extra_model_paths=list(args.extra_model_paths),
                      custom_nodes=list(args.custom_nodes), input_dir=args.input_dir, cpu=args.cpu,
                      verbose=args.verbose)


def main(argv=None) -> int:
    args = parse_args(argv)
    printer = Printer(quiet=args.quiet)
    out = pathlib.Path(args.out) if args.out else default_out()
    head = {"tool": "python -m freecure_core.run", "argv": list(sys.argv[1:] if argv is None else argv),
            "workflow": str(pathlib.Path(args.workflow).resolve())}
    try:
        workflow, _ = load_workflow(args.workflow)
        result = run_workflow(workflow, options_from(args), out, printer=printer, record_head=head)
    except WorkflowError as e:  # unreadable workflow, or a --set/--sweep that does not fit: nothing was written
        printer.line(str(e))
        return 2
    if result.error is not None:
        printer.line(result.error)
    statuses = [p["status"] for p in result.record["prompts"]]
    printer.line(f"{statuses.count('success')}/{len(statuses)} prompt(s) succeeded; outputs and record.json in {out}")
    return result.code


if __name__ == "__main__":
    sys.exit(main())
