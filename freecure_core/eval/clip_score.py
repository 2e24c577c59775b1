"""Prompt consistency (PC = CLIP-T) and CLIP zero-shot probabilities from a local Hugging Face CLIP folder.

The folder is what ``CLIPModel.save_pretrained`` plus its tokenizer write (e.g. openai/clip-vit-large-patch14 or
clip-vit-base-patch32 downloaded once by the user): ``config.json``, ``model.safetensors`` (or
``pytorch_model.bin``, read with weights_only), ``vocab.json`` + ``merges.txt`` (or ``tokenizer.json``), and
optionally ``preprocessor_config.json``. Nothing is downloaded: everything is read with local_files_only.

CLIP-T of an image and a text = 100 × max(cos(image embedding, text embedding), 0), the usual definition
(the papers report it in %). Images are RGB uint8 numpy arrays (H, W, 3).
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
FOLDER_HINT = ("a CLIP folder as Hugging Face stores it (config.json, model.safetensors, vocab.json, merges.txt), "
               "e.g. openai/clip-vit-large-patch14, in ComfyUI/models/clip_eval/<name>/")


def check_folder(folder) -> pathlib.Path:
    """The folder as a Path; FileNotFoundError naming what is missing."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"FreeCure: CLIP folder {folder} not found; put {FOLDER_HINT}")
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not any((folder / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES))
    if not any(all((folder / f).is_file() for f in group) for group in TOKENIZER_FILES):
        missing.append("vocab.json + merges.txt (or tokenizer.json)")
    if missing:
        raise FileNotFoundError(f"FreeCure: the CLIP folder {folder} has no {', no '.join(missing)}; it must hold "
                                f"{FOLDER_HINT}")
    return folder


def _load_state(folder: pathlib.Path) -> dict:
    from ..safe_load import load_safetensors, refusal_reason, torch_load_weights
    if (folder / "model.safetensors").is_file():
        return load_safetensors(folder / "model.safetensors", "CLIP")
    path = folder / "pytorch_model.bin"
    try:
        return torch_load_weights(path)
    except Exception as exc:
        raise ValueError(f"FreeCure: {path} was refused: {refusal_reason(exc)}") from exc


def preprocess(images, size: int, mean=OPENAI_MEAN, std=OPENAI_STD) -> torch.Tensor:
    """(N, 3, size, size) float32 CLIP input: shortest side resized to `size` (bicubic, antialiased), centre
    crop, scaled to 0..1 and normalised with mean/std."""
    out = []
    for img in images:
        img = np.asarray(img)
        if img.ndim != 3 or img.shape[-1] != 3:
            raise ValueError(f"FreeCure: expected RGB images (H, W, 3), got shape {img.shape}")
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float()
        if img.dtype == np.uint8:
            x = x / 255.0
        h, w = x.shape[-2:]
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - size) // 2, (nw - size) // 2
        out.append(x[..., top:top + size, left:left + size])
    x = torch.cat(out)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / sd


class ClipScorer:
    """A CLIP model (transformers CLIPModel) with its tokenizer and preprocessing."""

    def __init__(self, model, tokenizer, size: int, mean=OPENAI_MEAN, std=OPENAI_STD, name: str = "CLIP"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.size = int(size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.name = name
        self.max_length = int(getattr(model.config.text_config, "max_position_embeddings", 77))

    @classmethod
    def load(cls, folder, device: str = "cpu") -> "ClipScorer":
        """Load a CLIP folder (see the module docstring); errors name missing or damaged files."""
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel
        folder = check_folder(folder)
        try:
            config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise ValueError(f"FreeCure: {folder}/config.json is not a CLIP config ({exc}); {FOLDER_HINT}") from exc
        model = CLIPModel(config)
        state = _load_state(folder)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"FreeCure: {folder} does not hold the CLIP model its config.json describes: "
                             f"{len(missing)} weights missing (e.g. {missing[0]}); {FOLDER_HINT}")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        size, mean, std = config.vision_config.image_size, OPENAI_MEAN, OPENAI_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean, std = cfg.get("image_mean", mean), cfg.get("image_std", std)
            crop = cfg.get("crop_size", size)
            size = crop.get("height", size) if isinstance(crop, dict) else int(crop)
        return cls(model.to(device), tokenizer, size, mean, std, folder.name)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        """(N, D) unit image embeddings (vision tower pooled output through the visual projection)."""
        x = preprocess(images, self.size, self.mean, self.std).to(self.device, next(self.model.parameters()).dtype)
        pooled = self.model.vision_model(pixel_values=x).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts) -> torch.Tensor:
        """(N, D) unit text embeddings (text tower pooled output through the text projection); texts longer
        than the model's context are truncated, as CLIP-T implementations do."""
        tok = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt")
        out = self.model.text_model(input_ids=tok["input_ids"].to(self.device),
                                    attention_mask=tok["attention_mask"].to(self.device))
        return F.normalize(self.model.text_projection(out.pooler_output).float(), dim=-1)

    def text_image(self, images, texts) -> np.ndarray:
        """(N,) cosine of image i with text i (one text for all images if a single text is given)."""
        images = list(images)
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) == 1 and len(images) > 1:
            texts = texts * len(images)
        if len(texts) != len(images):
            raise ValueError(f"FreeCure: {len(images)} images but {len(texts)} prompts; give one prompt, or one per "
                             "image")
        return (self.image_features(images) * self.text_features(texts)).sum(-1).cpu().numpy().astype(np.float64)

    def clip_t(self, images, texts) -> np.ndarray:
        """(N,) CLIP-T scores: 100 × max(cosine, 0)."""
        return clip_t_from_cosine(self.text_image(images, texts))

    @torch.no_grad()
    def zero_shot(self, image, labels) -> np.ndarray:
        """(len(labels),) softmax over labels of logit_scale × cosine(image, label text)."""
        labels = list(labels)
        if len(labels) < 2:
            raise ValueError("FreeCure: zero-shot classification needs at least two labels")
        cos = self.image_features([image]) @ self.text_features(labels).T
        logits = self.model.logit_scale.exp().float() * cos[0]
        return torch.softmax(logits, dim=-1).cpu().numpy().astype(np.float64)


def clip_t_from_cosine(cos) -> np.ndarray:
    """CLIP-T in % from cosines: 100 × max(cos, 0)."""
    return 100.0 * np.maximum(np.asarray(cos, dtype=np.float64), 0.0)
