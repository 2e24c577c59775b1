"""Face-parsing cost per 1024² image on this machine's CPU: whole-image vs face-crop mode (not a test).

BiSeNet has the real architecture and size with random weights (timing does not depend on the values).
Crop mode is timed with a fixed face box standing in for the detector, so it measures crop + parse +
paste; the detector's own time is printed separately (the test stand-in is far cheaper than SCRFD-10G,
whose cost is about 10 GFLOPs at 640²). Run: .venv/bin/python bench/bench_parsing.py [--repeats N]
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from skimage import data  # noqa: E402

from freecure_core.parsing.bisenet import FaceParser, random_bisenet  # noqa: E402
from freecure_core.parsing.face_crop import parse_with_faces  # noqa: E402
from freecure_core.parsing.face_detect import Face, FaceDetector  # noqa: E402
from freecure_core.parsing.schema import CELEBAMASK_HQ_19  # noqa: E402
from timing import median_time  # noqa: E402  (bench/timing.py)




def main(argv=None) -> dict:
    """Time both parsing modes and the detector call, print them, and return {"whole", "crop", "detect"} seconds."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    img = torch.nn.functional.interpolate(img, size=(1024, 1024), mode="bilinear", antialias=True)
    image = img.permute(0, 2, 3, 1).contiguous()
    face = Face(box=(344.0, 140.0, 540.0, 360.0), score=0.99, kps=None)  # the astronaut's face at 1024²
    parser = FaceParser(random_bisenet(0), CELEBAMASK_HQ_19)
    with torch.inference_mode():
        whole = median_time(lambda: parse_with_faces(image, parser.parse, None, crop_size=512), args.repeats)
        crop = median_time(lambda: parse_with_faces(image, parser.parse, lambda a: [face], crop_size=512),
                           args.repeats)
    from support.onnx_detector import write_model_pack
    with tempfile.TemporaryDirectory() as tmp:
        detector = FaceDetector.load(write_model_pack(tmp, "antelopev2"))
        u8 = (image[0] * 255).round().to(torch.uint8).numpy()
        detect = median_time(lambda: detector.detect(u8), args.repeats)
    print(f"FreeCure face parsing, 1 image 1024x1024, CPU threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"median of {args.repeats}")
    print(f"{'mode':<52}{'seconds':>9}")
    print(f"{'whole image (squash to 512², parse, resize back)':<52}{whole:>9.3f}")
    print(f"{'face crop (1 face: crop 512², parse, paste)':<52}{crop:>9.3f}")
    print(f"{'detector call (stand-in ONNX, SCRFD I/O)':<52}{detect:>9.3f}")
    return {"whole": whole, "crop": crop, "detect": detect, "repeats": args.repeats}


if __name__ == "__main__":
    main()
