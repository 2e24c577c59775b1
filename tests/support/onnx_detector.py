"""A stand-in SCRFD detector as a tiny ONNX graph, with the real det_10g input/output signature.

It "detects" flat squares of a pure colour whose side equals one stride cell in network pixels: red
squares at stride 8, green at 16, blue at 32. For every cell of a stride's grid the graph averages a
pure-colour indicator over the cell (a Conv with kernel = stride = s; the indicator is 1 for exactly that
colour, <= 0 for any other pure colour or black) and outputs

  anchor 0: score sigmoid(GAIN * (mean - 0.8)), box distances (0, 0, 1, 1), i.e. exactly the cell;
  anchor 1: 0.9 x that score, box distances (0.1, 0.1, 1.1, 1.1), i.e. the cell grown by 0.1 s
            (IoU 1/1.44 with anchor 0's box, so NMS at 0.4 drops it and NMS at 0.8 keeps it);
  keypoints (both anchors): the cell's corners TL, TR, BL, BR and its centre.

All in stride units relative to the anchor point (j*s, i*s), as SCRFD does. Because the graph reads the
normalised input ((pixel - 127.5) / 128, RGB), a decoder with wrong preprocessing, channel order, stride,
anchor order or letterbox scaling finds the wrong (or no) box. Pure-colour cells of natural photos are
rare, so a photo without painted squares gives no detections.

    build_standin_detector(path, dynamic=False, with_kps=True, order="grouped", batch_dim=False)
    write_model_pack(root, name) -> path of <root>/insightface/models/<name>/<detector file>
    expected_cell_box(stride, row, col) -> (x0, y0, x1, y1) in network pixels
    letterbox_scales((H, W), (h, w)) -> (resize scale y, resize scale x, insightface's det_scale)
    paint_cells(image, [(stride, row, col), ...], (h, w)) -> painted copy, boxes in image pixels
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

STRIDES = (8, 16, 32)
COLOURS = {8: (1, 0, 0), 16: (0, 1, 0), 32: (0, 0, 1)}  # RGB, one per stride
SIZE = 640
GAIN, THRESHOLD, ANCHOR1_FACTOR = 40.0, 0.8, 0.9
BOX_DIST = ((0.0, 0.0, 1.0, 1.0), (0.1, 0.1, 1.1, 1.1))  # (left, top, right, bottom) per anchor
KPS_OFFSETS = ((0, 0), (1, 0), (0, 1), (1, 1), (0.5, 0.5))
# det_10g's output names: scores, boxes, keypoints for strides 8, 16, 32.
OUTPUT_NAMES = {"score": ("448", "471", "494"), "bbox": ("451", "474", "497"), "kps": ("454", "477", "500")}
PACK_FILES = {"antelopev2": "scrfd_10g_bnkps.onnx", "buffalo_l": "det_10g.onnx"}


def expected_cell_box(stride: int, row: int, col: int) -> tuple[float, float, float, float]:
    """Anchor 0's decoded box for cell (row, col) of a stride, in network pixels."""
    return (col * stride, row * stride, (col + 1) * stride, (row + 1) * stride)


def letterbox_scales(image_hw, net_hw=(SIZE, SIZE)) -> tuple[float, float, float]:
    """(new_h / H, new_w / W, det_scale) of insightface's SCRFD letterbox of an (H, W) image into an (h, w) input.

    insightface fits the image into the input keeping its aspect ratio, truncating the other side with int(),
    and maps detections back with one scale, det_scale = new_h / H, for both axes. Written out here on its own
    (not taken from the pack) so that the decoding tests do not check the pack against itself.
    """
    h, w = image_hw
    net_h, net_w = net_hw
    if h / w > net_h / net_w:
        new_h, new_w = net_h, int(net_h / (h / w))
    else:
        new_h, new_w = int(net_w * (h / w)), net_w
    return new_h / h, new_w / w, new_h / h


def paint_cells(image, cells, net_hw=(SIZE, SIZE)):
    """(painted copy, boxes): an RGB uint8 image with the stand-in's square on each (stride, row, col) cell.

    Cells are those of a net_hw input; each box is the cell's anchor-0 box (x0, y0, x1, y1) in image pixels as
    insightface reports it: the cell divided by det_scale (see letterbox_scales). The square covers the cell
    scaled back by the real resize factors, rounded outwards (so the cell is fully coloured after resizing).
    """
    image = np.array(image, dtype=np.uint8, copy=True)
    sy, sx, det_scale = letterbox_scales(image.shape[:2], net_hw)
    boxes = []
    for s, r, c in cells:
        x0, y0, x1, y1 = expected_cell_box(s, r, c)
        image[math.floor(y0 / sy):math.ceil(y1 / sy), math.floor(x0 / sx):math.ceil(x1 / sx)] = \
            np.array(COLOURS[s]) * 255
        boxes.append((x0 / det_scale, y0 / det_scale, x1 / det_scale, y1 / det_scale))
    return image, boxes


