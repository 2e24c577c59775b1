"""Identify and convert the model files FreeCure uses to safetensors (optionally fp16).

    python -m freecure_core.convert info FILE [FILE ...]
    python -m freecure_core.convert FILE OUT.safetensors [--fp16]

Recognised: the BiSeNet face parser (79999_iter.pth layout), SAM checkpoints, InstantID / CrossFaceID
adapters (`ip-adapter.bin`: image_proj + ip_adapter, stored flat as `image_proj.*` / `ip_adapter.*`, the
layout InstantID loaders read from .safetensors) and ControlNets (diffusers or original layout, e.g.
InstantID's IdentityNet). `.bin/.pth/.pt` files are read with weights_only=True: no code in them runs.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import torch

from .safe_load import load_safetensors, refusal_reason, torch_load_weights

KINDS = ("bisenet-face-parsing", "sam", "instantid-adapter", "controlnet-diffusers", "controlnet-original")


@dataclass
class FileReport:
    """What a checkpoint is: kind ('unknown' if not recognised), details, size."""
    kind: str
    details: dict = field(default_factory=dict)
    tensors: int = 0
    parameters: int = 0
    dtypes: tuple[str, ...] = ()

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.details.items())
        return (f"{self.kind}: {self.tensors} tensors, {self.parameters / 1e6:.2f} M parameters, "
                f"dtypes {'/'.join(self.dtypes)}" + (f"; {extra}" if extra else ""))


def _flatten(obj, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif torch.is_tensor(value):
            out[name] = value
        else:
            raise ValueError(f"FreeCure: entry {name!r} is a {type(value).__name__}, not a tensor")
    return out


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors / .bin / .pth / .pt file, nested dicts flattened with '.'."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FreeCure: no such file: {path}")
    if path.lower().endswith(".safetensors"):
        return load_safetensors(path)
    try:
        obj = torch_load_weights(path)
    except Exception as exc:  # pickles with code (refused by weights_only), or not a torch file
        raise ValueError(f"FreeCure: refusing {path}: it cannot be read safely with torch.load(weights_only=True) "
                         f"({refusal_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"FreeCure: {path} holds a {type(obj).__name__}, not a dict of tensors")
    return _flatten(obj)


def _has(state, *prefixes) -> bool:
    return all(any(k.startswith(p) for k in state) for p in prefixes)


def identify(state: dict[str, torch.Tensor]) -> FileReport:
    """Which of KINDS a flat state dict is, with the details that matter for loading it."""
    report = FileReport(kind="unknown", tensors=len(state), parameters=sum(t.numel() for t in state.values()),
                        dtypes=tuple(sorted({str(t.dtype).replace("torch.", "") for t in state.values()})))
    if _has(state, "cp.resnet.", "ffm.", "conv_out."):
        from .parsing.bisenet import check_bisenet_state_dict
        check_bisenet_state_dict(state)
        report.kind = "bisenet-face-parsing"
        report.details["classes"] = int(state["conv_out.conv_out.weight"].shape[0])
    elif _has(state, "image_encoder.", "prompt_encoder.", "mask_decoder."):
        from .parsing.sam import infer_config
        report.kind = "sam"
        report.details["encoder"] = infer_config(state).name
    elif _has(state, "image_proj.", "ip_adapter."):
        from .identity.instantid_weights import check_adapter_keys, split_instantid_state_dict, validate_instantid_state_dict
        image_proj, ip_adapter = split_instantid_state_dict(state)
        validate_instantid_state_dict(image_proj, ip_adapter)
        layers, width = check_adapter_keys(image_proj, ip_adapter)
        report.kind = "instantid-adapter"
        report.details["cross_attention_dim"] = width
        report.details["attention_layers"] = layers
        latents = state.get("image_proj.latents")
        if latents is not None:
            report.details["image_tokens"] = int(latents.shape[-2])
    elif _has(state, "controlnet_cond_embedding.", "controlnet_down_blocks."):
        report.kind = "controlnet-diffusers"
        report.details["context_dim"] = _context_dim(state)
    elif any(".input_hint_block." in f".{k}" for k in state) and any("zero_convs." in k for k in state):
        report.kind = "controlnet-original"
        report.details["context_dim"] = _context_dim(state)
    return report


def _context_dim(state) -> int | None:
    for key, t in state.items():
        if key.endswith("attn2.to_k.weight"):
            return int(t.shape[1])
    return None


def convert(src: str, dst: str, fp16: bool = False, force: bool = False) -> FileReport:
    """Write `src` as safetensors at `dst` (floating tensors to fp16 when asked); returns what it was."""
    if not dst.lower().endswith(".safetensors"):
        raise ValueError(f"FreeCure: the output must be a .safetensors file, not {dst!r}")
    state = load_tensors(src)
    report = identify(state)
    if report.kind == "unknown" and not force:
        raise ValueError(f"FreeCure: {src} is not a model FreeCure knows ({', '.join(KINDS)}); use --force to "
                         "convert it anyway")
    out = {}
    for key, t in state.items():
        t = t.detach().to("cpu")
        if fp16 and t.is_floating_point():
            t = t.to(torch.float16)
        out[key] = t.contiguous().clone()
    from safetensors.torch import save_file
    save_file(out, dst, metadata={"format": "pt", "freecure_kind": report.kind})
    return report


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["info"]:
        ap = argparse.ArgumentParser(prog="python -m freecure_core.convert info", description="say what files are")
        ap.add_argument("files", nargs="+")
        for path in ap.parse_args(argv[1:]).files:
            print(f"{path}: {identify(load_tensors(path)).describe()}")
        return 0
    ap = argparse.ArgumentParser(prog="python -m freecure_core.convert", description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--fp16", action="store_true", help="store floating-point tensors as fp16")
    ap.add_argument("--force", action="store_true", help="convert files of an unknown kind too")
    args = ap.parse_args(argv)
    report = convert(args.src, args.dst, fp16=args.fp16, force=args.force)
    print(f"wrote {args.dst} ({report.describe()})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FileNotFoundError) as exc:
        sys.exit(str(exc))
