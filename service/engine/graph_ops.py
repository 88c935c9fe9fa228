"""The op types of a TensorFlow model, read from its protobuf without TensorFlow.

The worker must decide the oneDNN setting before any runner starts TensorFlow (TensorFlow
reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it initialises), so it reads the graph itself:
a frozen ``GraphDef`` (``.pb``) or a SavedModel's ``saved_model.pb``, including the nodes of
their function libraries. Only the wire format is parsed; tensor contents are skipped by
length, so a 100 MB model costs little.

Field numbers (tensorflow/core/framework/graph.proto, node_def.proto, function.proto,
tensorflow/core/protobuf/saved_model.proto, meta_graph.proto):

* ``GraphDef``: ``node = 1`` (NodeDef), ``library = 2`` (FunctionDefLibrary);
* ``NodeDef``: ``op = 2``;
* ``FunctionDefLibrary``: ``function = 1``; ``FunctionDef``: ``node_def = 3``;
* ``SavedModel``: ``meta_graphs = 2``; ``MetaGraphDef``: ``graph_def = 2``.

Keras files hold layers, not ops: :func:`model_op_types` returns ``None`` for them (the
pre-flight check's one call covers them).

>>> node = _field(2, b"Conv2D")
>>> sorted(graph_op_types(_field(1, node) + _field(1, _field(2, b"Relu"))))
['Conv2D', 'Relu']
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from service.errors import ServiceError

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
SAVED_MODEL_FILE = "saved_model.pb"


class GraphParseError(ServiceError, ValueError):
    """The bytes are not the protobuf message they should be."""


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(data):
            raise GraphParseError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise GraphParseError("varint longer than 10 bytes")


def _fields(data: memoryview) -> Iterator[tuple[int, memoryview | None]]:
    """(field number, bytes of a length-delimited field or None) for every field of a message."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, position = _varint(data, position)
            yield number, None
        elif wire_type == _FIXED64:
            position += 8
            yield number, None
        elif wire_type == _FIXED32:
            position += 4
            yield number, None
        elif wire_type == _LENGTH:
            length, position = _varint(data, position)
            end = position + length
            if end > len(data):
                raise GraphParseError("a field runs past the end of its message")
            yield number, data[position:end]
            position = end
        else:
            raise GraphParseError(f"unsupported wire type {wire_type}")
        if position > len(data):
            raise GraphParseError("a field runs past the end of its message")


def _children(data: memoryview, number: int) -> Iterator[memoryview]:
    for field_number, value in _fields(data):
        if field_number == number and value is not None:
            yield value


def _node_op(node: memoryview) -> str | None:
    for value in _children(node, 2):
        return bytes(value).decode("utf-8", errors="replace")
    return None


def _graph_ops(graph: memoryview, out: set[str]) -> None:
    for field_number, value in _fields(graph):
        if value is None:
            continue
        if field_number == 1:
            op = _node_op(value)
            if op:
                out.add(op)
        elif field_number == 2:
            for function in _children(value, 1):
                for node in _children(function, 3):
                    op = _node_op(node)
                    if op:
                        out.add(op)


def graph_op_types(data: bytes | memoryview) -> set[str]:
    """The op types of a serialized ``GraphDef``, its function library included."""
    out: set[str] = set()
    _graph_ops(memoryview(data), out)
    return out


def saved_model_op_types(data: bytes | memoryview) -> set[str]:
    """The op types of every meta graph of a serialized ``SavedModel``."""
    out: set[str] = set()
    for meta_graph in _children(memoryview(data), 2):
        for graph in _children(meta_graph, 2):
            _graph_ops(graph, out)
    return out


def model_op_types(path: Path, model_format: str) -> set[str] | None:
    """The op types of the model at ``path``; None for formats without a graph (Keras).

    Raises :class:`GraphParseError` (bytes that are not the expected protobuf) or
    :class:`OSError`.
    """
    if model_format == "frozen_pb":
        return graph_op_types(path.read_bytes())
    if model_format == "saved_model":
        return saved_model_op_types((path / SAVED_MODEL_FILE).read_bytes())
    return None


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (for doctests and unit tests)."""
    key = _encode_varint(number << 3 | _LENGTH)
    return key + _encode_varint(len(payload)) + payload


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