def _const(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def _stride_nodes(s: int, k: int, batch_dim: bool):
    """Nodes and initialisers producing stride s's score/bbox/kps outputs (names from OUTPUT_NAMES[...][k])."""
    c = np.array(COLOURS[s], dtype=np.float32)
    sign = 2 * c - 1
    # mean over the cell of sum_k sign_k * pixel01_k - (|c| - 1), with pixel01 = (x * 128 + 127.5) / 255
    weight = np.broadcast_to((sign * 128.0 / 255.0 / (s * s))[None, :, None, None], (1, 3, s, s)).copy()
    bias = np.array([float((sign * 127.5 / 255.0).sum() - (c.sum() - 1))], dtype=np.float32)
    box_c = np.array(BOX_DIST, dtype=np.float32).reshape(1, 8, 1, 1)
    kps = np.array(KPS_OFFSETS, dtype=np.float32).reshape(-1)
    kps_c = np.concatenate([kps, kps]).reshape(1, 20, 1, 1)
    p = f"s{s}_"
    inits = [_const(p + "w", weight), _const(p + "b", bias), _const(p + "box", box_c), _const(p + "kps", kps_c)]
    score_shape = [1, -1, 1] if batch_dim else [-1, 1]
    shapes = {"score": score_shape, "bbox": score_shape[:-1] + [4], "kps": score_shape[:-1] + [10]}
    for key, shape in shapes.items():
        inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), p + key + "_shape"))
    nodes = [
        helper.make_node("Conv", ["input.1", p + "w", p + "b"], [p + "mean"], kernel_shape=[s, s], strides=[s, s]),
        helper.make_node("Sub", [p + "mean", "thr"], [p + "c"]),
        helper.make_node("Mul", [p + "c", "gain"], [p + "g"]),
        helper.make_node("Sigmoid", [p + "g"], [p + "a0"]),
        helper.make_node("Mul", [p + "a0", "a1f"], [p + "a1"]),
        helper.make_node("Concat", [p + "a0", p + "a1"], [p + "sc"], axis=1),  # (1, 2, h, w)
        helper.make_node("Mul", [p + "mean", "zero"], [p + "z"]),
        helper.make_node("Add", [p + "z", p + "box"], [p + "bx"]),  # (1, 8, h, w)
        helper.make_node("Add", [p + "z", p + "kps"], [p + "kp"]),  # (1, 20, h, w)
    ]
    for key, src in (("score", "sc"), ("bbox", "bx"), ("kps", "kp")):
        nodes.append(helper.make_node("Transpose", [p + src], [p + src + "_t"], perm=[0, 2, 3, 1]))
        nodes.append(helper.make_node("Reshape", [p + src + "_t", p + key + "_shape"], [OUTPUT_NAMES[key][k]]))
    return nodes, inits


def build_standin_detector(path, dynamic: bool = False, with_kps: bool = True, order: str = "grouped",
                           batch_dim: bool = False) -> Path:
    """Write the stand-in .onnx to path.

    dynamic: input (1, 3, 'height', 'width') instead of (1, 3, 640, 640). with_kps=False gives the 6-output
    variant. order "grouped" is det_10g's (scores x3, boxes x3, kps x3); "interleaved" lists stride by stride
    (score, box, kps) and "reversed" reverses the grouped list, to check decoding by shape. batch_dim keeps
    a leading 1 on every output (1, N, C).
    """
    nodes, inits = [], [_const("thr", [THRESHOLD]), _const("gain", [GAIN]), _const("a1f", [ANCHOR1_FACTOR]),
                        _const("zero", [0.0])]
    for k, s in enumerate(STRIDES):
        n, i = _stride_nodes(s, k, batch_dim)
        nodes += n
        inits += i
    kinds = ("score", "bbox", "kps") if with_kps else ("score", "bbox")
    if order == "grouped":
        names = [(key, k) for key in kinds for k in range(3)]
    elif order == "interleaved":
        names = [(key, k) for k in range(3) for key in kinds]
    elif order == "reversed":
        names = [(key, k) for key in kinds for k in range(3)][::-1]
    else:
        raise ValueError(f"unknown order {order!r}")
    width = {"score": 1, "bbox": 4, "kps": 10}
    outputs = []
    for key, k in names:
        n = (SIZE // STRIDES[k]) ** 2 * 2 if not dynamic else f"n{STRIDES[k]}"
        shape = [1, n, width[key]] if batch_dim else [n, width[key]]
        outputs.append(helper.make_tensor_value_info(OUTPUT_NAMES[key][k], TensorProto.FLOAT, shape))
    in_shape = [1, 3, "height", "width"] if dynamic else [1, 3, SIZE, SIZE]
    graph = helper.make_graph(nodes, "scrfd_standin",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, in_shape)],
                              outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="freecure-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_model_pack(root, name: str = "antelopev2", **kwargs) -> Path:
    """The stand-in saved as <root>/insightface/models/<name>/<scrfd_10g_bnkps.onnx | det_10g.onnx>."""
    file = PACK_FILES.get(name, "det_10g.onnx")
    return build_standin_detector(Path(root) / "insightface" / "models" / name / file, **kwargs)
