"""Load any supported model into a TF1-style session running a frozen GraphDef.

Like Intel Neural Compressor, every format ends up as one frozen graph:

* ``frozen_pb``: a GraphDef file, used as it is;
* ``saved_model``: the ``serving_default`` signature, variables frozen to constants;
* ``keras`` (``.keras``/``.h5``): the model's inference call traced with its input spec and
  frozen.

Only the runner child imports this module (it imports TensorFlow).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from service.errors import StepFailed
from service.runner.protocol import RunnerConfig, RunnerModel, TensorInfo

STEP = "load_model"
SERVING_SIGNATURE = "serving_default"

# Ops that are never a model output even when nothing consumes them.
NON_OUTPUT_OPS = frozenset(
    {
        "NoOp",
        "Const",
        "Placeholder",
        "PlaceholderWithDefault",
        "Assert",
        "Print",
        "PrintV2",
        "CheckNumerics",
        "SaveV2",
        "RestoreV2",
        "Save",
        "Restore",
        "MergeV2Checkpoints",
        "VarHandleOp",
        "VariableV2",
        "Variable",
        "Assign",
        "AssignVariableOp",
        "ReadVariableOp",
        "ScalarSummary",
        "HistogramSummary",
        "TensorSummary",
        "TensorSummaryV2",
        "MergeSummary",
    }
)


@dataclass
class FrozenGraph:
    """A frozen GraphDef with its default input and output tensor names."""

    graph_def: tf.compat.v1.GraphDef
    inputs: list[str]
    outputs: list[str]


@dataclass
class LoadedModel:
    """A session ready to run: ``run(*arrays)`` feeds ``inputs`` and returns ``outputs``."""

    session: tf.compat.v1.Session
    inputs: list[TensorInfo]
    outputs: list[str]
    run: Callable[..., list[np.ndarray]]
    intra_op_threads: int
    inter_op_threads: int
    timed_run: Callable[..., Any] = field(repr=False)
    """The callable the timed loop uses: the bare output tensor when there is one output
    (a list fetch costs ~2% on a small model at batch 1, measured), else the list."""
    output_shapes: list[list[int | None] | None] = field(default_factory=list)
    freeze_cache: str | None = None
    """``hit`` or ``miss`` when the frozen graph came through the freeze cache."""

    def close(self) -> None:
        self.session.close()


def load_model(
    model: RunnerModel,
    *,
    cpu_count: int,
    inputs: Sequence[str] | None = None,
    outputs: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load ``model`` and build its session; raise :class:`StepFailed` on any problem.

    With ``cache_dir``, a SavedModel or Keras model is frozen once per content and TensorFlow
    version (:mod:`service.runner.freeze_cache`).
    """
    outcome = None
    if cache_dir is not None and model.format != "frozen_pb" and model.sha256:
        from service.runner.freeze_cache import frozen_with_cache

        frozen, outcome = frozen_with_cache(model, Path(cache_dir), lambda: freeze_model(model))
    else:
        frozen = freeze_model(model)
    graph = _import_graph(frozen.graph_def, model.path)
    input_names = _pick_tensors(graph, inputs, frozen.inputs, "inputs", model.path)
    output_names = _pick_tensors(graph, outputs, frozen.outputs, "outputs", model.path)
    loaded = _make_session(graph, input_names, output_names, cpu_count)
    loaded.freeze_cache = outcome
    return loaded


def load_for_workload(model: RunnerModel, config: RunnerConfig, cpu_count: int) -> LoadedModel:
    """:func:`load_model` with the workload's tensor names and freeze cache."""
    return load_model(
        model,
        cpu_count=cpu_count,
        inputs=config.inputs,
        outputs=config.outputs,
        cache_dir=config.freeze_cache_dir,
    )


def freeze_model(model: RunnerModel) -> FrozenGraph:
    """The model as a frozen graph, whatever its format."""
    path = Path(model.path)
    if not path.exists():
        raise StepFailed(STEP, f"model not found: {path} does not exist")
    loaders: dict[str, Callable[[Path], FrozenGraph]] = {
        "frozen_pb": load_frozen_pb,
        "saved_model": load_saved_model,
        "keras": load_keras,
    }
    return loaders[model.format](path)


