"""Test-only model files and inputs for the e2e server: `make_parsing_models.py ROOT` writes
ROOT/models/face_parsing/tiny_bisenet.safetensors (random BiSeNet, real 79999_iter key layout),
ROOT/models/insightface/models/antelopev2/scrfd_10g_bnkps.onnx (the SCRFD-format stand-in detector) and
ROOT/input/astronaut_640.png (skimage's astronaut at 640², with a blue 32 px square the stand-in detects) and
ROOT/models/sams/tiny_sam_vit_b_keys.pth (a random SAM with sam_vit_b's key names and a 2-block, 64-wide encoder)."""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from freecure_core.parsing.bisenet import random_bisenet, save_bisenet  # noqa: E402
from support.onnx_detector import write_model_pack  # noqa: E402

FACE_SQUARE = (192, 96, 224, 128)  # x0, y0, x1, y1: one stride-32 cell of the stand-in detector


def write_tiny_sam(path: pathlib.Path) -> None:
    from segment_anything.build_sam import _build_sam
    torch.manual_seed(0)
    sam = _build_sam(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in sam.state_dict().items()}, path)


def main(root: pathlib.Path) -> None:
    (root / "models" / "face_parsing").mkdir(parents=True, exist_ok=True)
    save_bisenet(random_bisenet(0), root / "models" / "face_parsing" / "tiny_bisenet.safetensors")
    write_model_pack(root / "models", "antelopev2")
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float()
    img = torch.nn.functional.interpolate(img, size=(640, 640), mode="bilinear", antialias=True)[0]
    img = img.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy().copy()
    x0, y0, x1, y1 = FACE_SQUARE
    img[y0:y1, x0:x1] = (0, 0, 255)
    write_tiny_sam(root / "models" / "sams" / "tiny_sam_vit_b_keys.pth")
    (root / "input").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(img)).save(root / "input" / "astronaut_640.png")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
