"""`make demo`: the whole FreeCure pipeline on an embedded tiny model, in an in-process ComfyUI.

Stage 1 samples the foundation branch (FD) and records its attention inputs; stage 2 (until the face
parser exists) uses a drawn region as the attribute mask; stage 3 samples the personalized branch
(PD) with FASA by replay, and again in lockstep and without FASA for comparison. Writes PNGs and a
JSON report. The tiny model has random weights, so the pictures are noise-like: the demo shows the
plumbing, the invariants and the costs, not image quality.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.comfy_env import import_comfy  # noqa: E402

import_comfy()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import comfy.sd  # noqa: E402
import nodes as comfy_nodes  # noqa: E402
from support import tiny_models  # noqa: E402
from support.pack_loader import pack_nodes  # noqa: E402

PD_PROMPT = "a photo of a woman with blonde curly hair, wearing sunglasses"
FD_PROMPT = "a photo of a woman with blonde curly hair, wearing sunglasses"
NEGATIVE = "blurry, low quality"


def save_image(images: torch.Tensor, path: pathlib.Path) -> str:
    """Save an IMAGE (B,H,W,3 in 0..1), contrast-stretched for display (random-weight VAE output is dim)."""
    img = images[0].float()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
    Image.fromarray((img.numpy() * 255).round().astype(np.uint8)).save(path)
    return path.name


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="out/demo")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    tiny_models.register_tiny_sd15()
    ckpt = tiny_models.write_tiny_sd15_checkpoint(out / "tiny_sd15.safetensors")
    model, clip, vae = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=True, output_clip=True)[:3]
    encode = lambda text: comfy_nodes.CLIPTextEncode().encode(clip, text)[0]
    pos, fd_pos, neg = encode(PD_PROMPT + ", identity"), encode(FD_PROMPT), encode(NEGATIVE)
    latent = comfy_nodes.EmptyLatentImage().generate(args.width, args.height, 1)[0]
    node = pack_nodes("freecure_pack")
    common = dict(seed=args.seed, steps=args.steps, cfg=6.0, sampler_name="euler", scheduler="normal",
                  latent_image=latent, denoise=1.0)
    timings, report = {}, {"prompt_pd": PD_PROMPT + ", identity", "prompt_fd": FD_PROMPT, "size": [args.width, args.height],
                           "steps": args.steps, "seed": args.seed}

    t = time.perf_counter()
    fd_latent, kv = node["FreeCureFoundationSampler"].execute(
        model_fd=model, positive=fd_pos, negative=neg, record="cond", layers="reference", custom_layers="",
        store="auto", offload_kv=True, **common).result
    timings["stage1_foundation_s"] = time.perf_counter() - t
    fd_image = vae.decode(fd_latent["samples"])

    # Stage 2 stand-in: a drawn region over the top of the head (hair) until face parsing lands.
    mask = torch.zeros(1, args.height, args.width)
    mask[:, : args.height * 3 // 8, args.width // 4: args.width * 3 // 4] = 1
    fasa = node["FreeCureFASAConfig"].execute(mask=mask, omega=-1.0, layers="reference", custom_layers="",
                                              start_percent=0.0, end_percent=1.0, uncond_blend=0.0,
                                              mask_resample="nearest").result[0]
    empty = node["FreeCureFASAConfig"].execute(mask=torch.zeros_like(mask), omega=-1.0, layers="reference",
                                               custom_layers="", start_percent=0.0, end_percent=1.0,
                                               uncond_blend=0.0, mask_resample="nearest").result[0]
    pair = dict(model_pd=model, model_fd=model, positive=pos, negative=neg, fd_positive=fd_pos, fd_negative=neg)

    t = time.perf_counter()
    pd_replay = node["FreeCureSampler"].execute(fasa=fasa, kv=kv, **pair, **common).result[0]
    timings["stage3_replay_s"] = time.perf_counter() - t
    t = time.perf_counter()
    pd_lockstep, fd_lockstep = node["FreeCureSampler"].execute(fasa=fasa, **pair, **common).result
    timings["stage3_lockstep_s"] = time.perf_counter() - t
    pd_plain = node["FreeCureSampler"].execute(fasa=empty, kv=kv, **pair, **common).result[0]
    t = time.perf_counter()
    ksampler = comfy_nodes.common_ksampler(model, args.seed, args.steps, 6.0, "euler", "normal", pos, neg, latent)[0]
    timings["baseline_ksampler_s"] = time.perf_counter() - t

    files = {
        "fd_image": save_image(fd_image, out / "fd_image.png"),
        "mask": save_image(mask[..., None].expand(-1, -1, -1, 3), out / "mask.png"),
        "pd_with_fasa": save_image(vae.decode(pd_replay["samples"]), out / "pd_with_fasa.png"),
        "pd_without_fasa": save_image(vae.decode(pd_plain["samples"]), out / "pd_without_fasa.png"),
    }
    report.update(
        files=files,
        kv_store=repr(kv),
        timings_s={k: round(v, 3) for k, v in timings.items()},
        checks={
            "pd_without_fasa_bit_identical_to_ksampler": bool(torch.equal(pd_plain["samples"], ksampler["samples"])),
            "lockstep_fd_bit_identical_to_stage1": bool(torch.equal(fd_lockstep["samples"], fd_latent["samples"])),
            "replay_vs_lockstep_max_abs_diff": float((pd_replay["samples"] - pd_lockstep["samples"]).abs().max()),
            "fasa_changes_pd_mean_abs": float((pd_replay["samples"] - pd_plain["samples"]).abs().mean()),
        },
        total_s=round(time.perf_counter() - t0, 2),
    )
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ok = report["checks"]
    if not (ok["pd_without_fasa_bit_identical_to_ksampler"] and ok["lockstep_fd_bit_identical_to_stage1"]
            and ok["replay_vs_lockstep_max_abs_diff"] < 1e-4 and ok["fasa_changes_pd_mean_abs"] > 0):
        sys.exit("demo: an invariant failed, see the report")


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs nodes
        main()
