"""Segment Anything (SAM v1) refinement: box or point prompts to a binary mask at image resolution.

Checkpoints are the original segment-anything files, placed in ComfyUI's `models/sams/`:
    sam_vit_b_01ec64.pth   (ViT-B, 375 MB)    sam_vit_l_0b3195.pth   (ViT-L, 1.2 GB)
    sam_vit_h_4b8939.pth   (ViT-H, 2.6 GB)    or the same state dicts saved as .safetensors.
The image-encoder size is read from the state dict, not from the file name (see `infer_config`).
The `segment_anything` package is imported only when a model is loaded, so this module imports without it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from types import SimpleNamespace
from typing import Mapping, Sequence

import numpy as np
import torch

from ..safe_load import load_safetensors, refusal_reason, torch_load_weights

INSTALL_HINT = ("FreeCure SAM Refine needs the segment-anything package in ComfyUI's own Python: run "
                "`python -m pip install segment-anything` with that interpreter (portable build: "
                "`python_embeded\\python.exe -m pip install segment-anything`), then restart ComfyUI.")

# Standard SAM image encoders: embed dim -> (heads, depth, global attention block indexes).
STANDARD_ENCODERS = {768: ("vit_b", 12, 12, (2, 5, 8, 11)), 1024: ("vit_l", 16, 24, (5, 11, 17, 23)),
                     1280: ("vit_h", 16, 32, (7, 15, 23, 31))}
_PIXEL_MEAN = (123.675, 116.28, 103.53)
_PIXEL_STD = (58.395, 57.12, 57.375)
_ENC = "image_encoder."


class SegmentAnythingMissing(ImportError):
    """The segment-anything package is not installed in the running Python."""


def segment_anything_classes() -> SimpleNamespace:
    """The segment_anything classes this module needs, imported on first use; SegmentAnythingMissing with the
    install hint when the package is not installed."""
    try:
        from segment_anything import SamPredictor
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
    except ImportError as e:
        raise SegmentAnythingMissing(f"{INSTALL_HINT} (import failed: {e})") from e
    return SimpleNamespace(SamPredictor=SamPredictor, ImageEncoderViT=ImageEncoderViT, MaskDecoder=MaskDecoder,
                           PromptEncoder=PromptEncoder, Sam=Sam, TwoWayTransformer=TwoWayTransformer)


@dataclass(frozen=True)
class SamConfig:
    """Image-encoder hyperparameters of a SAM checkpoint (prompt encoder and mask decoder are SAM's fixed ones)."""
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    img_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    mlp_ratio: float = 4.0
    out_chans: int = 256
    use_rel_pos: bool = True

    @property
    def name(self) -> str:
        """"vit_b", "vit_l" or "vit_h" for the released models, else a description of the custom size."""
        std = STANDARD_ENCODERS.get(self.embed_dim)
        if std and (self.num_heads, self.depth, self.global_attn_indexes, self.img_size) == (*std[1:], 1024):
            return std[0]
        return f"custom ViT (embed {self.embed_dim}, depth {self.depth}, heads {self.num_heads}, {self.img_size} px)"


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def evenly_spaced_globals(depth: int) -> tuple[int, ...]:
    """Last block of each quarter of the encoder: SAM's own choice for b/l/h (12 -> 2, 5, 8, 11)."""
    return tuple(sorted({(q + 1) * depth // 4 - 1 for q in range(4)} - {-1}))


def infer_config(state: Mapping[str, object]) -> SamConfig:
    """SamConfig from a SAM state dict (tensors or bare shapes), without building anything.

    embed dim and patch size: image_encoder.patch_embed.proj.weight (embed, 3, p, p); depth: the number of
    image_encoder.blocks.N; img_size: pos_embed (1, g, g, embed) -> g * p. With relative positions (all SAM
    releases) each block's attn.rel_pos_h is (2s - 1, head_dim): s == g marks a global-attention block, any
    other s is the window size, and heads = embed / head_dim. Without them, heads come from the b/l/h table
    (embed / 64 for other sizes) and global blocks are evenly spaced (`evenly_spaced_globals`).
    """
    shapes = {k: _shape(v) for k, v in state.items()}
    key = _ENC + "patch_embed.proj.weight"
    if key not in shapes:
        sample = ", ".join(sorted(shapes)[:5]) or "nothing"
        raise ValueError(f"FreeCure: not an original segment-anything (SAM v1) checkpoint: {key} is missing "
                         f"(found {sample} ...). Use sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
                         "sam_vit_h_4b8939.pth; SAM 2, HQ-SAM, MobileSAM and transformers-format SAM differ.")
    embed, _, patch, _ = shapes[key]
    blocks = sorted({int(k.split(".")[2]) for k in shapes if k.startswith(_ENC + "blocks.")})
    if not blocks or blocks != list(range(len(blocks))):
        raise ValueError(f"FreeCure: SAM image-encoder blocks should be numbered 0..N-1, found {blocks[:8]}")
    depth = len(blocks)
    pos = shapes.get(_ENC + "pos_embed")
    grid = pos[1] if pos else 1024 // patch
    lin1 = shapes.get(_ENC + "blocks.0.mlp.lin1.weight")
    mlp_ratio = lin1[0] / embed if lin1 else 4.0
    out_chans = shapes[_ENC + "neck.0.weight"][0] if _ENC + "neck.0.weight" in shapes else 256
    common = dict(embed_dim=embed, depth=depth, img_size=grid * patch, patch_size=patch, mlp_ratio=mlp_ratio,
                  out_chans=out_chans)
    rel = [shapes.get(f"{_ENC}blocks.{i}.attn.rel_pos_h") for i in blocks]
    if all(r is None for r in rel):
        std = STANDARD_ENCODERS.get(embed)
        return SamConfig(num_heads=std[1] if std else max(1, embed // 64),
                         global_attn_indexes=evenly_spaced_globals(depth), use_rel_pos=False, **common)
    if any(r is None for r in rel):
        raise ValueError("FreeCure: this SAM checkpoint has relative positions in some encoder blocks only")
    sizes = [(r[0] + 1) // 2 for r in rel]
    head_dim = rel[0][1]
    if embed % head_dim:
        raise ValueError(f"FreeCure: SAM embed dim {embed} is not a multiple of the head dim {head_dim}")
    windows = {s for s in sizes if s != grid}
    if len(windows) > 1:
        raise ValueError(f"FreeCure: SAM encoder blocks use several window sizes {sorted(windows)}")
    globals_ = tuple(i for i, s in zip(blocks, sizes) if s == grid)
    return SamConfig(num_heads=embed // head_dim, global_attn_indexes=globals_,
                     window_size=windows.pop() if windows else 14, **common)


def build_sam(config: SamConfig, device: str | torch.device = "cpu"):
    """An uninitialised-weights SAM (segment_anything.modeling.Sam) with this image encoder, on `device`
    ("meta" builds without allocating). Prompt encoder and mask decoder are SAM's standard ones."""
    sa = segment_anything_classes()
    grid = config.img_size // config.patch_size
    prompt_dim = config.out_chans
    with torch.device(device):
        encoder = sa.ImageEncoderViT(
            img_size=config.img_size, patch_size=config.patch_size, embed_dim=config.embed_dim, depth=config.depth,
            num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, out_chans=config.out_chans, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=config.use_rel_pos,
            window_size=config.window_size, global_attn_indexes=config.global_attn_indexes)
        prompts = sa.PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid),
                                   input_image_size=(config.img_size, config.img_size), mask_in_chans=16)
        decoder = sa.MaskDecoder(
            num_multimask_outputs=3, transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=256,
            transformer=sa.TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=2048, num_heads=8))
        sam = sa.Sam(image_encoder=encoder, prompt_encoder=prompts, mask_decoder=decoder,
                     pixel_mean=list(_PIXEL_MEAN), pixel_std=list(_PIXEL_STD))
    return sam.eval()


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a .pth/.pt (torch.load, weights_only) or .safetensors file, on the CPU."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FreeCure: SAM checkpoint not found: {path} (put it in ComfyUI/models/sams/)")
    if path.lower().endswith(".safetensors"):
        return load_safetensors(path, "SAM", "re-download the original SAM checkpoint")
    try:
        state = torch_load_weights(path)
    except Exception as e:  # pickles with code objects (refused by weights_only), truncated downloads
        raise ValueError(f"FreeCure: refusing {path}: torch.load(weights_only=True) cannot read it as a plain "
                         f"state dict ({refusal_reason(e)}); re-download the original SAM checkpoint or convert it "
                         "to .safetensors") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict) and len(state) <= 3:
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"FreeCure: {os.path.basename(path)} holds a {type(state).__name__}, not a SAM state dict")
    return state


