"""The checked-in JSON Schemas and AsyncAPI document: generated from the contracts, no drift."""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

import contracts
from contracts import (
    CANCEL_BINDING,
    CONTROL_EXCHANGE,
    EVENTS_EXCHANGE,
    NODE_STATUS_BINDING,
    REQUESTS_QUEUE,
    request_queue_arguments,
)
from service.tools.asyncapi import ASYNCAPI_FILE, asyncapi_document, json_schemas, render
from tests.conftest import REPO

SCHEMAS = REPO / "contracts" / "schemas"
REGENERATE = "run: benchmark-worker schema contracts/schemas (and commit the files)"
SEED = {
    "id": "configuration_id",
    "workspace_path": "/path/to/workspace",
    "input_model": {"precision": "fp32", "path": "/models/fp32.pb", "mods": ["benchmark"]},
    "optimized_model": {"precision": "int8", "path": "/models/int8.pb"},
}


def test_checked_in_schemas_equal_what_the_contracts_generate() -> None:
    """Every file in contracts/schemas is byte-equal to the generator's output, none missing."""
    generated = render()
    checked_in = {
        path.name: path.read_text(encoding="utf-8") for path in SCHEMAS.iterdir() if path.is_file()
    }
    assert sorted(checked_in) == sorted(generated), REGENERATE
    drifted = [name for name, text in generated.items() if checked_in[name] != text]
    assert not drifted, f"{drifted} differ from the contracts; {REGENERATE}"


def test_schema_verb_writes_the_checked_in_files(tmp_path: Path) -> None:
    """`benchmark-worker schema DIR` writes exactly the files kept in the repository."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "schema", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}
    assert written == {path.name: path.read_bytes() for path in SCHEMAS.iterdir() if path.is_file()}
    assert len(done.stdout.splitlines()) == len(written)


@pytest.mark.parametrize("module_name", sorted(
    name for _, name, _ in pkgutil.walk_packages(contracts.__path__, "contracts.")
))  # fmt: skip
def test_docstring_examples_of_the_contracts_run(module_name: str) -> None:
    """Every example in the contracts' docstrings runs and prints what it says."""
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def test_every_public_module_of_the_contracts_has_examples() -> None:
    """The library's modules (not the client, which needs a broker) show how to use them."""
    for name in ("contracts", "contracts.routing", "contracts.requests", "contracts.events",
                 "contracts.control", "contracts.node"):  # fmt: skip
        tests = doctest.DocTestFinder().find(importlib.import_module(name))
        assert sum(len(t.examples) for t in tests) > 0, name


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_request_schema_accepts_the_seed_and_rejects_what_the_worker_rejects() -> None:
    """The request schema takes INC's body (mods, mode) and refuses typos, as the contract does."""
    validator = _validator("benchmark_request.schema.json")
    validator.validate(SEED)
    validator.validate({**SEED, "input_model": {**SEED["input_model"], "mods": "accuracy"}})
    validator.validate({**SEED, "benchmark": {"batch_size": 8, "metric": {"topk": 5}}})
    bad = [
        {**SEED, "colour": "red"},
        {**SEED, "id": "has.dot"},
        {**SEED, "input_model": {"precision": "fp32", "path": "/m.pb", "mods": ["fast"]}},
        {**SEED, "input_model": {"precision": "fp32", "path": "/m.pb", "mode": [], "mods": []}},
        {**SEED, "benchmark": {"batch_size": 0}},
    ]
    for body in bad:
        assert not validator.is_valid(body), body
        with pytest.raises(ValidationError):  # the contract refuses it too
            contracts.BenchmarkRequest.model_validate(body)


def test_every_example_in_the_asyncapi_document_validates_against_its_json_schema() -> None:
    """The document's examples (built from the contracts) pass the checked-in JSON Schemas."""
    document = yaml.safe_load((SCHEMAS / ASYNCAPI_FILE).read_text())
    checked = 0
    for key, message in document["components"]["messages"].items():
        if key == "deadLetter":
            continue
        validator = _validator(f"{message['name']}.schema.json")
        for example in message["examples"]:
            validator.validate(example["payload"])
            checked += 1
    assert checked >= 7


