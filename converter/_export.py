"""``python -m converter._export MODEL.keras OUT_DIR``: export a Keras model as a SavedModel.

Run in a fresh process so that TensorFlow's global name counters start from
zero: the same model file then always gives the same SavedModel, and so the
same ONNX bytes.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys


def main() -> None:
    """Load ``argv[1]`` with Keras and export it to ``argv[2]``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    model = keras.models.load_model(sys.argv[1], compile=False)
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(sys.argv[2], verbose=False)


if __name__ == "__main__":
    main()
