"""`python -m freecure_core.train.fit`: CrossFaceID-style fine-tuning of InstantID on SDXL (diffusers + accelerate).

    accelerate launch [--config_file docs/accelerate_multi_gpu.yaml] -m freecure_core.train.fit \\
        --sdxl DIR --pairs OUT/train.jsonl --output DIR [--pretrained-adapter ip-adapter.bin]
        [--controlnet IdentityNet_DIR] [--adapter-only] [--resolution 1024] [--lr 1e-5] [--batch-size 1]
        [--gradient-accumulation 1] [--mixed-precision no|fp16|bf16] [--gradient-checkpointing]
        [--max-steps N | --epochs E] [--checkpoint-every 1000] [--keep-checkpoints 3] [--resume latest|DIR]
        [--ema 0.9999] [--sample-every N --sample-pairs OUT/heldout.jsonl] [--seed 0]
        [--face-drop 0.05 --text-drop 0.05 --both-drop 0.05]

What is trained (as InstantID's trainer, whose recipe CrossFaceID reuses): the Resampler (image projection), the
70 attn2 adapters (to_k_ip / to_v_ip) and, unless --adapter-only, the IdentityNet ControlNet. The UNet, the VAE
and both text encoders stay frozen. Loss: MSE of the UNet's prediction (epsilon or v, from the scheduler config)
at a uniform random timestep; the UNet's context is [text tokens; 16 face tokens]; the ControlNet sees only the
face tokens and the target's keypoint map; SDXL micro-conditioning from the target's size and crop.

Differences from the reference script (docs/training.md): a final save always happens; checkpoints hold only the
trained parts, the optimizer and the step (not the frozen UNet), keep the newest --keep-checkpoints, and
--resume continues from the saved step with the same data order; the pairs come from ``prepare`` (cross pairs,
not same-image pairs); EMA and gradient checkpointing are options; no CLIP image encoder is loaded.

Output: ``<output>/instantid_adapter.safetensors`` (+ ``ip-adapter.bin`` with --save-bin) for models/instantid/,
``<output>/controlnet/`` (diffusers folder) for models/controlnet/, ``checkpoint-<step>/``, ``samples/``,
``train_log.jsonl`` (step, loss, lr).
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import PairDataset, collate, read_pairs
from .export import save_adapter, save_controlnet
from .model import InstantIDTrainable, install_adapters, new_resampler

ADAPTER_FILE = "instantid_adapter.safetensors"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m freecure_core.train.fit", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdxl", required=True, help="diffusers SDXL folder (unet, vae, text_encoder(_2), tokenizer(_2), "
                    "scheduler)")
    ap.add_argument("--pairs", required=True, help="train.jsonl from python -m freecure_core.train.prepare")
    ap.add_argument("--output", required=True)
    ap.add_argument("--pretrained-adapter", help="start from InstantX ip-adapter.bin (or a CrossFaceID file)")
    ap.add_argument("--controlnet", help="start from this diffusers IdentityNet folder (default: a copy of the UNet)")
    ap.add_argument("--adapter-only", action="store_true", help="keep the ControlNet frozen (less memory)")
    ap.add_argument("--resolution", type=int, default=1024, help="1024 (default); 512 = the CrossFaceID script")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--gradient-accumulation", type=int, default=1)
    ap.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many optimizer steps (0 = epochs)")
    ap.add_argument("--checkpoint-every", type=int, default=1000)
    ap.add_argument("--keep-checkpoints", type=int, default=3)
    ap.add_argument("--resume", help="'latest' or a checkpoint folder")
    ap.add_argument("--ema", type=float, default=0.0, help="EMA decay of the trained weights (0 = off)")
    ap.add_argument("--sample-every", type=int, default=0, help="write sample images every N steps (0 = off)")
    ap.add_argument("--sample-pairs", help="pairs to sample from (default: the first training pairs)")
    ap.add_argument("--sample-count", type=int, default=2)
    ap.add_argument("--sample-steps", type=int, default=20)
    ap.add_argument("--face-drop", type=float, default=0.05)
    ap.add_argument("--text-drop", type=float, default=0.05)
    ap.add_argument("--both-drop", type=float, default=0.05)
    ap.add_argument("--ip-scale", type=float, default=1.0)
    ap.add_argument("--resampler-dim", type=int, default=1280, help="new Resampler width (InstantID: 1280)")
    ap.add_argument("--resampler-depth", type=int, default=4)
    ap.add_argument("--resampler-heads", type=int, default=20)
    ap.add_argument("--save-bin", action="store_true", help="also write ip-adapter.bin (cubiq's loader reads it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-workers", type=int, default=0)
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------------ models
class SDXLParts:
    """The frozen SDXL pieces from a diffusers folder (local files only)."""

    def __init__(self, folder, weight_dtype=torch.float32):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
        folder = str(folder)
        kw = {"local_files_only": True}
        self.scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", **kw)
        self.tokenizers = [CLIPTokenizer.from_pretrained(folder, subfolder=s, **kw) for s in ("tokenizer", "tokenizer_2")]
        self.text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", **kw)
        self.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(folder, subfolder="text_encoder_2", **kw)
        self.vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", **kw)  # kept fp32, as InstantID trains
        self.unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", **kw)
        for m in (self.text_encoder, self.text_encoder_2, self.vae, self.unet):
            m.requires_grad_(False).eval()
        for m in (self.text_encoder, self.text_encoder_2, self.unet):
            m.to(weight_dtype)

    def to(self, device):
        for m in (self.text_encoder, self.text_encoder_2, self.vae, self.unet):
            m.to(device)
        return self

    @torch.no_grad()
    def encode_text(self, captions) -> tuple[torch.Tensor, torch.Tensor]:
        """SDXL text conditioning: penultimate hidden states of both encoders concatenated (B, 77, C), and the second
        encoder's projected pooled output (B, P)."""
        device = self.text_encoder.device
        states = []
        for tok, enc in zip(self.tokenizers, (self.text_encoder, self.text_encoder_2)):
            length = min(tok.model_max_length, enc.config.max_position_embeddings)
            ids = tok(list(captions), padding="max_length", max_length=length, truncation=True,
                      return_tensors="pt").input_ids.to(device)
            out = enc(ids, output_hidden_states=True)
            states.append(out.hidden_states[-2])
        return torch.cat(states, dim=-1), out.text_embeds

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        latents = self.vae.encode(pixel_values.to(self.vae.device, self.vae.dtype)).latent_dist.sample()
        return latents * self.vae.config.scaling_factor


