"""One oneDNN setting per request, decided in the worker before any runner starts TensorFlow.

TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once, when it initialises, and without it turns
oneDNN on only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX (``DefaultOneDnnPolicy``
in tensorflow/core/util/port.cc; on Arm, Neoverse V1 only). INC's int8 graphs need oneDNN:
their quantized ops (``QuantizedConv2DWithBiasAndReluAndRequantize``, ...) are registered for
the CPU as placeholders that output nothing, rewritten to oneDNN kernels only when oneDNN is
on. And oneDNN changes fp32 speed too, so both models of a request always run under the same
effective value: a speedup never mixes oneDNN's gain into quantization's.

``auto`` is on when a model holds ops that run only on oneDNN, or when TensorFlow enables it
by default on this CPU; otherwise off. ``on`` and ``off`` are taken as given, but ``off`` with
such ops fails the request at ``prepare``, before anything is measured.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.errors import ServiceError

OneDnnSetting = Literal["auto", "on", "off"]
ENV_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"

# x86 CPU flags (as /proc/cpuinfo names them) that make TensorFlow enable oneDNN by default.
DEFAULT_ON_FEATURES = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
_NEOVERSE_V1 = (0x41, 0xD40)  # MIDR implementer (Arm) and part number
_MIDR = Path("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1")

# Op types whose CPU kernel exists only with oneDNN: TensorFlow's internal _Mkl* ops, the
# fused quantized ops INC emits (_QuantizedConv2D, _FusedQuantizedConv2D, _QuantizedMatMul,
# ...) and the public quantized conv/matmul fusions registered as NoOp placeholders
# (tensorflow/core/kernels/mkl/mkl_conv_ops.cc, mkl_qmatmul_op.cc). Plain QuantizeV2,
# Dequantize, QuantizedMaxPool, QuantizedAvgPool have reference kernels and are not listed.
ONEDNN_ONLY_OP = re.compile(
    r"^(_Mkl|_Quantized|_FusedQuantized)"
    r"|^Quantized(Conv2D|DepthwiseConv2D|MatMul)(With|And|PerChannel)"
    r"|^QuantizedDepthwiseConv2D$"
    r"|^QuantizedConcatV2$"
)


class OneDnnConflict(ServiceError, ValueError):
    """``onednn: off`` asked for a model that cannot run without oneDNN."""


def needs_onednn(op_types: Iterable[str]) -> list[str]:
    """The op types, sorted, that run only on oneDNN.

    >>> needs_onednn(["Conv2D", "QuantizeV2", "QuantizedConv2DWithBiasAndReluAndRequantize"])
    ['QuantizedConv2DWithBiasAndReluAndRequantize']
    """
    return sorted({op for op in op_types if ONEDNN_ONLY_OP.search(op)})


def tensorflow_default(flags: Iterable[str], machine: str | None = None) -> tuple[bool, str]:
    """Whether TensorFlow turns oneDNN on by default on this CPU, and why, in words."""
    machine = machine or platform.machine()
    if machine in ("aarch64", "arm64"):
        if _is_neoverse_v1():
            return True, "TensorFlow enables oneDNN by default on this CPU (Arm Neoverse V1)"
        return False, "TensorFlow leaves oneDNN off by default on this Arm CPU (not Neoverse V1)"
    present = [feature for feature in DEFAULT_ON_FEATURES if feature in set(flags)]
    if present:
        return True, f"TensorFlow enables oneDNN by default on this CPU ({', '.join(present)})"
    return False, (
        "TensorFlow leaves oneDNN off by default on this CPU "
        "(no AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX)"
    )


def _is_neoverse_v1() -> bool:
    try:
        midr = int(_MIDR.read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return ((midr >> 24) & 0xFF, (midr >> 4) & 0xFFF) == _NEOVERSE_V1


@dataclass(frozen=True)
class OneDnnDecision:
    """The effective setting of one request and why."""

    requested: OneDnnSetting
    effective: bool
    reason: str
    ops_needing_onednn: dict[str, list[str]]

    @property
    def environment_value(self) -> str:
        return "1" if self.effective else "0"

    def details(self, tensorflow_reports: bool | None = None) -> dict[str, Any]:
        """What every step reports: requested, effective, why, and TensorFlow's read-back."""
        out: dict[str, Any] = {
            "requested": self.requested,
            "effective": "on" if self.effective else "off",
            "reason": self.reason,
            "environment": {ENV_VARIABLE: self.environment_value},
            "ops_needing_onednn": self.ops_needing_onednn,
        }
        if tensorflow_reports is not None:
            out["tensorflow_reports"] = "on" if tensorflow_reports else "off"
        return out


def decide(
    requested: OneDnnSetting,
    ops_by_role: Mapping[str, set[str] | None],
    flags: Iterable[str],
    machine: str | None = None,
) -> OneDnnDecision:
    """The effective setting for a request whose models hold ``ops_by_role``.

    ``None`` for a role means its op types are not known before loading (a Keras file); the
    pre-flight's one-call check covers it. Raises :class:`OneDnnConflict` for ``off`` with ops
    that need oneDNN.
    """
    needing = {role: ops for role, op_types in ops_by_role.items()
               if op_types and (ops := needs_onednn(op_types))}  # fmt: skip
    default_on, default_reason = tensorflow_default(flags, machine)
    if requested == "off":
        if needing:
            raise OneDnnConflict(
                f"benchmark.onednn is off, but {_describe(needing)}: TensorFlow has no working "
                "CPU kernel for them without oneDNN (it would fail with 'Missing 0-th output'); "
                "set benchmark.onednn to on or auto"
            )
        return OneDnnDecision("off", False, "requested off", needing)
    if requested == "on":
        return OneDnnDecision("on", True, "requested on", needing)
    if needing:
        reason = f"int8 graph: {_describe(needing)}"
        return OneDnnDecision("auto", True, reason, needing)
    unknown = sorted(role for role, op_types in ops_by_role.items() if op_types is None)
    reason = default_reason + ("; no model needs oneDNN" if not unknown else "")
    if unknown:
        reason += (
            f"; the ops of {', '.join(unknown)} are known only once TensorFlow loads it "
            "(a Keras file), and the pre-flight check runs it"
        )
    return OneDnnDecision("auto", default_on, reason, needing)


def _describe(needing: Mapping[str, list[str]]) -> str:
    parts = []
    for role, ops in needing.items():
        shown = ", ".join(ops[:4]) + (f" and {len(ops) - 4} more" if len(ops) > 4 else "")
        verb = "runs" if len(ops) == 1 else "run"
        parts.append(f"{role} has {shown}, which {verb} only on oneDNN")
    return "; ".join(parts)
