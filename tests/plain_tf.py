"""Expected figures from plain TensorFlow, in a fresh process with an explicit oneDNN setting.

TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it starts, and int8 numerics depend on the
CPU and on oneDNN: the expected accuracy of a model is computed here, on the same machine,
under the setting the worker used, never taken as a constant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port

model_path, dataset_path = sys.argv[1], sys.argv[2]
graph_def = tf.compat.v1.GraphDef()
graph_def.ParseFromString(open(model_path, "rb").read())
graph = tf.Graph()
with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
operations = graph.get_operations()
placeholders = [op for op in operations if op.type == "Placeholder"]
consumed = {inp.op.name for op in operations for inp in op.inputs}
outputs = [op for op in operations
           if op.name not in consumed and op.type not in ("NoOp", "Const") and op.outputs]
data = np.load(dataset_path)
with tf.compat.v1.Session(graph=graph) as session:
    scores = session.run(outputs[0].outputs[0], {placeholders[0].outputs[0]: data["x"]})
print(json.dumps({
    "accuracy": float(np.mean(np.argmax(scores, axis=1) == data["y"])),
    "onednn_enabled": bool(_pywrap_util_port.IsMklEnabled()),
}))
"""


def plain_accuracy(model_path: str | Path, dataset_path: str | Path, *, onednn: bool) -> float:
    """Top-1 accuracy of a frozen graph over the .npz, argmax over the whole set at once."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(model_path), str(dataset_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["onednn_enabled"] is onednn, "TensorFlow did not take TF_ENABLE_ONEDNN_OPTS"
    return float(result["accuracy"])