def load_frozen_pb(path: Path) -> FrozenGraph:
    """Read a frozen GraphDef; inputs = Placeholders, outputs = nodes nothing consumes."""
    if not path.is_file():
        raise StepFailed(STEP, f"could not load frozen graph {path}: it is not a file")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except (DecodeError, ValueError) as exc:
        raise StepFailed(
            STEP,
            f"could not load frozen graph {path}: not a valid GraphDef protobuf ({exc}); "
            + (
                "a saved_model.pb belongs to a SavedModel: pass its directory"
                if path.name == "saved_model.pb"
                else "is it a frozen .pb file?"
            ),
        ) from None
    except OSError as exc:
        raise StepFailed(STEP, f"could not load frozen graph {path}: {exc.strerror}") from None
    if not graph_def.node:
        raise StepFailed(STEP, f"could not load frozen graph {path}: the graph has no nodes")
    return FrozenGraph(graph_def, guess_inputs(graph_def), guess_outputs(graph_def))


def guess_inputs(graph_def: tf.compat.v1.GraphDef) -> list[str]:
    return [f"{node.name}:0" for node in graph_def.node if node.op == "Placeholder"]


def guess_outputs(graph_def: tf.compat.v1.GraphDef) -> list[str]:
    """``name:0`` of every node no other node consumes (by data or control edge)."""
    consumed: set[str] = set()
    for node in graph_def.node:
        for source in node.input:
            consumed.add(source.lstrip("^").split(":")[0])
    return [
        f"{node.name}:0"
        for node in graph_def.node
        if node.name not in consumed and node.op not in NON_OUTPUT_OPS
    ]


def load_saved_model(path: Path) -> FrozenGraph:
    """Freeze the ``serving_default`` signature of a SavedModel directory."""
    if not path.is_dir():
        raise StepFailed(STEP, f"could not load SavedModel {path}: it is not a directory")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise StepFailed(STEP, f"could not load SavedModel {path}: {_reason(exc)}") from None
    signatures = getattr(loaded, "signatures", {})
    if SERVING_SIGNATURE not in signatures:
        raise StepFailed(
            STEP,
            f"SavedModel {path} has no '{SERVING_SIGNATURE}' signature "
            f"(it has: {sorted(signatures) or 'none'}); re-export it with a serving signature",
        )
    return freeze_function(signatures[SERVING_SIGNATURE], f"SavedModel {path}")


def load_keras(path: Path) -> FrozenGraph:
    """Load a ``.keras``/``.h5`` model (safe mode, not compiled) and freeze its inference."""
    import keras

    if not path.is_file():
        raise StepFailed(STEP, f"could not load Keras model {path}: it is not a file")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        raise StepFailed(STEP, _keras_load_error(path, exc)) from None
    return freeze_keras_model(model, f"Keras model {path}")


_CUSTOM_OBJECT = re.compile(
    r"Could not locate (?:class|function) '([^']+)'|Unknown (?:layer|object|activation|loss)"
    r"[^:']*:? '?([A-Za-z0-9_.>]+)"
)


def _keras_load_error(path: Path, exc: BaseException) -> str:
    """Keras' advice for custom objects (register them) cannot work here: the worker never
    imports the user's code. Say what can."""
    found = _CUSTOM_OBJECT.search(str(exc))
    if found is None:
        return f"could not load Keras model {path}: {_reason(exc)}"
    name = found.group(1) or found.group(2)
    return (
        f"could not load Keras model {path}: it uses '{name}', a custom layer or function "
        "defined in your code, and the worker never imports your code, so Keras cannot rebuild "
        "it. Export the model where your code is (model.export(DIR) writes a SavedModel, or "
        "freeze it to a .pb) and benchmark that"
    )


def freeze_keras_model(model: Any, what: str = "Keras model") -> FrozenGraph:
    """Trace ``model(inputs, training=False)`` with the model's input spec and freeze it."""
    model_inputs = list(model.inputs)
    specs = [
        tf.TensorSpec(tensor.shape, tensor.dtype, name=_op_name(tensor.name, index))
        for index, tensor in enumerate(model_inputs)
    ]

    def infer(*args: tf.Tensor) -> Any:
        return model(args[0] if len(args) == 1 else list(args), training=False)

    function = tf.function(infer, input_signature=specs, autograph=False)
    try:
        concrete = function.get_concrete_function()
    except Exception as exc:
        raise StepFailed(STEP, f"could not trace {what}: {_reason(exc)}") from None
    return freeze_function(concrete, what)


