"""Stage 2 of FreeCure: face parsing into label maps and attribute masks (pure torch, no ComfyUI).

Modules:
    schema       label schemas (class id ↔ name, attribute → labels) and preview palettes
    bisenet      the BiSeNet face parser: network, checkpoint loading/saving, FaceParser.parse
    face_detect  the SCRFD face detector (onnxruntime)
    face_crop    parsing face crops and pasting them back
    sam          the optional SAM refiner (segment-anything)
    mask_ops     pixel-space mask operations: label union, grow/shrink, feathering, colouring, overlay, bbox
    pipeline     parse → attribute masks, used by the ComfyUI nodes

Only the light schema names are re-exported here; import ``bisenet`` (it needs timm) explicitly.
"""
from .schema import ATTRIBUTES, CELEBAMASK_HQ_19, SCHEMAS, SEGFORMER_FACE_19, LabelSchema, palette

__all__ = ["ATTRIBUTES", "CELEBAMASK_HQ_19", "SCHEMAS", "SEGFORMER_FACE_19", "LabelSchema", "palette"]
