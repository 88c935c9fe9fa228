"""Frozen graphs of SavedModels and Keras models, frozen once and kept in the workspace.

Freezing a SavedModel costs seconds and hundreds of MB per process, and every runner of a
request (and the pre-flight check) would pay it again for the same graph. The first one
freezes and writes ``<cache>/<key>.pb`` with ``<key>.json`` (the input and output tensor
names, what it was made from); the others read the same GraphDef back, so the benchmarked
graph is byte for byte the same. The key is the SHA-256 of the model's content (computed by
the worker), its format, the TensorFlow version and the oneDNN setting: a changed model, a
new TensorFlow or another setting never reads an old entry. A corrupt or half-present entry
is a miss and is written again. Writes go to temporary files renamed into place, the JSON
last, so a reader sees a whole entry or none.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import tensorflow as tf
from google.protobuf.message import DecodeError

from service.atomic import write_atomic
from service.runner.protocol import RunnerModel

if TYPE_CHECKING:
    from service.runner.loading import FrozenGraph

CacheOutcome = Literal["hit", "miss"]
KEY_VERSION = 1  # bump when what goes into an entry changes


def cache_key(model: RunnerModel) -> str:
    parts = {
        "key_version": KEY_VERSION,
        "model_sha256": model.sha256,
        "format": model.format,
        "tensorflow": tf.__version__,
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def frozen_with_cache(
    model: RunnerModel, cache_dir: Path, freeze: Callable[[], FrozenGraph]
) -> tuple[FrozenGraph, CacheOutcome]:
    """The model's frozen graph from the cache, or from ``freeze()`` (then stored)."""
    key = cache_key(model)
    graph_path, meta_path = cache_dir / f"{key}.pb", cache_dir / f"{key}.json"
    cached = _read(graph_path, meta_path)
    if cached is not None:
        return cached, "hit"
    frozen = freeze()
    _write(frozen, model, graph_path, meta_path)
    return frozen, "miss"


def _read(graph_path: Path, meta_path: Path) -> FrozenGraph | None:
    from service.runner.loading import FrozenGraph

    try:
        meta = json.loads(meta_path.read_text())
        graph_def = tf.compat.v1.GraphDef()
        graph_def.ParseFromString(graph_path.read_bytes())
    except (OSError, ValueError, DecodeError):
        return None
    if not graph_def.node or not isinstance(meta, dict):
        return None
    return FrozenGraph(graph_def, list(meta.get("inputs", [])), list(meta.get("outputs", [])))


def _write(frozen: FrozenGraph, model: RunnerModel, graph_path: Path, meta_path: Path) -> None:
    """Best effort: a cache that cannot be written costs time, never the benchmark."""
    meta = {
        "inputs": frozen.inputs,
        "outputs": frozen.outputs,
        "model_path": model.path,
        "model_sha256": model.sha256,
        "format": model.format,
        "tensorflow": tf.__version__,
    }
    try:
        graph_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(graph_path, frozen.graph_def.SerializeToString())
        write_atomic(meta_path, json.dumps(meta))  # last: an entry is whole or absent
    except OSError as exc:
        print(f"freeze cache: could not store {graph_path}: {exc.strerror}", flush=True)
