"""`python -m freecure_core.train.eval`: the evaluation suite's benchmark protocol on the held-out identities of a
prepared dataset, with the trained adapter (and IdentityNet) in a ComfyUI InstantID workflow.

    python -m freecure_core.train.eval --heldout PREPARED/heldout.jsonl --adapter NAME_IN_models/instantid
        --out DIR [--controlnet NAME_IN_models/controlnet] [--workflow workflows/api/freecure_instantid.json]
        [--class-word person] -- [protocol options: --server URL, --clip DIR, --insightface DIR, --seeds ...]

It writes one reference photo per held-out identity (the first ID-input image of its pairs) to DIR/identities/, then
runs ``python -m freecure_core.eval.protocol`` with ``FreeCureInstantIDLoader.instantid_file`` (and the ControlNet
loader) set to the trained files, so the table compares baseline and FreeCure for the fine-tuned model; run it once
with the official adapter for the before/after comparison. Put the trained files in ComfyUI's models/instantid and
models/controlnet first (the protocol runs ComfyUI, which reads models only from its folders).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

DEFAULT_WORKFLOW = pathlib.Path(__file__).resolve().parents[2] / "workflows" / "api" / "freecure_instantid.json"


def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m freecure_core.train.eval", description=__doc__.splitlines()[0])
    ap.add_argument("--heldout", required=True, help="heldout.jsonl from python -m freecure_core.train.prepare")
    ap.add_argument("--adapter", required=True, help="the trained adapter's file name in ComfyUI/models/instantid/")
    ap.add_argument("--controlnet", help="the trained IdentityNet's name in ComfyUI/models/controlnet/")
    ap.add_argument("--workflow", default=str(DEFAULT_WORKFLOW))
    ap.add_argument("--out", required=True)
    ap.add_argument("--class-word", default="person", help="replaces <class> in the prompts")
    args = ap.parse_args(argv)
    args.protocol_args = rest
    return args


def write_identities(heldout, folder, class_word: str) -> list[str]:
    """One photo per identity of the held-out pairs (its first ID input) as <identity>__<class>.png; the names."""
    from PIL import Image
    folder = pathlib.Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    chosen = {}
    with open(heldout, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                chosen.setdefault(row["identity"], row.get("id_image_file") or row["image_file"])
    if not chosen:
        raise ValueError(f"FreeCure: {heldout} holds no pair; prepare with --heldout > 0")
    word = class_word.strip().replace(" ", "_")
    for identity, image in sorted(chosen.items()):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in identity)
        Image.open(image).convert("RGB").save(folder / f"{safe}__{word}.png")
    return sorted(chosen)


def protocol_argv(args, identities_dir) -> list[str]:
    """The arguments for python -m freecure_core.eval.protocol."""
    sets = ["--set", f"FreeCureInstantIDLoader.instantid_file={args.adapter}"]
    if args.controlnet:
        sets += ["--set", f"ControlNetLoader.control_net_name={args.controlnet}"]
    return [args.workflow, "--identities", str(identities_dir), "--out", str(pathlib.Path(args.out) / "protocol"),
            *sets, *args.protocol_args]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from ..eval import protocol
    except ImportError as exc:  # the evaluation suite is part of the pack; a partial copy may lack it
        print(f"FreeCure: the evaluation suite (freecure_core.eval) is not available ({exc}); nothing to run")
        return 2
    ids = write_identities(args.heldout, pathlib.Path(args.out) / "identities", args.class_word)
    print(f"{len(ids)} held-out identities: {', '.join(ids)}")
    return protocol.main(protocol_argv(args, pathlib.Path(args.out) / "identities"))


if __name__ == "__main__":
    sys.exit(main())
