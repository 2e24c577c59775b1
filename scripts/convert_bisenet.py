"""Convert a BiSeNet face-parsing checkpoint (79999_iter.pth / parsing_bisenet.pth) to .safetensors.

    python scripts/convert_bisenet.py ComfyUI/models/face_parsing/79999_iter.pth \
        ComfyUI/models/face_parsing/79999_iter.safetensors

Reads the .pth with weights_only=True (no code from the file runs), checks it is a BiSeNet state dict,
and writes the same tensor names to .safetensors, which FreeCure Face Parser Loader reads too.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from freecure_core.parsing.bisenet import BiSeNet, check_bisenet_state_dict, load_bisenet_state_dict, save_bisenet  # noqa: E402


def convert(src: str, dst: str) -> None:
    """Load `src` safely, verify the BiSeNet layout, write it to `dst` (.safetensors or .pth)."""
    state = check_bisenet_state_dict(load_bisenet_state_dict(src))
    model = BiSeNet(n_classes=state["conv_out.conv_out.weight"].shape[0])
    model.load_state_dict(state)
    save_bisenet(model, dst)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
