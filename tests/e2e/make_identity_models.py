"""Test-only identity model files for the e2e server: `make_identity_models.py ROOT` writes
ROOT/models/checkpoints/tiny_sdxl.safetensors (tiny SDXL UNet + tiny CLIP + random TAESD; loads with TinySDXL,
which tests/e2e_pack registers), ROOT/models/controlnet/tiny_identitynet.safetensors (a ControlNet for it),
ROOT/models/instantid/tiny_instantid.safetensors (an InstantID adapter in the real flat key layout, one layer
per attn2 site of the tiny SDXL) and the stand-in ArcFace ROOT/models/insightface/models/antelopev2/glintr100.onnx.
For PhotoMaker (2048-wide SDXL text embeddings) it also writes ROOT/models/checkpoints/tiny_sdxl_2048.safetensors (the
tiny SDXL UNet layout with SDXL's context and ADM widths, SDXL's real text encoders shrunk to 3 layers, random TAESD;
loads with TinySDXL2048) and ROOT/models/photomaker/tiny_photomaker.bin (PhotoMaker v1's id-encoder layout with a
1-layer vision tower; loads with the VISION_CONFIG_DICT tests/e2e_pack shrinks).
Run it after make_parsing_models.py (which writes the pack's detector)."""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from support.comfy_env import import_comfy  # noqa: E402

import_comfy()

from support import tiny_instantid, tiny_models, tiny_photomaker  # noqa: E402
from support.onnx_recognizer import add_recognizer_to_pack  # noqa: E402

from freecure_core.comfy_bridge.instantid import adapter_sites  # noqa: E402
from freecure_core.comfy_bridge.probe import attn2_module  # noqa: E402

SDXL_CKPT = "tiny_sdxl.safetensors"
IDENTITYNET = "tiny_identitynet.safetensors"
ADAPTER = "tiny_instantid.safetensors"
SDXL_2048_CKPT = "tiny_sdxl_2048.safetensors"
PHOTOMAKER = "tiny_photomaker.bin"


def main(root: pathlib.Path) -> None:
    models = root / "models"
    tiny_models.register_tiny_sdxl()
    tiny_models.write_tiny_sdxl_checkpoint(models / "checkpoints" / SDXL_CKPT)
    tiny_models.write_tiny_sdxl_controlnet(models / "controlnet" / IDENTITYNET, seed=5)
    sdxl = tiny_models.build_tiny_sdxl(0)
    hidden = [attn2_module(sdxl.model.diffusion_model, s).to_k.weight.shape[0]
              for s in adapter_sites(sdxl.model, "cpu")]
    state = tiny_instantid.random_instantid_state(output_dim=tiny_models.CONTEXT_DIM, hidden=hidden, seed=1)
    (models / "instantid").mkdir(parents=True, exist_ok=True)
    tiny_instantid.write_instantid_safetensors(models / "instantid" / ADAPTER, state)
    add_recognizer_to_pack(models / "insightface" / "models" / "antelopev2")
    tiny_models.write_tiny_sdxl_2048_checkpoint(models / "checkpoints" / SDXL_2048_CKPT, seed=7)
    tiny_photomaker.write_tiny_photomaker(models / "photomaker" / PHOTOMAKER, seed=8)


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