class TrainingModel(nn.Module):
    """Frozen UNet + trained parts; forward = one denoising prediction, so DDP sees every trained parameter used."""

    def __init__(self, unet, trainable: InstantIDTrainable):
        super().__init__()
        self.unet = unet
        self.trainable = trainable

    def forward(self, noisy, timesteps, text, pooled, time_ids, face_embed, kps_image):
        face = self.trainable.face_tokens(face_embed).to(text.dtype)
        added = {"text_embeds": pooled, "time_ids": time_ids.to(text.dtype)}
        extra = {}
        cn = self.trainable.controlnet
        if cn is not None:
            down, mid = cn(noisy, timesteps, encoder_hidden_states=face, controlnet_cond=kps_image.to(noisy.dtype),
                           added_cond_kwargs=added, return_dict=False)
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        return self.unet(noisy, timesteps, encoder_hidden_states=torch.cat([text, face], dim=1),
                         added_cond_kwargs=added, **extra).sample


def build_trainable(parts: SDXLParts, args) -> InstantIDTrainable:
    """Resampler, adapters (from --pretrained-adapter when given) and the ControlNet (None with --adapter-only and
    no --controlnet; frozen with --adapter-only)."""
    from diffusers import ControlNetModel
    unet = parts.unet
    cross = unet.config.cross_attention_dim
    controlnet = None  # made before the adapters go into the UNet (from_unet copies the UNet's modules)
    if args.controlnet:
        controlnet = ControlNetModel.from_pretrained(args.controlnet, local_files_only=True)
    elif not args.adapter_only:
        controlnet = ControlNetModel.from_unet(unet, conditioning_channels=3)
    adapters = install_adapters(unet, num_tokens=16, scale=args.ip_scale)
    if args.pretrained_adapter:
        from ..identity.instantid_weights import load_instantid
        w = load_instantid(args.pretrained_adapter)
        resampler = new_resampler(cross, **{k: v for k, v in w.resampler.config.items() if k != "output_dim"})
        resampler.load_state_dict(w.resampler.state_dict())
        ips = [m for m in adapters if not isinstance(m, nn.Identity)]
        if len(ips) != w.num_layers:
            raise ValueError(f"FreeCure: {args.pretrained_adapter} has {w.num_layers} attention layers, the UNet "
                             f"{len(ips)}")
        with torch.no_grad():
            for m, k, v in zip(ips, w.to_k_ip, w.to_v_ip):
                m.to_k_ip.weight.copy_(k.float())
                m.to_v_ip.weight.copy_(v.float())
        for m in ips:
            m.num_tokens = w.num_tokens
    else:
        resampler = new_resampler(cross, dim=args.resampler_dim, depth=args.resampler_depth,
                                  heads=args.resampler_heads)
    if controlnet is not None:
        controlnet.requires_grad_(not args.adapter_only)
        controlnet.train(not args.adapter_only)
    return InstantIDTrainable(resampler, adapters, controlnet)


