"""Tiny evaluation models in the real file layouts: a CLIP folder (transformers CLIPModel, save_pretrained, with the
real OpenAI CLIP BPE tokenizer files that ComfyUI ships in comfy/sd1_tokenizer) and a joined LPIPS file (torchvision
AlexNet trunk keys + lpips' lin heads) with seeded random weights."""
from __future__ import annotations

import pathlib
import shutil

import torch

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_clip(folder, seed: int = 0, image_size: int = 32) -> pathlib.Path:
    """A CLIP folder: 2-layer 32-wide text and vision towers, projection 16, the real 49408-token vocabulary."""
    from transformers import CLIPConfig, CLIPModel

    from support.comfy_env import comfy_root
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                         pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    src = comfy_root() / "comfy" / "sd1_tokenizer"
    for name in TOKENIZER_FILES:
        shutil.copyfile(src / name, folder / name)
    return folder


def make_tiny_lpips(path, seed: int = 0) -> pathlib.Path:
    """A joined LPIPS .safetensors: AlexNet-shaped trunk (random) and non-negative lin heads, as LPIPS has."""
    from safetensors.torch import save_file

    from freecure_core.eval.face_diversity import LIN_KEYS, Lpips
    torch.manual_seed(seed)
    net = Lpips()
    state = {f"features.{k}": v.contiguous() for k, v in net.features.state_dict().items()}
    for i, lin in enumerate(net.lins):
        state[LIN_KEYS[i]] = lin.weight.detach().abs().contiguous()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
