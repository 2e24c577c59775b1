"""ComfyUI side of stage 2: model files from ComfyUI's folders, devices, progress bars and interrupts."""
from __future__ import annotations

import logging

import torch

import comfy.model_management
import comfy.utils

from ..parsing.pipeline import FaceParse, LoadedFaceParser, parse_images
from . import model_paths

DETECTOR_CHOICES = ("auto", "antelopev2", "buffalo_l", "none")
DEVICE_CHOICES = ("auto", "cpu")

log = logging.getLogger("FreeCure")


def _device(choice: str) -> torch.device:
    return torch.device("cpu") if choice == "cpu" else comfy.model_management.get_torch_device()


def load_face_parser(parser_file: str, face_detector: str = "auto", device: str = "auto") -> LoadedFaceParser:
    """The BiSeNet parser from models/face_parsing (or facedetection) and the insightface face detector."""
    from ..parsing.bisenet import load_face_parser as load_bisenet
    parser = load_bisenet(model_paths.parser_path(parser_file), device=_device(device))
    detector, note = None, ""
    if face_detector != "none":
        folder = model_paths.detector_folder(face_detector)
        if folder is None:
            note = ("no insightface detector (antelopev2 or buffalo_l) in models/insightface/models/: "
                    "parsing whole images")
            log.warning("FreeCure: %s", note)
        else:
            from ..parsing.face_detect import FaceDetector, find_detector_file, require_onnxruntime
            try:
                require_onnxruntime()
            except ImportError as e:
                if face_detector != "auto":
                    raise
                note = f"{e}; parsing whole images"  # auto: the detector is optional
                log.warning("%s", note)
            else:
                detector = FaceDetector.load(find_detector_file(folder))
                note = f"face detector {folder} on {detector.providers[0]}"
    return LoadedFaceParser(parser=parser, detector=detector, note=note)


def per_image_progress(total: int):
    """A callback for image loops: advances a ComfyUI progress bar and stops when the user interrupts."""
    bar = comfy.utils.ProgressBar(total)

    def on_image(i: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update(1)
    return on_image


def parse(face_parser: LoadedFaceParser, images: torch.Tensor, mode: str, margin: float) -> FaceParse:
    """parse_images with a ComfyUI progress bar, stopping promptly when the user interrupts."""
    if not isinstance(face_parser, LoadedFaceParser):
        raise ValueError("FreeCure: face_parser must come from FreeCure Face Parser Loader")
    return parse_images(face_parser, images, mode=mode, margin=margin, on_image=per_image_progress(images.shape[0]))


def load_sam(sam_file: str, device: str = "auto"):
    """A SAM refiner from models/sams (needs the segment-anything package)."""
    from ..parsing.sam import segment_anything_classes, load_sam as load
    segment_anything_classes()  # the install hint first: without the package no file helps
    return load(model_paths.sam_path(sam_file), device=_device(device))


def sam_refine(refiner, images, mask, box, points, combine):
    """pipeline.sam_refine with a ComfyUI progress bar and interrupts."""
    from ..parsing.pipeline import sam_refine as refine
    return refine(refiner, images, mask, box, points, combine, on_image=per_image_progress(images.shape[0]))
