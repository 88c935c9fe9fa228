"""Sample models to try the worker with: a small trained CNN, and its INC int8 version.

    python -m service.tools.samples DIR

writes into DIR:

* ``model.keras``, ``model.h5``: the trained Keras model;
* ``saved_model/``: a SavedModel with a ``serving_default`` signature;
* ``fp32.pb``: the frozen inference graph;
* ``int8.pb``: that graph quantized by Intel Neural Compressor itself
  (``neural_compressor.tensorflow.quantize_model`` with its default ``StaticQuantConfig``,
  calibrated on training samples), as a user would make it: ``QuantizeV2`` ->
  ``QuantizedConv2DWithBiasAndReluAndRequantize`` -> ... -> ``Dequantize``;
* ``optimized_fp32.pb``: the fp32 graph after grappler (constant folding, arithmetic
  simplification, remapping) and ``remove_training_nodes``; still fp32, same predictions;
* ``eval.npz``: held-out ``x`` (float32) and ``y`` (int64) for accuracy mode;
* ``request.json``: a benchmark request comparing ``fp32.pb`` with ``int8.pb`` (performance
  and accuracy, batch 32), and ``workspace/``.

The model is sized so quantization shows: at 32x32 inputs with 32 and 64 filters, int8 runs
about twice as fast as fp32 at batch 32 and about as fast at batch 1 (one core, oneDNN on).
Where INC is not installed, the fp32 models are written, ``int8.pb`` is not, the request
benchmarks the fp32 graph alone, and a line on stderr says how to install INC.

The data is synthetic but learnable: each image is split in four quadrants with random
brightness plus noise; the label is the brightest quadrant. Everything is seeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from contracts import BenchmarkRequest

SEED = 7
IMAGE_SIZE = 32
CHANNELS = 3
CLASSES = 4
FILTERS = (32, 64)
TRAIN_SAMPLES = 3072
EVAL_SAMPLES = 512
MAX_EPOCHS = 4
BATCH_SIZE = 64
CALIBRATION_SAMPLES = 256
CALIBRATION_BATCH_SIZE = 32
REQUEST_BATCH_SIZE = 32
INC_INSTALL_HINT = "pip install --no-deps neural-compressor-tf==3.10 prettytable py-cpuinfo"
NOISE_STD = 0.25
MAX_PREDICTION_DIFFERENCE = 1e-4
GRAPPLER_OPTIMIZERS = ("pruning", "constfold", "arithmetic", "dependency", "remap", "constfold")


def make_dataset(rng: np.random.Generator, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is the index of the brightest quadrant (row-major)."""
    levels = rng.random((samples, CLASSES))
    half = IMAGE_SIZE // 2
    quadrants = levels.reshape(samples, 2, 1, 2, 1, 1)
    base = np.broadcast_to(quadrants, (samples, 2, half, 2, half, CHANNELS))
    images = base.reshape(samples, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
    noise = rng.normal(0.0, NOISE_STD, images.shape)
    x = np.clip(0.5 * images + noise + 0.25, 0.0, 1.0).astype(np.float32)
    y = np.argmax(levels, axis=1).astype(np.int64)
    return x, y


def build_model() -> Any:
    """Two Conv2D + BatchNorm + ReLU + pooling blocks, then a softmax classifier."""
    import keras

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, CHANNELS), name="image")
    hidden = inputs
    for filters in FILTERS:
        hidden = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(hidden)
        hidden = keras.layers.BatchNormalization()(hidden)
        hidden = keras.layers.ReLU()(hidden)
        hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Flatten()(hidden)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs, name="quadrant_cnn")


def train(model: Any, x: np.ndarray, y: np.ndarray, train_seconds: float) -> None:
    """Fit for MAX_EPOCHS or until ``train_seconds`` have passed, whichever comes first."""
    import keras

    class TimeLimit(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self, limit_s: float) -> None:
            super().__init__()
            self.deadline_s = time.perf_counter() + limit_s

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if time.perf_counter() >= self.deadline_s:
                self.model.stop_training = True

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=5e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=MAX_EPOCHS,
        shuffle=True,
        verbose=0,
        callbacks=[TimeLimit(train_seconds)],
    )


def optimize_frozen_graph(graph_def: Any, inputs: list[str], outputs: list[str]) -> Any:
    """Run grappler on a frozen graph (feeds and fetches kept), then drop training nodes."""
    import tensorflow as tf
    from tensorflow.python.framework import graph_util
    from tensorflow.python.grappler import tf_optimizer

    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
        for name in outputs:
            graph.add_to_collection("train_op", graph.get_operation_by_name(_node(name)))
        meta_graph = tf.compat.v1.train.export_meta_graph(graph=graph)
    signature = meta_graph.signature_def["serving_default"]
    for name in inputs:
        signature.inputs[_node(name)].CopyFrom(_tensor_info(graph.get_tensor_by_name(name)))
    for name in outputs:
        signature.outputs[_node(name)].CopyFrom(_tensor_info(graph.get_tensor_by_name(name)))
    config = tf.compat.v1.ConfigProto()
    rewrites = config.graph_options.rewrite_options
    rewrites.optimizers.extend(GRAPPLER_OPTIMIZERS)
    rewrites.meta_optimizer_iterations = rewrites.TWO
    optimized = tf_optimizer.OptimizeGraph(config, meta_graph)
    return graph_util.remove_training_nodes(optimized, protected_nodes=[_node(n) for n in outputs])