def _check_keys(model: torch.nn.Module, state: Mapping[str, torch.Tensor], config: SamConfig) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "") if keys else "none"
        raise ValueError(
            f"FreeCure: the SAM checkpoint does not fit a {config.name} SAM. Missing keys: {few(missing)}. "
            f"Unexpected keys: {few(unexpected)}. Wrong shapes: {few(wrong)}. "
            "Use an original segment-anything checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, "
            "sam_vit_h_4b8939.pth).")


def load_sam(path: str, device: str | torch.device = "cpu") -> "SamRefiner":
    """A SamRefiner from a SAM checkpoint: size inferred from the state dict, loaded strictly, float32."""
    segment_anything_classes()  # fail with the install hint before reading a multi-GB file
    state = read_state_dict(path)
    config = infer_config(state)
    model = build_sam(config, device="meta")
    _check_keys(model, state, config)
    model.load_state_dict(state, strict=True, assign=True)
    model.pixel_mean = torch.tensor(_PIXEL_MEAN).view(-1, 1, 1)  # non-persistent buffers stay on meta
    model.pixel_std = torch.tensor(_PIXEL_STD).view(-1, 1, 1)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"FreeCure: SAM tensors not set by the checkpoint: {left[:5]}")
    return SamRefiner(model.float().to(device).eval(), config)


