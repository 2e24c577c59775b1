"""A stand-in ArcFace recognizer as a tiny ONNX graph, with glintr100's input/output signature.

Input "input.1" (N, 3, 112, 112) float32, one output "683" (N, D). The graph averages the normalised input
over 14 x 14 blocks (AveragePool -> (N, 3, 8, 8)), flattens it to 192 values and applies a seeded linear map
(Gemm). With with_sub=True the graph starts with nodes named "Sub_0" and "Mul_1" computing
(x - 127.5) * (1 / 127.5) itself, as MXNet-converted ArcFace models do, so it must be fed raw pixels;
otherwise it expects (pixel - 127.5) / 127.5. Either way the embedding of an RGB uint8 crop is

    reference_embed(crops, embedding_dim, seed) = W^T . blockmean((rgb - 127.5) / 127.5) + b

so a recognizer with the wrong normalisation, channel order or layout gives a different answer.

    build_standin_recognizer(path, embedding_dim=512, with_sub=False, dynamic_batch=True, seed=0) -> path
    reference_embed(crops (B, 112, 112, 3) uint8, embedding_dim=512, seed=0) -> (B, D) float64
    add_recognizer_to_pack(folder, name="glintr100.onnx", **kw) -> path
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE, POOL = 112, 14
FEATURES = 3 * (SIZE // POOL) ** 2  # 192
OUTPUT_NAME = "683"


def weights(embedding_dim: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The Gemm weight (192, D) and bias (D,) float32 for a seed."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((FEATURES, embedding_dim)) / np.sqrt(FEATURES)).astype(np.float32)
    b = (rng.standard_normal(embedding_dim) * 0.1).astype(np.float32)
    return w, b


def reference_embed(crops: np.ndarray, embedding_dim: int = 512, seed: int = 0) -> np.ndarray:
    """What the stand-in returns for aligned RGB uint8 crops (B, 112, 112, 3) or one crop, as (B, D) float64."""
    crops = np.asarray(crops)
    if crops.ndim == 3:
        crops = crops[None]
    x = (crops.astype(np.float64) - 127.5) / 127.5  # (B, H, W, C)
    n = SIZE // POOL
    blocks = x.reshape(len(x), n, POOL, n, POOL, 3).mean(axis=(2, 4))  # (B, 8, 8, 3)
    feats = blocks.transpose(0, 3, 1, 2).reshape(len(x), FEATURES)  # NCHW flatten order
    w, b = weights(embedding_dim, seed)
    return feats @ w.astype(np.float64) + b.astype(np.float64)


def build_standin_recognizer(path, embedding_dim: int = 512, with_sub: bool = False, dynamic_batch: bool = True,
                             seed: int = 0) -> Path:
    """Write the stand-in .onnx to path (opset 17, IR 8). dynamic_batch=False fixes the batch to 1."""
    w, b = weights(embedding_dim, seed)
    inits = [numpy_helper.from_array(w, "fc_w"), numpy_helper.from_array(b, "fc_b")]
    nodes, x = [], "input.1"
    if with_sub:
        inits += [numpy_helper.from_array(np.array([127.5], np.float32), "sub_c"),
                  numpy_helper.from_array(np.array([1 / 127.5], np.float32), "mul_c")]
        nodes += [helper.make_node("Sub", [x, "sub_c"], ["centred"], name="Sub_0"),
                  helper.make_node("Mul", ["centred", "mul_c"], ["scaled"], name="Mul_1")]
        x = "scaled"
    nodes += [helper.make_node("AveragePool", [x], ["pooled"], kernel_shape=[POOL, POOL], strides=[POOL, POOL],
                               name="AveragePool_2"),
              helper.make_node("Flatten", ["pooled"], ["flat"], axis=1, name="Flatten_3"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], [OUTPUT_NAME], name="Gemm_4")]
    batch = "None" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, "arcface_standin",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [batch, embedding_dim])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="freecure-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def add_recognizer_to_pack(folder, name: str = "glintr100.onnx", **kwargs) -> Path:
    """The stand-in saved as <folder>/<name>, e.g. next to a detector written by onnx_detector.write_model_pack."""
    return build_standin_recognizer(Path(folder) / name, **kwargs)
