"""`python -m freecure_core.train.prepare`: face info and CrossFaceID cross pairs for training.

    python -m freecure_core.train.prepare (--folders ROOT | --jsonl FILE [--data-root DIR] [--strip-prefix P])
        --insightface PACK_DIR --out DIR [--seed 0] [--heldout 0.05] [--sources-per-target 1]
        [--min-score 0.5] [--min-area 0.01] [--providers auto]

Writes to DIR: ``face_info/`` (the cache: re-running analyses only new or changed images), ``embeddings/*.npy``
(raw 512-d ArcFace embeddings, as InstantID is trained and run on raw ones), ``train.jsonl`` and ``heldout.jsonl``
(one row per pair, in the field names of the CrossFaceID/InstantID training scripts plus the source image:
``identity``, ``image_file`` (target), ``additional_feature`` (its caption), ``bbox`` and ``landmarks`` (the
target's face, original pixels), ``insightface_feature_file`` (the SOURCE image's embedding), ``id_image_file``),
and ``report.json`` (counts, dropped images with reasons, the held-out identities).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import sys

import numpy as np

from .face_info import FaceInfoCache, analyse_all
from .pairs import make_pairs, split_identities
from .records import from_crossfaceid, from_folders


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m freecure_core.train.prepare", description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--folders", help="a folder per identity with images and <image>.txt captions")
    src.add_argument("--jsonl", help="CrossFaceID-style .jsonl or .json")
    ap.add_argument("--data-root", help="folder the JSONL's image paths are relative to (default: its folder)")
    ap.add_argument("--strip-prefix", help="prefix removed from the JSONL's absolute paths before --data-root")
    ap.add_argument("--insightface", help="insightface antelopev2 folder (scrfd_10g_bnkps.onnx, glintr100.onnx)")
    ap.add_argument("--providers", default="auto")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heldout", type=float, default=0.05, help="fraction of identities held out (default 0.05)")
    ap.add_argument("--sources-per-target", type=int, default=1)
    ap.add_argument("--min-score", type=float, default=0.5)
    ap.add_argument("--min-area", type=float, default=0.01, help="smallest face box, as a fraction of the image")
    ap.add_argument("--no-progress", action="store_true")
    return ap.parse_args(argv)


def _embedding_file(out: pathlib.Path, info) -> str:
    name = hashlib.sha1(info.path.encode()).hexdigest()[:20] + ".npy"
    path = out / "embeddings" / name
    if not path.is_file():
        np.save(path, info.embedding.astype(np.float32))
    return str(path)


def main(argv=None, analyser=None) -> int:
    """Run the preparation; `analyser` replaces the insightface pack (tests), else --insightface is loaded."""
    args = parse_args(argv)
    out = pathlib.Path(args.out)
    (out / "embeddings").mkdir(parents=True, exist_ok=True)
    records, notes = from_folders(args.folders) if args.folders else from_crossfaceid(args.jsonl, args.data_root,
                                                                                       args.strip_prefix)
    if analyser is None:
        if not args.insightface:
            print("FreeCure: give --insightface <antelopev2 folder> (scrfd_10g_bnkps.onnx + glintr100.onnx)")
            return 2
        from ..identity.face_analysis import FaceAnalysis
        analyser = FaceAnalysis.load(args.insightface, None if args.providers == "auto" else args.providers.split(","))
    infos, computed = analyse_all([r.image for r in records], analyser, FaceInfoCache(out / "face_info"),
                                  args.min_score, args.min_area, progress=not args.no_progress)
    usable = [r for r in records if infos[r.image].ok]
    dropped = [{"image": r.image, "identity": r.identity, "reason": infos[r.image].status}
               for r in records if not infos[r.image].ok]
    by_id: dict[str, list[str]] = {}
    for r in usable:
        by_id.setdefault(r.identity, []).append(r.image)
    train_ids, held_ids = split_identities(by_id, args.heldout, args.seed)
    caption = {r.image: r.caption for r in usable}
    summary = {}
    for name, ids in (("train", train_ids), ("heldout", held_ids)):
        pairs = make_pairs({i: by_id[i] for i in ids}, args.seed, args.sources_per_target)
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for p in pairs:
                t, s = infos[p.target], infos[p.source]
                fh.write(json.dumps({"identity": p.identity, "image_file": p.target,
                                     "additional_feature": caption[p.target], "bbox": list(t.box),
                                     "landmarks": t.kps.tolist(), "insightface_feature_file": _embedding_file(out, s),
                                     "id_image_file": p.source}) + "\n")
        summary[name] = {"identities": len(ids), "pairs": len(pairs)}
    single = sorted(i for i, imgs in by_id.items() if len(imgs) < 2)
    report = {"images": len(records), "usable": len(usable), "analysed_now": computed, "dropped": dropped,
              "identities_with_one_image": single, "heldout_identities": held_ids, "notes": notes, **summary,
              "seed": args.seed}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{len(records)} images, {len(usable)} usable ({len(dropped)} dropped: "
          f"{', '.join(sorted({d['reason'] for d in dropped})) or 'none'}); analysed {computed} now; "
          f"train {summary['train']['pairs']} pairs / {summary['train']['identities']} identities, held out "
          f"{summary['heldout']['pairs']} pairs / {summary['heldout']['identities']} identities; {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
