"""Write the tiny SD1.5 checkpoint used by the e2e tests.

    python tests/e2e/make_ckpt.py PATH [--seed N]

Layout is what the stock CheckpointLoaderSimple expects for SD1.x:
``model.diffusion_model.*`` (tiny UNet), ``cond_stage_model.transformer.*`` (tiny CLIP,
real SD1 tokenizer at load time), ``first_stage_model.taesd_*`` (random TAESD).
Loading it needs TinySD15 registered (tests/e2e_pack does that in the server).
Deterministic: the same seed gives byte-identical files.
"""
import argparse
import pathlib
import sys
import time

TESTS_DIR = pathlib.Path(__file__).resolve().parent.parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--seed", type=int, default=0)
    ns = ap.parse_args(argv)

    t0 = time.time()
    from support.comfy_env import import_comfy
    import_comfy()
    from support import tiny_models

    out = tiny_models.write_tiny_sd15_checkpoint(ns.path, seed=ns.seed)
    size = pathlib.Path(out).stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB) in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
