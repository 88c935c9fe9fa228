"""Property tests of intake: for any body, exactly one decision, and the same one the request
schema makes (contracts/schemas/benchmark_request.schema.json, checked by the jsonschema
package as a second validator).

Where JSON Schema cannot say what the worker checks, the README lists it and these tests set
it apart explicitly (:func:`known_divergence`): ``max_duration_s`` below ``duration_s`` (a
comparison between two fields), and a whole-number float such as ``4.0`` for an integer
setting (JSON Schema counts it as an integer; the worker's strict types take JSON integers
only, as publishers in typed languages send them).

``HYPOTHESIS_PROFILE=long`` runs 20 times as many cases as the default profile.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from contracts import BenchmarkRequest
from service.consumer.intake import decide
from service.errors import RejectRequest

SCHEMA = json.loads(
    (
        __import__("pathlib").Path(__file__).resolve().parents[2]
        / "contracts/schemas/benchmark_request.schema.json"
    ).read_text()
)
settings.register_profile("default", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.register_profile("long", max_examples=6000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _ecma_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    """JSON Schema patterns are ECMA-262: ``$`` ends the input (Python's ``$`` also matches
    before a final newline, so the jsonschema package would take ``"fp32\\n"``)."""
    if isinstance(instance, str) and not re.search(pattern.replace("$", r"\Z"), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


SchemaValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _ecma_pattern}
)
SCHEMA_VALIDATOR = SchemaValidator(SCHEMA)


def worker_decision(body: bytes) -> bool:
    decision = decide(
        body, content_type="application/json", content_encoding=None, max_body_bytes=1 << 20
    )
    assert isinstance(decision, BenchmarkRequest | RejectRequest)  # nothing else, no raise
    if isinstance(decision, RejectRequest):
        assert decision.reason != "intake_error", str(decision)  # no bug on the way
    return isinstance(decision, BenchmarkRequest)


def known_divergence(data: Any) -> bool:
    """A body whose verdict JSON Schema cannot state (see the module docstring)."""
    if not isinstance(data, dict):
        return False
    bench = data.get("benchmark")
    if isinstance(bench, dict):
        cap, duration = bench.get("max_duration_s"), bench.get("duration_s", 5.0)
        numbers = all(type(v) in (int, float) for v in (cap, duration))
        if numbers and cap < duration:
            return True
    return _has_whole_float(data)


def _has_whole_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer()
    if isinstance(value, dict):
        return any(_has_whole_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_whole_float(v) for v in value)
    return False


def agree(data: Any) -> None:
    body = json.dumps(data).encode()
    if known_divergence(data):
        worker_decision(body)  # still exactly one decision
        return
    assert worker_decision(body) == SCHEMA_VALIDATOR.is_valid(data), data


@given(st.binary(max_size=512))
def test_any_bytes_get_exactly_one_decision(body: bytes) -> None:
    worker_decision(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(json_values)
def test_arbitrary_json_is_decided_as_the_schema_decides(data: Any) -> None:
    agree(data)


MODE = st.sampled_from(["performance", "benchmark", "accuracy", "turbo", 3, None, ["accuracy"]])
request_like = st.fixed_dictionaries(
    {"id": st.sampled_from(["job-1", "a.b", "", "x" * 129]),
     "input_model": st.fixed_dictionaries(
         {"precision": st.sampled_from(["fp32", "int8", "fp32\n", 32]),
          "path": st.sampled_from(["/m.pb", "", {"x": 1}])},
         optional={"mods": st.lists(MODE, max_size=3) | MODE, "modes": st.lists(MODE, max_size=2)}),
     },
    optional={"benchmark": st.dictionaries(
        st.sampled_from(["batch_size", "duration_s", "max_duration_s", "iterations", "warmup",
                         "instances", "onednn", "dataset", "inputs", "bogus"]),
        st.none() | st.booleans() | st.integers(-2, 200) | st.sampled_from(["4", "on", "x"])
        | st.floats(0.01, 100) | st.lists(st.sampled_from(["a:0", 1]), max_size=2),
        max_size=4),
        "optimized_model": st.just({"precision": "int8", "path": "/o.pb"})},
)  # fmt: skip


@given(request_like)
def test_request_shaped_json_is_decided_as_the_schema_decides(data: dict[str, Any]) -> None:
    agree(data)


@given(from_schema(SCHEMA))
def test_every_request_the_schema_generates_is_accepted_unless_documented(
    data: dict[str, Any],
) -> None:
    agree(data)


VALID_BASE = {"id": "job-1", "input_model": {"precision": "fp32", "path": "/m.pb"}}
SETTING_KEYS = ["batch_size", "instances", "cores_per_instance", "warmup", "warmup_s",
                "iterations", "duration_s", "min_iterations", "max_duration_s", "dataset",
                "metric", "inputs", "outputs", "timeout_s", "onednn", "bogus"]  # fmt: skip
SETTING_VALUES = (
    st.none() | st.booleans() | st.integers(-3, 300) | st.floats(-1, 300, allow_nan=False)
    | st.sampled_from(["4", "1.5", "on", "auto", "", "x:0"])
    | st.lists(st.sampled_from(["a:0", 1, None]), max_size=2)
    | st.fixed_dictionaries({}, optional={"topk": st.integers(0, 3) | st.just("1")})
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(SETTING_KEYS), SETTING_VALUES, min_size=1, max_size=3))
def test_each_benchmark_setting_is_typed_as_the_schema_types_it(settings_: dict[str, Any]) -> None:
    """A valid request with a few settings of any JSON type: "4" or true as a batch size,
    "1.5" as a duration, a number as a tensor name: the worker decides as the schema does."""
    agree({**VALID_BASE, "benchmark": settings_})
