"""Test-only model files for the peer-pack e2e server: `make_peer_models.py BASE` writes, under BASE (the server's
--base-directory):

* what FreeCure's own nodes in the peer workflows need: models/checkpoints/tiny_sdxl.safetensors (loads with
  TinySDXL, which tests/e2e_pack registers) and, through make_parsing_models.py, models/face_parsing/
  tiny_bisenet.safetensors and input/astronaut_640.png (the reference photo, with the blue square the stand-in
  detectors report as a face);
* the files cubiq's InstantID, PuLID and IP-Adapter FaceID packs load, in their real layouts and folders
  (tests/support/peer_models.py): models/instantid/, models/controlnet/instantid/, models/pulid/,
  models/ipadapter/, models/loras/, models/clip_vision/, models/insightface/models/{antelopev2,buffalo_l}/,
  BASE/hf_home/hub/ (EVA-CLIP, for HF_HOME) and BASE/facexlib_root/facexlib/weights/ (facexlib's weights, for
  FREECURE_E2E_FACEXLIB_ROOT).

Prints one line per file with its size, and the time taken."""
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from support.comfy_env import import_comfy  # noqa: E402

import_comfy()

import make_parsing_models  # noqa: E402
from support import peer_models, tiny_models  # noqa: E402

SDXL_CKPT = "tiny_sdxl.safetensors"
PORTRAIT = "astronaut_640.png"
assert make_parsing_models.FACE_SQUARE == peer_models.face_square(), "the photo's face square moved"


def main(base: pathlib.Path) -> None:
    t0 = time.monotonic()
    tiny_models.register_tiny_sdxl()
    files = {"checkpoint": pathlib.Path(tiny_models.write_tiny_sdxl_checkpoint(base / "models" / "checkpoints"
                                                                               / SDXL_CKPT))}
    make_parsing_models.main(base)
    for pack, written in peer_models.write_all(base).items():
        files.update({f"{pack}.{k}": v for k, v in written.items()})
    for name, path in files.items():
        size = sum(p.stat().st_size for p in path.rglob("*")) if path.is_dir() else path.stat().st_size
        print(f"{name}: {path.relative_to(base)} {size / 1e6:.1f} MB")
    print(f"written in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
