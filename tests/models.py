"""Tiny real models for tests: a TFLite classifier made by TensorFlow, an ONNX one by onnx.helper.

Both are real files that the real runtimes load; they are built in seconds,
deterministically (fixed seeds), so nothing binary is committed.
"""

from __future__ import annotations

import numpy as np

LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]
SIZE = 32


def tiny_tflite_model(num_classes: int = len(LABELS), size: int = SIZE) -> bytes:
    """A small float32 Keras CNN (softmax head) converted to a TFLite flatbuffer."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    model = tf.keras.Sequential(
        [
            tf.keras.Input((size, size, 3), batch_size=1, name="image"),
            tf.keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    return bytes(converter.convert())


def tiny_onnx_model(
    num_classes: int = len(LABELS), size: int = SIZE, scale: float = 1.0, seed: int = 7
) -> bytes:
    """A float32 NHWC ONNX classifier: global mean pool, then a seeded dense layer (logits).

    ``scale`` multiplies the weights: large makes confident answers, tiny makes
    near-uniform ones (a "confidence collapse").
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = (rng.normal(size=(3, num_classes)) * scale).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["pooled"], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, size, size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_classes])],
        initializer=[
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
            numpy_helper.from_array(weights, "weights"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tflite_tensor_names(model: bytes) -> tuple[str, str]:
    """(input name, output name) of a single-input, single-output TFLite model, per LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    return interpreter.get_input_details()[0]["name"], interpreter.get_output_details()[0]["name"]


def slow_onnx_model(
    rows: int = 2800,
    num_classes: int = len(LABELS),
    size: int = SIZE,
    hidden: int = 512,
    seed: int = 11,
) -> bytes:
    """A real ONNX classifier made deliberately slow: a large matrix product per frame.

    Input NHWC float32 ``[1, size, size, 3]``, output logits ``[1, num_classes]``; its cost
    grows linearly with ``rows`` (about 2 * rows * size*size*3 * hidden flops);
    its weights take size*size*3 * hidden * 4 bytes.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    features = size * size * 3
    graph = helper.make_graph(
        [
            helper.make_node("Reshape", ["image", "flat_shape"], ["flat"]),
            helper.make_node("Tile", ["flat", "repeats"], ["tiled"]),
            helper.make_node("MatMul", ["tiled", "w1"], ["hidden"]),
            helper.make_node("ReduceMean", ["hidden", "axis0"], ["pooled"], keepdims=1),
            helper.make_node("MatMul", ["pooled", "w2"], ["logits"]),
        ],
        "slow",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, size, size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, num_classes])],
        initializer=[
            numpy_helper.from_array(np.array([1, features], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([rows, 1], dtype=np.int64), "repeats"),
            numpy_helper.from_array(
                (rng.normal(size=(features, hidden)) / 50).astype(np.float32), "w1"
            ),
            numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"),
            numpy_helper.from_array(
                rng.normal(size=(hidden, num_classes)).astype(np.float32), "w2"
            ),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()
