"""A tiny diffusers SDXL folder for the training tests: the real SDXL UNet block structure (DownBlock2D +
2 CrossAttnDownBlock2D with 2 and 10 transformer layers, mid block with 10, so 70 attn2 layers in diffusers order)
at tiny widths (32/64/128, cross-attention 64 = the tiny ComfyUI SDXL's context width, so an adapter trained on it
runs on tests/support/tiny_models.build_tiny_sdxl), two tiny CLIP text encoders (32 + 32 = 64 wide context, the
second with a 64-wide projection for the pooled output) with the real CLIP tokenizer files ComfyUI ships, a tiny
VAE (downsampling 8) and SDXL's DDPM scheduler config. Seeded; saved with save_pretrained."""
from __future__ import annotations

import pathlib
import shutil

import torch

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def make_tiny_sdxl_folder(folder, seed: int = 0) -> pathlib.Path:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from support.comfy_env import comfy_root
    folder = pathlib.Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(2, 2, 4), cross_attention_dim=64,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=64 + 6 * 8, norm_num_groups=8)
    unet.save_pretrained(str(folder / "unet"))
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    CLIPTextModel(CLIPTextConfig(**text)).save_pretrained(str(folder / "text_encoder"))
    CLIPTextModelWithProjection(CLIPTextConfig(**text, projection_dim=64)).save_pretrained(str(folder / "text_encoder_2"))
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
                  norm_num_groups=4, sample_size=64, scaling_factor=0.13025).save_pretrained(str(folder / "vae"))
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  prediction_type="epsilon").save_pretrained(str(folder / "scheduler"))
    src = comfy_root() / "comfy" / "sd1_tokenizer"
    for sub in ("tokenizer", "tokenizer_2"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            shutil.copyfile(src / name, folder / sub / name)
    return folder
