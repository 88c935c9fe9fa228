"""The request and event contracts, as publishers and subscribers use them."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from contracts import (
    BenchmarkRequest,
    FinishEvent,
    ProgressEvent,
    StartEvent,
    error_finish,
    parse_event,
    routing_key,
    workload_binding,
)

SEED = {
    "id": "configuration_id",
    "workspace_path": "/path/to/workspace",
    "input_model": {"precision": "fp32", "path": "/localdisk/fp32.pb"},
    "optimized_model": {"precision": "int8", "path": "/localdisk/int8.pb"},
}


def test_seed_example_is_accepted_as_it_is() -> None:
    """The seed page's example body validates; both models default to performance."""
    request = BenchmarkRequest.model_validate(SEED)
    assert [(role, mode) for role, _, mode in request.steps()] == [
        ("input_model", "performance"),
        ("optimized_model", "performance"),
    ]


@pytest.mark.parametrize("key", ["mode", "mods"])
def test_mode_and_mods_both_accepted_with_benchmark_alias(key: str) -> None:
    """INC's code key 'mode' and its page's 'mods' both work; 'benchmark' means performance."""
    body = {**SEED, "input_model": {**SEED["input_model"], key: ["accuracy", "benchmark"]}}
    body["benchmark"] = {"dataset": "/d.npz"}
    request = BenchmarkRequest.model_validate(body)
    assert request.input_model.modes == ("performance", "accuracy")


def test_optimized_model_is_optional() -> None:
    """Without an optimized model only the input model is benchmarked."""
    body = {k: v for k, v in SEED.items() if k != "optimized_model"}
    assert len(BenchmarkRequest.model_validate(body).steps()) == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": "has.dot"}, "id"),
        ({"id": ""}, "id"),
        ({"colour": "red"}, "colour"),
        ({"input_model": {"precision": "fp32", "path": "/m.pb", "modz": []}}, "input_model.modz"),
        ({"input_model": {"precision": "fp32", "path": "/m.pb", "mods": ["fast"]}}, "input_model"),
        ({"input_model": {"path": "/m.pb"}}, "input_model.precision"),
        ({"benchmark": {"batch_size": 0}}, "benchmark.batch_size"),
        ({"benchmark": {"duration_s": -1}}, "benchmark.duration_s"),
        ({"benchmark": {"metric": {"topk": 0}}}, "benchmark.metric.topk"),
        ({"benchmark": {"instance": 2}}, "benchmark.instance"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(patch: dict[str, object], field: str) -> None:
    """A typo or a bad value fails with a message that names the field."""
    with pytest.raises(ValidationError) as caught:
        BenchmarkRequest.model_validate({**SEED, **patch})
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert any(loc.startswith(field) for loc in locations), locations


def test_accuracy_without_dataset_is_a_valid_request_as_in_the_seed() -> None:
    """The seed asks for accuracy and names no dataset (INC takes it from the workload's
    configuration): the worker looks for it beside the model, so the request is valid."""
    body = {**SEED, "input_model": {**SEED["input_model"], "mods": ["benchmark", "accuracy"]}}
    assert BenchmarkRequest.model_validate(body).benchmark.dataset is None


def test_max_duration_below_duration_is_rejected() -> None:
    """A cap shorter than the minimum window is a contradiction, reported with both values."""
    with pytest.raises(ValidationError, match="max_duration_s"):
        BenchmarkRequest.model_validate(
            {**SEED, "benchmark": {"duration_s": 10, "max_duration_s": 5}}
        )


def test_request_round_trips_through_its_body() -> None:
    """What a publisher serialises, the worker parses back to the same request."""
    request = BenchmarkRequest.model_validate({**SEED, "benchmark": {"batch_size": 8}})
    assert BenchmarkRequest.model_validate_json(request.to_body()) == request


def test_routing_keys_follow_the_spec() -> None:
    """benchmark.<id>.<phase>; bindings for one workload and ids that cannot be routed."""
    assert routing_key("job-1", "progress") == "benchmark.job-1.progress"
    assert workload_binding("job-1") == "benchmark.job-1.#"
    with pytest.raises(ValueError, match="does not match"):
        routing_key("a.#", "start")


def test_events_parse_by_subject_and_finish_by_status() -> None:
    """Subscribers get typed events; an error finish carries message and step."""
    start = parse_event(b'{"subject":"benchmark_start","status":"success","data":{"id":"a"}}')
    assert isinstance(start, StartEvent) and start.data.message == "started"
    error = parse_event(error_finish("a", "model not found", "validate").to_body())
    assert isinstance(error, FinishEvent) and not error.ok
    assert error.data.step == "validate" and error.routing_key == "benchmark.a.finish"
    progress_body = {
        "subject": "benchmark_progress",
        "status": "success",
        "data": {
            "id": "a", "execution_details": {}, "progress": "1/2", "current_step": 1,
            "number_of_steps": 2, "perf_throughput_input_model": 12.5, "new_field": [1],
        },
    }  # fmt: skip
    progress = parse_event(json.dumps(progress_body))
    assert isinstance(progress, ProgressEvent)
    assert progress.data.perf_throughput_input_model == 12.5
    assert progress.data.model_dump()["new_field"] == [1]  # later fields pass through


def test_contracts_import_nothing_but_pydantic() -> None:
    """A publisher can use contracts/ without the worker's dependencies."""
    import subprocess
    import sys

    code = (
        "import sys, contracts; "
        "bad = [m for m in ('aio_pika', 'tensorflow', 'structlog', 'yaml', 'service') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