def test_error_finish_and_node_status_from_the_contracts_validate() -> None:
    """Messages the worker builds with the contracts are valid by the schemas subscribers use."""
    finish = contracts.error_finish("job-1", "cancelled", "input_model/performance", run_id="r1")
    _validator("benchmark_finish.schema.json").validate(json.loads(finish.to_body()))
    cancel = contracts.CancelRequest(id="job-1")
    _validator("benchmark_cancel.schema.json").validate(json.loads(cancel.to_body()))
    assert not _validator("node_status.schema.json").is_valid({"subject": "node_status"})


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_asyncapi_document_describes_the_whole_interface() -> None:
    """AsyncAPI 3.0: request queue, events with routing keys, control and node status; refs hold."""
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    for ref in _refs(document):
        _resolve(document, ref)  # raises KeyError on a dangling reference
    channels = document["channels"]
    assert channels["requests"]["address"] == REQUESTS_QUEUE
    assert channels["requests"]["x-amqp-queue-arguments"] == request_queue_arguments()
    addresses = {
        name: (channel["address"], channel["bindings"]["amqp"].get("exchange", {}).get("name"))
        for name, channel in channels.items()
    }
    assert addresses["workloadStart"] == ("benchmark.{workloadId}.start", EVENTS_EXCHANGE)
    assert addresses["workloadProgress"] == ("benchmark.{workloadId}.progress", EVENTS_EXCHANGE)
    assert addresses["workloadFinish"] == ("benchmark.{workloadId}.finish", EVENTS_EXCHANGE)
    assert addresses["workloadCancel"] == ("benchmark.{workloadId}.cancel", CONTROL_EXCHANGE)
    assert addresses["nodeStatus"] == ("node.{nodeId}.status", EVENTS_EXCHANGE)
    assert CANCEL_BINDING in channels["workloadCancel"]["description"]
    assert NODE_STATUS_BINDING in channels["nodeStatus"]["description"]
    for name, operation in document["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:  # AsyncAPI 3: a message of that very channel
            assert message["$ref"].startswith(channel_ref + "/messages/"), name
    sent = {op["channel"]["$ref"] for op in document["operations"].values()}
    assert sent == {f"#/channels/{name}" for name in channels}


def test_json_schemas_cover_the_request_and_every_message() -> None:
    """One standalone JSON Schema each for the request, every event, cancel and node status."""
    assert sorted(json_schemas()) == sorted([
        "benchmark_request.schema.json", "benchmark_start.schema.json",
        "benchmark_progress.schema.json", "benchmark_finish.schema.json",
        "benchmark_cancel.schema.json", "node_status.schema.json",
    ])  # fmt: skip


def test_the_asyncapi_examples_are_a_consistent_recorded_run() -> None:
    """The examples come from ops/record_examples.py, not from a hand: the optimized step's
    command runs the optimized model, the finish counts the steps it holds, and the headline
    figures are the steps' own."""
    import yaml

    document = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    (success, error) = document["components"]["messages"]["benchmarkFinish"]["examples"]
    data = success["payload"]["data"]
    steps = [(model, mode) for model, modes in data["execution_details"].items() for mode in modes]
    assert data["progress"] == f"{len(steps)}/{len(steps)}" == f"{data['number_of_steps']}/3"
    optimized = data["execution_details"]["optimized_model_benchmark"]["performance"]
    assert "--model optimized_model" in optimized["command"]
    assert data["perf_throughput_optimized_model"] == optimized["throughput_samples_per_s"]
    accuracy = data["execution_details"]["input_model_benchmark"]["accuracy"]
    assert data["acc_input_model"] == accuracy["accuracy"]
    assert error["payload"]["status"] == "error" and error["payload"]["data"]["step"]