def _to_uint8(image) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an image (H, W, 3) or (1, H, W, 3): torch/numpy, float 0..1 or uint8."""
    arr = image.detach().cpu().numpy() if torch.is_tensor(image) else np.asarray(image)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"FreeCure: SAM takes one RGB image (H, W, 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    return (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _box_array(box: Sequence[float]) -> np.ndarray:
    b = np.asarray(box, dtype=np.float32).reshape(-1)
    if b.size != 4 or not np.isfinite(b).all():
        raise ValueError(f"FreeCure: a SAM box is four pixel numbers (x0, y0, x1, y1), got {box!r}")
    return np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])], dtype=np.float32)


class SamRefiner:
    """A loaded SAM with a predictor; the image embedding is reused while the same image is prompted again."""

    def __init__(self, model, config: SamConfig):
        self.model = model
        self.config = config
        self.predictor = segment_anything_classes().SamPredictor(model)
        self._image: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"SamRefiner({self.config.name}, device={self.model.device})"

    def _set_image(self, image) -> None:
        arr = _to_uint8(image)
        if self._image is None or self._image.shape != arr.shape or not np.array_equal(self._image, arr):
            self.predictor.set_image(arr, image_format="RGB")
            self._image = arr

    def _predict(self, image, multimask: bool, **prompts) -> torch.Tensor:
        self._set_image(image)
        masks, scores, _ = self.predictor.predict(multimask_output=multimask, **prompts)
        best = masks[int(np.argmax(scores))] if multimask else masks[0]
        return torch.from_numpy(best.astype(np.float32))

    def refine_box(self, image, box: Sequence[float], multimask: bool = False) -> torch.Tensor:
        """Mask (H, W) float in {0, 1} of the object in `box` (x0, y0, x1, y1 pixels) of image (H, W, 3) 0..1.
        multimask=True lets SAM propose three masks and keeps the one it scores highest."""
        return self._predict(image, multimask, box=_box_array(box))

    def segment_points(self, image, points: Sequence[Sequence[float]], labels: Sequence[int], box=None,
                       multimask: bool | None = None) -> torch.Tensor:
        """Mask (H, W) float in {0, 1} from points [(x, y), ...] labelled 1 (object) or 0 (background),
        optionally with a box. multimask defaults to True for a single point (ambiguous) and False otherwise."""
        coords = np.asarray(points, dtype=np.float32).reshape(-1, 2) if len(points) else None
        if coords is None or len(labels) != len(coords) or any(int(v) not in (0, 1) for v in labels):
            raise ValueError("FreeCure: give SAM at least one point (x, y) and one label per point, "
                             f"1 = object, 0 = background; got {len(points)} points, labels {list(labels)}")
        if multimask is None:
            multimask = len(coords) == 1 and box is None
        return self._predict(image, multimask, point_coords=coords, point_labels=np.asarray(labels, dtype=np.int64),
                             box=None if box is None else _box_array(box))