def _tensor_info(tensor: Any) -> Any:
    from tensorflow.core.protobuf import meta_graph_pb2

    return meta_graph_pb2.TensorInfo(
        name=tensor.name,
        dtype=tensor.dtype.as_datatype_enum,
        tensor_shape=tensor.shape.as_proto(),
    )


def _node(tensor_name: str) -> str:
    return tensor_name.split(":")[0]


def predict_graph(graph_def: Any, input_name: str, output_name: str, x: np.ndarray) -> np.ndarray:
    """Run a frozen graph on ``x`` in a plain session."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return np.asarray(session.run(output_name, feed_dict={input_name: x}))


def write_sample_models(out_dir: Path, *, train_seconds: float = 30.0) -> Path:
    """Train and write the sample models into ``out_dir``; return the request.json path."""
    import keras

    from service.runner.loading import freeze_keras_model

    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    x_train, y_train = make_dataset(rng, TRAIN_SAMPLES)
    x_eval, y_eval = make_dataset(rng, EVAL_SAMPLES)
    keras.utils.set_random_seed(SEED)
    model = build_model()
    train(model, x_train, y_train, train_seconds)

    model.save(out_dir / "model.keras")
    model.save(out_dir / "model.h5")
    model.export(str(out_dir / "saved_model"), format="tf_saved_model", verbose=False)
    frozen = freeze_keras_model(model, "sample model")
    optimized = optimize_frozen_graph(frozen.graph_def, frozen.inputs, frozen.outputs)
    _check_same_predictions(
        frozen.graph_def, optimized, frozen.inputs[0], frozen.outputs[0], x_eval
    )
    (out_dir / "fp32.pb").write_bytes(frozen.graph_def.SerializeToString(deterministic=True))
    (out_dir / "optimized_fp32.pb").write_bytes(optimized.SerializeToString(deterministic=True))
    np.savez(out_dir / "eval.npz", x=x_eval, y=y_eval)
    int8 = quantize_with_inc(frozen.graph_def, x_train, y_train)
    (out_dir / "int8.pb").unlink(missing_ok=True)
    if int8 is not None:
        (out_dir / "int8.pb").write_bytes(int8.SerializeToString(deterministic=True))
    return _write_request(out_dir, with_int8=int8 is not None)


class _CalibrationSamples:
    """(image, label) pairs indexed as INC's ``BaseDataLoader`` wants them."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x[index], self.y[index]


def quantize_with_inc(graph_def: Any, x: np.ndarray, y: np.ndarray) -> Any | None:
    """INC's post-training static quantization of a frozen graph; None without INC."""
    try:
        from neural_compressor.tensorflow import StaticQuantConfig, quantize_model
        from neural_compressor.tensorflow.utils import BaseDataLoader
    except ImportError as exc:
        print(
            f"sample-models: Intel Neural Compressor is not installed ({exc}); writing the fp32 "
            f"models alone. To add int8.pb: {INC_INSTALL_HINT}",
            file=sys.stderr,
        )
        return None
    calibration = BaseDataLoader(
        _CalibrationSamples(x[:CALIBRATION_SAMPLES], y[:CALIBRATION_SAMPLES]),
        batch_size=CALIBRATION_BATCH_SIZE,
    )
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the request path only
        quantized = quantize_model(graph_def, StaticQuantConfig(), calibration)
    int8_graph = quantized.graph_def
    if not any(node.op.startswith("Quantized") for node in int8_graph.node):
        raise RuntimeError("INC returned a graph without quantized ops; int8.pb not written")
    return int8_graph


def _check_same_predictions(
    reference: Any, optimized: Any, input_name: str, output_name: str, x: np.ndarray
) -> None:
    expected = predict_graph(reference, input_name, output_name, x)
    got = predict_graph(optimized, input_name, output_name, x)
    difference = float(np.max(np.abs(expected - got)))
    if difference > MAX_PREDICTION_DIFFERENCE:
        raise RuntimeError(
            f"the optimized graph differs from the frozen graph by {difference:g} "
            f"(more than {MAX_PREDICTION_DIFFERENCE:g})"
        )


def _write_request(out_dir: Path, *, with_int8: bool) -> Path:
    workspace = out_dir / "workspace"
    workspace.mkdir(exist_ok=True)
    modes = ["benchmark", "accuracy"]
    body: dict[str, Any] = {
        "id": "sample",
        "workspace_path": str(workspace),
        "input_model": {"precision": "fp32", "path": str(out_dir / "fp32.pb"), "mods": modes},
        "benchmark": {
            "dataset": str(out_dir / "eval.npz"),
            "batch_size": REQUEST_BATCH_SIZE,
            "duration_s": 3,
        },
    }
    if with_int8:
        body["optimized_model"] = {
            "precision": "int8",
            "path": str(out_dir / "int8.pb"),
            "mods": modes,
        }
    BenchmarkRequest.model_validate(body)
    request_path = out_dir / "request.json"
    request_path.write_text(json.dumps(body, indent=2) + "\n")
    return request_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.tools.samples", description="Write the sample models into DIR."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--train-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    request = write_sample_models(args.directory, train_seconds=args.train_seconds)
    print(f"wrote {request} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
