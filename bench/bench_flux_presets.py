"""Which FLUX blocks should FASA use by default? Measured on a tiny random FLUX-shaped model (not a test).

For each candidate block set (every double block, every single block, both, and halves) the script samples FD on one
prompt and PD on another from the same noise (guidance-distilled, cfg 1, euler), FASA with a box mask covering a
quarter of the image, omega 2, and reports:
- move_in: how much closer PD's latent gets to FD's inside the mask (mean |PD - FD| without FASA minus with it);
- move_out: the same outside the mask (leakage: FASA should change little there);
- ratio move_in / move_out (higher = more localized), FASA calls and the stage-1 record size (cost).
The random model's QK-norm scales are raised (--qk-scale) so attention is local, as in trained FLUX; random weights
still cannot say which blocks carry hair colour in a trained FLUX: the figures compare locality and cost.
Usage: .venv/bin/python bench/bench_flux_presets.py [--steps 4] [--seeds 3]
"""
from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--depth", type=int, default=4, help="double blocks of the tiny model")
    ap.add_argument("--single", type=int, default=8, help="single blocks of the tiny model")
    ap.add_argument("--qk-scale", type=float, default=6.0, help="QK-norm scale (attention locality)")
    args = ap.parse_args(argv)
    from support.comfy_env import import_comfy
    import_comfy()
    import torch

    import comfy.utils
    from support import tiny_flux
    from freecure_core.comfy_bridge import sampling as S
    from freecure_core.fasa.config import FASAConfig
    comfy.utils.PROGRESS_BAR_ENABLED = False
    base_cfg = tiny_flux.unet_config

    def cfg_override(g=True):
        return dict(base_cfg(g), depth=args.depth, depth_single_blocks=args.single)
    tiny_flux.unet_config = cfg_override
    model = tiny_flux.build_tiny_flux(0)
    # trained FLUX attention is largely local; random weights are not. Sharpen the QK-norm scales so RoPE's positional
    # similarity dominates the logits (each token attends mostly near its own place), as locality needs.
    with torch.no_grad():
        for name, p in model.model.diffusion_model.named_parameters():
            if name.endswith(("query_norm.scale", "key_norm.scale")):
                p.fill_(args.qk_scale)
    h, w = 16, 16
    mask = torch.zeros(1, h * 8, w * 8)
    mask[:, :h * 4, :w * 4] = 1
    inside = torch.zeros(h, w, dtype=torch.bool)
    inside[:h // 2, :w // 2] = True
    half_d, half_s = args.depth // 2, args.single // 2
    candidates = {
        "single (the FLUX preset)": "single", "double": "double", "all": "all",
        f"single:{half_s}-{args.single - 1} (late singles)": f"single:{half_s}-{args.single - 1}",
        f"single:0-{half_s - 1} (early singles)": f"single:0-{half_s - 1}",
        f"double:{half_d}-{args.depth - 1}, single (late half)": f"double:{half_d}-{args.depth - 1}, single",
    }
    print(f"tiny FLUX: {args.depth} double + {args.single} single blocks, hidden 128; latent {h}x{w}, {args.steps} "
          f"steps, omega 2, mask = top-left quarter; mean over {args.seeds} seeds")
    print(f"{'blocks':<40}{'move_in':>10}{'move_out':>10}{'in/out':>8}{'calls':>7}{'record':>10}")
    for name, layers in candidates.items():
        mi = mo = 0.0
        calls = nbytes = 0
        for seed in range(args.seeds):
            pos, neg, fd_pos = (tiny_flux.flux_conditioning(s + 10 * seed) for s in (1, 2, 3))
            lat = {"samples": torch.zeros(1, 16, h, w)}
            fd, kv = S.sample_foundation(model, fd_pos, neg, lat, seed, args.steps, 1.0, "euler", "simple", 1.0,
                                         record="cond", layers=layers)
            fasa = FASAConfig(mask=mask, omega=2.0, layers=layers)
            plain = S.sample_freecure(model, model, pos, neg, fd_pos, neg, lat, seed, args.steps, 1.0, "euler",
                                      "simple", 1.0, FASAConfig(mask=mask * 0, layers=layers), kv)[0]["samples"]
            pd, _, rep = S.sample_freecure(model, model, pos, neg, fd_pos, neg, lat, seed, args.steps, 1.0, "euler",
                                           "simple", 1.0, fasa, kv)
            f, p0, p1 = fd["samples"][0], plain[0], pd["samples"][0]
            mi += float((p0 - f).abs()[:, inside].mean() - (p1 - f).abs()[:, inside].mean())
            mo += float((p0 - f).abs()[:, ~inside].mean() - (p1 - f).abs()[:, ~inside].mean())
            calls, nbytes = rep["fasa_calls"], kv.nbytes()
        mi, mo = mi / args.seeds, mo / args.seeds
        ratio = mi / abs(mo) if mo else float("inf")
        print(f"{name:<40}{mi:>10.4f}{mo:>10.4f}{ratio:>8.2f}{calls:>7}{nbytes / 2 ** 20:>8.2f}MB")


if __name__ == "__main__":
    main()