def freeze_function(concrete: Any, what: str) -> FrozenGraph:
    """Freeze a concrete function's variables into constants."""
    try:
        frozen = convert_variables_to_constants_v2(concrete)
    except Exception as exc:
        raise StepFailed(STEP, f"could not freeze {what}: {_reason(exc)}") from None
    inputs = [tensor.name for tensor in frozen.inputs if tensor.dtype != tf.resource]
    outputs = [tensor.name for tensor in frozen.outputs]
    return FrozenGraph(frozen.graph.as_graph_def(), inputs, outputs)


def _op_name(name: str, index: int) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name.split(":")[0])
    return cleaned if re.match(r"^[A-Za-z0-9.]", cleaned) else f"input_{index}"


def _import_graph(graph_def: tf.compat.v1.GraphDef, path: str) -> tf.Graph:
    graph = tf.Graph()
    try:
        with graph.as_default():
            tf.import_graph_def(graph_def, name="")
    except Exception as exc:
        raise StepFailed(
            STEP,
            f"could not import the graph of {path} into TensorFlow {tf.__version__}: "
            f"{_reason(exc)}",
        ) from None
    return graph


def _pick_tensors(
    graph: tf.Graph,
    given: Sequence[str] | None,
    guessed: list[str],
    kind: str,
    path: str,
) -> list[str]:
    """The configured tensor names (checked against the graph), else the guessed ones."""
    if given:
        names = [name if ":" in name else f"{name}:0" for name in given]
        for name in names:
            _check_tensor(graph, name, kind, guessed)
        return names
    if not guessed:
        raise StepFailed(
            STEP,
            f"could not find the model's {kind} in {path}; name them in benchmark.{kind} "
            "(tensor names such as 'input:0')",
        )
    return guessed


def _check_tensor(graph: tf.Graph, name: str, kind: str, guessed: list[str]) -> None:
    try:
        graph.get_tensor_by_name(name)
    except (KeyError, ValueError):
        raise StepFailed(
            STEP,
            f"tensor '{name}' given in benchmark.{kind} is not in the graph "
            f"(the {kind} found by default are {guessed})",
        ) from None


def _make_session(
    graph: tf.Graph, input_names: list[str], output_names: list[str], cpu_count: int
) -> LoadedModel:
    config = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=cpu_count,
        inter_op_parallelism_threads=1,
        allow_soft_placement=True,
    )
    feeds = [graph.get_tensor_by_name(name) for name in input_names]
    fetches = [graph.get_tensor_by_name(name) for name in output_names]
    infos = [_tensor_info(tensor) for tensor in feeds]
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        run = session.make_callable(fetches, feed_list=feeds)
        timed_run = session.make_callable(fetches[0], feed_list=feeds) if len(fetches) == 1 else run
    except Exception as exc:
        session.close()
        raise StepFailed(STEP, f"could not prepare the session: {_reason(exc)}") from None
    return LoadedModel(
        session=session,
        inputs=infos,
        outputs=output_names,
        run=run,
        timed_run=timed_run,
        intra_op_threads=cpu_count,
        inter_op_threads=1,
        output_shapes=[_shape(tensor) for tensor in fetches],
    )


def _tensor_info(tensor: tf.Tensor) -> TensorInfo:
    shape = _shape(tensor)
    if shape is None:
        raise StepFailed(
            STEP,
            f"input '{tensor.name}' has an unknown rank (a Placeholder without a shape); "
            "give the Placeholder a shape when exporting the model",
        )
    return TensorInfo(name=tensor.name, shape=shape, dtype=tensor.dtype.name)


def _shape(tensor: tf.Tensor) -> list[int | None] | None:
    if tensor.shape.rank is None:
        return None
    return list(tensor.shape.as_list())


def _reason(exc: BaseException, limit_chars: int = 600) -> str:
    """An exception's message on one line, prefixed with its type, cut to ``limit_chars``."""
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    if len(text) > limit_chars:
        text = text[: limit_chars - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