# ------------------------------------------------------------------------------------------ checkpoints
def trained_state(trainable: InstantIDTrainable) -> dict[str, torch.Tensor]:
    """The trained parts' tensors (Resampler, adapters, ControlNet), CPU, contiguous."""
    return {k: v.detach().cpu().contiguous() for k, v in trainable.state_dict().items()}


def save_checkpoint(out: pathlib.Path, step: int, epoch: int, trainable, optimizer, ema, keep: int) -> pathlib.Path:
    """checkpoint-<step>/: trainable.safetensors, optimizer.pt, rng.pt, ema.safetensors (if any), state.json; older
    checkpoints beyond `keep` removed."""
    from safetensors.torch import save_file
    folder = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trained_state(trainable), str(tmp / "trainable.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if ema is not None:
        save_file({k: v.contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
    torch.save(torch.get_rng_state(), tmp / "rng.pt")  # noise and timesteps continue as without the interruption
    (tmp / "state.json").write_text(json.dumps({"step": step, "epoch": epoch}) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    for old in sorted(checkpoints(out))[:-keep] if keep > 0 else []:
        shutil.rmtree(old[1], ignore_errors=True)
    return folder


def checkpoints(out: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    """(step, folder) of the finished checkpoints in `out`."""
    found = []
    for p in out.glob("checkpoint-*"):
        if p.is_dir() and (p / "state.json").is_file():
            try:
                found.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                pass
    return sorted(found)


def load_checkpoint(folder: pathlib.Path, trainable, optimizer) -> tuple[int, int, dict | None]:
    """Restore a checkpoint; returns (step, epoch, ema state or None)."""
    from safetensors.torch import load_file
    trainable.load_state_dict(load_file(str(folder / "trainable.safetensors")))
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    ema = load_file(str(folder / "ema.safetensors")) if (folder / "ema.safetensors").is_file() else None
    if (folder / "rng.pt").is_file():
        torch.set_rng_state(torch.load(folder / "rng.pt", weights_only=True))
    state = json.loads((folder / "state.json").read_text())
    return int(state["step"]), int(state["epoch"]), ema


# ------------------------------------------------------------------------------------------ sampling
@torch.no_grad()
def sample_images(parts: SDXLParts, model: TrainingModel, rows, resolution: int, steps: int, seed: int,
                  cfg: float = 5.0) -> list[np.ndarray]:
    """Images for the first rows' captions, ID embeddings and keypoints (Euler, CFG with empty caption and zero
    face as the negative), RGB uint8."""
    from diffusers import EulerDiscreteScheduler
    ds = PairDataset(rows, resolution, 0.0, 0.0, 0.0)
    sched = EulerDiscreteScheduler.from_config(parts.scheduler.config)
    sched.set_timesteps(steps)
    device = next(model.parameters()).device
    dtype = parts.unet.dtype
    out = []
    for i in range(len(rows)):
        item = ds[i]
        text, pooled = parts.encode_text([item["caption"], ""])
        g = torch.Generator().manual_seed(seed + i)
        lat_hw = resolution // (2 ** (len(parts.vae.config.block_out_channels) - 1))
        x = torch.randn(1, parts.unet.config.in_channels, lat_hw, lat_hw, generator=g).to(device) * sched.init_noise_sigma
        face = torch.stack([item["face_embed"], torch.zeros_like(item["face_embed"])]).to(device)
        kps = item["kps_image"][None].repeat(2, 1, 1, 1).to(device)
        tids = item["time_ids"][None].repeat(2, 1).to(device)
        for t in sched.timesteps:
            inp = sched.scale_model_input(torch.cat([x, x]), t).to(dtype)
            pred = model(inp, t.to(device), text.to(dtype), pooled.to(dtype), tids, face, kps).float()
            cond, uncond = pred.chunk(2)
            x = sched.step(uncond + cfg * (cond - uncond), t, x).prev_sample
        img = parts.vae.decode(x.to(parts.vae.dtype) / parts.vae.config.scaling_factor).sample
        out.append(((img[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy())
    return out


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    args = parse_args(argv)
    out = pathlib.Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(gradient_accumulation_steps=args.gradient_accumulation, mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    parts = SDXLParts(args.sdxl, weight_dtype).to(acc.device)
    trainable = build_trainable(parts, args)
    if args.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        if trainable.controlnet is not None:
            trainable.controlnet.enable_gradient_checkpointing()
    model = TrainingModel(parts.unet, trainable)
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    rows = read_pairs(args.pairs)
    dataset = PairDataset(rows, args.resolution, args.face_drop, args.text_drop, args.both_drop, args.seed)
    step, epoch, ema = 0, 0, None
    if args.resume:
        found = checkpoints(out)
        folder = found[-1][1] if args.resume == "latest" and found else (
            pathlib.Path(args.resume) if args.resume != "latest" else None)
        if folder is not None:
            step, epoch, ema = load_checkpoint(folder, trainable, optimizer)
            acc.print(f"resumed from {folder} at step {step}")
        else:
            acc.print(f"--resume latest: no checkpoint in {out}; starting at step 0")
    if args.ema and ema is None:
        ema = {k: v.detach().float().cpu().clone() for k, v in trainable.state_dict().items()}
    loader_gen = torch.Generator().manual_seed(args.seed)
    steps_per_epoch = math.ceil(len(dataset) / (args.batch_size * args.gradient_accumulation * acc.num_processes))
    max_steps = args.max_steps or args.epochs * steps_per_epoch
    model, optimizer = acc.prepare(model, optimizer)
    sample_rows = read_pairs(args.sample_pairs)[:args.sample_count] if args.sample_pairs else rows[:args.sample_count]
    log = open(out / "train_log.jsonl", "a", encoding="utf-8")
    from tqdm import tqdm
    bar = tqdm(total=max_steps, initial=step, desc="fit", disable=not acc.is_local_main_process)
    pred_type = parts.scheduler.config.prediction_type
    trained = acc.unwrap_model(model).trainable
    while step < max_steps:
        dataset.epoch = epoch
        loader_gen.manual_seed(args.seed + epoch)
        order = torch.randperm(len(dataset), generator=loader_gen).tolist()  # the same order when resuming
        skip = max(0, step - epoch * steps_per_epoch) * args.gradient_accumulation * args.batch_size
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, order[skip:]), batch_size=args.batch_size,
                                             shuffle=False, collate_fn=collate, num_workers=args.num_workers,
                                             generator=loader_gen)  # never the global RNG: resume stays exact
        loader = acc.prepare_data_loader(loader) if acc.num_processes > 1 else loader
        for batch in loader:
            with acc.accumulate(model):
                latents = parts.encode_images(batch["pixel_values"].to(acc.device)).to(weight_dtype)
                noise = torch.randn_like(latents)
                t = torch.randint(0, parts.scheduler.config.num_train_timesteps, (latents.shape[0],),
                                  device=latents.device)
                noisy = parts.scheduler.add_noise(latents, noise, t)
                text, pooled = parts.encode_text(batch["caption"])
                with acc.autocast():
                    pred = model(noisy, t, text.to(weight_dtype), pooled.to(weight_dtype),
                                 batch["time_ids"].to(acc.device), batch["face_embed"].to(acc.device),
                                 batch["kps_image"].to(acc.device))
                target = noise if pred_type == "epsilon" else parts.scheduler.get_velocity(latents, noise, t)
                loss = F.mse_loss(pred.float(), target.float())
                acc.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            if not acc.sync_gradients:
                continue
            step += 1
            bar.update(1)
            if ema is not None:
                with torch.no_grad():
                    for k, v in trained.state_dict().items():
                        ema[k].mul_(args.ema).add_(v.detach().float().cpu(), alpha=1 - args.ema)
            log.write(json.dumps({"step": step, "epoch": epoch, "loss": float(loss), "lr": args.lr}) + "\n")
            log.flush()
            if acc.is_main_process and args.checkpoint_every and step % args.checkpoint_every == 0:
                save_checkpoint(out, step, epoch, trained, optimizer, ema, args.keep_checkpoints)
            if acc.is_main_process and args.sample_every and step % args.sample_every == 0:
                from PIL import Image
                (out / "samples").mkdir(exist_ok=True)
                for j, img in enumerate(sample_images(parts, acc.unwrap_model(model), sample_rows, args.resolution,
                                                      args.sample_steps, args.seed)):
                    Image.fromarray(img).save(out / "samples" / f"step-{step:06d}_{j}.png")
            if step >= max_steps:
                break
        else:
            epoch += 1
    bar.close()
    log.close()
    acc.wait_for_everyone()
    if acc.is_main_process:  # the final save the reference script lacks
        save_checkpoint(out, step, epoch, trained, optimizer, ema, args.keep_checkpoints)
        if ema is not None:
            trained.load_state_dict({k: v.to(dtype=trained.state_dict()[k].dtype) for k, v in ema.items()})
        written = save_adapter(trained, out / ADAPTER_FILE, also_bin=args.save_bin)
        if trained.controlnet is not None and not args.adapter_only:
            written.append(save_controlnet(trained.controlnet, out / "controlnet"))
        acc.print(f"step {step}: wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
