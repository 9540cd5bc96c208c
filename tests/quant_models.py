"""Tiny real models that int8 quantisation breaks in one known layer (for the fallback tests).

The classifier head reads one feature that is always zero (a ReLU channel with
a large negative bias) through a huge weight: harmless in float, but it sets
the head's int8 weight scale so coarse that every other head weight rounds to
zero. Keeping the head in float fixes the model; nothing else does.
"""

from __future__ import annotations

import numpy as np

SIZE = 32
CLASSES = 6
OUTLIER = 1000.0


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    conv = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)  # [cout, cin, kh, kw]
    conv_bias = rng.normal(scale=0.1, size=8).astype(np.float32)
    conv_bias[7] = -1000.0  # channel 7 is always 0 after the ReLU
    head = (rng.normal(size=(8, CLASSES)) * 3.0).astype(np.float32)
    head[7, :] = OUTLIER
    head_bias = np.zeros(CLASSES, dtype=np.float32)
    return conv, conv_bias, head, head_bias


def outlier_onnx_model(seed: int = 3) -> bytes:
    """NHWC float input in [-1, 1] -> Conv 3x3/2 + ReLU -> mean pool -> MatMul head (logits)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    conv, conv_bias, head, head_bias = _weights(seed)
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node(
            "Conv",
            ["nchw", "conv_w", "conv_b"],
            ["conv"],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
            name="conv",
        ),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
        helper.make_node("MatMul", ["features", "head_w"], ["mm"], name="head"),
        helper.make_node("Add", ["mm", "head_b"], ["logits"], name="head_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "outlier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        initializer=[
            numpy_helper.from_array(conv, "conv_w"),
            numpy_helper.from_array(conv_bias, "conv_b"),
            numpy_helper.from_array(head, "head_w"),
            numpy_helper.from_array(head_bias, "head_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def outlier_keras_model(seed: int = 3) -> object:
    """The same network as a Keras model (softmax head), for the TFLite path."""
    import keras

    conv, conv_bias, head, head_bias = _weights(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").set_weights([conv.transpose(2, 3, 1, 0), conv_bias])
    model.get_layer("head").set_weights([head, head_bias])
    return model
