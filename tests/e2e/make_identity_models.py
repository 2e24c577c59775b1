"""Test-only identity model files for the e2e server: `make_identity_models.py ROOT` writes
ROOT/models/checkpoints/tiny_sdxl.safetensors (tiny SDXL UNet + tiny CLIP + random TAESD; loads with TinySDXL,
which tests/e2e_pack registers), ROOT/models/controlnet/tiny_identitynet.safetensors (a ControlNet for it),
ROOT/models/instantid/tiny_instantid.safetensors (an InstantID adapter in the real flat key layout, one layer
per attn2 site of the tiny SDXL) and the stand-in ArcFace ROOT/models/insightface/models/antelopev2/glintr100.onnx.
Run it after make_parsing_models.py (which writes the pack's detector)."""
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent.parent))

from support.comfy_env import import_comfy  # noqa: E402

import_comfy()

from support import tiny_instantid, tiny_models  # noqa: E402
from support.onnx_recognizer import add_recognizer_to_pack  # noqa: E402

from freecure_core.comfy_bridge.instantid import adapter_sites  # noqa: E402
from freecure_core.comfy_bridge.probe import attn2_module  # noqa: E402

SDXL_CKPT = "tiny_sdxl.safetensors"
IDENTITYNET = "tiny_identitynet.safetensors"
ADAPTER = "tiny_instantid.safetensors"


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


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
