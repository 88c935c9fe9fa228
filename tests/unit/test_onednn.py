"""The oneDNN decision and the op types it is made from (no TensorFlow here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.engine import graph_ops, onednn
from service.engine.graph_ops import _field
from service.figures import fingerprint

INT8_OPS = {"QuantizeV2", "QuantizedConv2DWithBiasAndReluAndRequantize", "Dequantize"}
AVX2 = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512_VNNI = AVX2 | {"avx512f", "avx512_vnni"}


def node(op: str, name: str = "n") -> bytes:
    """A NodeDef with a name, an op and a large attr that must be skipped, not parsed."""
    attr = _field(5, _field(1, b"value") + _field(2, b"\x00" * 5000))
    return _field(1, name.encode()) + _field(2, op.encode()) + attr


def graph(*ops: str, functions: tuple[tuple[str, ...], ...] = ()) -> bytes:
    body = b"".join(_field(1, node(op, f"n{i}")) for i, op in enumerate(ops))
    library = b"".join(
        _field(1, b"".join(_field(3, node(op)) for op in function)) for function in functions
    )
    return body + (_field(2, library) if functions else b"") + bytes([0x20, 0x7B])  # version


def test_graph_op_types_reads_nodes_and_function_library() -> None:
    data = graph("Placeholder", "Conv2D", functions=(("QuantizeV2", "Relu"),))

    assert graph_ops.graph_op_types(data) == {"Placeholder", "Conv2D", "QuantizeV2", "Relu"}


def test_saved_model_op_types_reads_every_meta_graph(tmp_path: Path) -> None:
    meta_graph = _field(2, graph("Placeholder", "MatMul"))
    (tmp_path / "saved_model.pb").write_bytes(bytes([0x08, 0x01]) + _field(2, meta_graph))

    assert graph_ops.model_op_types(tmp_path, "saved_model") == {"Placeholder", "MatMul"}
    assert graph_ops.model_op_types(tmp_path / "model.keras", "keras") is None


@pytest.mark.parametrize("data", [b"\x0a\xff\x01abc", b"\x0b", b"\x0a\x80"])
def test_bytes_that_are_not_a_graph_raise_a_parse_error(data: bytes) -> None:
    with pytest.raises(graph_ops.GraphParseError):
        graph_ops.graph_op_types(data)


@pytest.mark.parametrize(
    "op",
    [
        "QuantizedConv2DWithBiasAndReluAndRequantize",
        "QuantizedMatMulWithBiasAndDequantize",
        "QuantizedConv2DPerChannel",
        "QuantizedDepthwiseConv2D",
        "_QuantizedConv2D",
        "_FusedQuantizedConv2D",
        "_QuantizedMatMul",
        "_MklFusedConv2D",
    ],
)
def test_ops_with_onednn_only_kernels_are_recognised(op: str) -> None:
    assert onednn.needs_onednn([op, "Conv2D"]) == [op]


@pytest.mark.parametrize(
    "op", ["QuantizeV2", "Dequantize", "QuantizedMaxPool", "QuantizedAvgPool", "Conv2D"]
)
def test_ops_with_reference_kernels_are_not(op: str) -> None:
    assert onednn.needs_onednn([op]) == []


def test_auto_turns_onednn_on_for_an_int8_graph_and_says_which_op() -> None:
    decision = onednn.decide(
        "auto", {"input_model": {"Conv2D"}, "optimized_model": INT8_OPS}, AVX2, "x86_64"
    )

    assert decision.effective is True and decision.environment_value == "1"
    assert decision.reason == (
        "int8 graph: optimized_model has QuantizedConv2DWithBiasAndReluAndRequantize, "
        "which runs only on oneDNN"
    )
    details = decision.details(tensorflow_reports=True)
    assert details["requested"] == "auto" and details["effective"] == "on"
    assert details["tensorflow_reports"] == "on"
    assert details["environment"] == {"TF_ENABLE_ONEDNN_OPTS": "1"}


def test_auto_follows_tensorflows_cpu_default_for_fp32_graphs() -> None:
    models = {"input_model": {"Conv2D"}, "optimized_model": {"Conv2D"}}

    on_avx2 = onednn.decide("auto", models, AVX2, "x86_64")
    on_vnni = onednn.decide("auto", models, AVX512_VNNI, "x86_64")

    assert on_avx2.effective is False and "no AVX512_VNNI" in on_avx2.reason
    assert on_vnni.effective is True and "avx512_vnni" in on_vnni.reason
    assert "no model needs oneDNN" in on_vnni.reason


def test_auto_with_a_keras_model_says_its_ops_are_checked_once_loaded() -> None:
    decision = onednn.decide("auto", {"input_model": None}, AVX2, "x86_64")

    assert decision.effective is False
    assert "the ops of input_model are known only once TensorFlow loads it" in decision.reason


def test_off_with_an_int8_graph_is_refused_naming_the_op_and_the_fix() -> None:
    with pytest.raises(onednn.OneDnnConflict) as caught:
        onednn.decide("off", {"optimized_model": INT8_OPS}, AVX512_VNNI, "x86_64")

    message = str(caught.value)
    assert "benchmark.onednn is off" in message
    assert "QuantizedConv2DWithBiasAndReluAndRequantize" in message
    assert "set benchmark.onednn to on or auto" in message


def test_on_and_off_are_taken_as_given_for_fp32() -> None:
    models = {"input_model": {"Conv2D"}}

    assert onednn.decide("on", models, AVX2, "x86_64").effective is True
    assert onednn.decide("off", models, AVX512_VNNI, "x86_64").effective is False


def test_cpu_kernel_features_come_from_cpuinfo_flags() -> None:
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma avx512f avx512_vnni\n\n"

    assert fingerprint.kernel_features(cpuinfo) == ["avx", "avx2", "fma", "avx512f", "avx512_vnni"]
    assert fingerprint.cpu_flags("Features\t: fp asimd asimddp\n") == {"fp", "asimd", "asimddp"}
