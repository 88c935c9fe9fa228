"""JSON Schemas and the AsyncAPI 3.0 document of the whole interface, from the contracts.

``benchmark-worker schema DIR`` writes them; the repository keeps them in ``contracts/schemas/``
and a test fails when they drift from the contracts. Everything here is derived from
``contracts`` (models, names, routing keys), nothing is written by hand twice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts import (
    ALL_FINISHES_BINDING,
    CANCEL_BINDING,
    CANCEL_MESSAGE_TYPE,
    CONTROL_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_DELIVERY_LIMIT,
    EVENTS_EXCHANGE,
    NODE_ID_PATTERN,
    NODE_STATUS_BINDING,
    NODE_STATUS_SUBJECT,
    REQUESTS_QUEUE,
    WORKLOAD_ID_PATTERN,
    BenchmarkRequest,
    CancelRequest,
    FinishEvent,
    NodeStatus,
    ProgressEvent,
    StartEvent,
    dead_letter_queue_arguments,
    request_queue_arguments,
)
from contracts.requests import REQUEST_MESSAGE_TYPE
from service import __version__

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.yaml"
AMQP_BINDING_VERSION = "0.3.0"


class _Message:
    """One message of the interface: its contract, file, AMQP type and examples."""

    def __init__(
        self,
        key: str,
        model: type[BaseModel],
        amqp_type: str,
        title: str,
        examples: list[Any],
        correlation: str,
    ) -> None:
        self.key = key
        self.model = model
        self.amqp_type = amqp_type
        self.title = title
        self.examples = examples
        self.correlation = correlation

    @property
    def schema_file(self) -> str:
        return f"{self.amqp_type}.schema.json"


RECORDED_RUN = Path(__file__).resolve().parents[2] / "contracts/schemas/examples/recorded_run.json"


def _examples() -> dict[str, list[Any]]:
    """Examples from a real recorded run (``ops/record_examples.py``): the seed's request as a
    publisher writes it, and the events the worker sent for it, validated by the contracts
    (so they cannot drift from them)."""
    recorded = json.loads(RECORDED_RUN.read_text())
    BenchmarkRequest.model_validate(recorded["request"])  # the example is a valid request
    node = recorded["start"]["data"].get("node") or {
        "hostname": "bench-01", "worker_id": "3fa2c1d0", "node_id": "bench-01-3fa2c1d0",
        "cpu_model": "AMD EPYC", "cpus": "0-1", "version": __version__, "pid": 4242,
    }  # fmt: skip
    status = {
        "node_id": node["node_id"],
        "node": node,
        "state": "busy",
        "workload_id": recorded["request"]["id"],
        "uptime_s": 3600.5,
        "counts": {"success": 12, "error": 1, "cancelled": 0, "rejected": 2, "requeued": 0},
        "timestamp": "2025-01-01T12:00:00Z",
    }
    return {
        "request": [recorded["request"]],
        "start": [_wire(StartEvent.model_validate(recorded["start"]))],
        "progress": [_wire(ProgressEvent.model_validate(e)) for e in recorded["progress"]],
        "finish": [
            _wire(FinishEvent.model_validate(recorded["finish"])),
            _wire(FinishEvent.model_validate(recorded["error"])),
        ],
        "cancel": [_wire(CancelRequest(id=recorded["request"]["id"], reason="wrong model pair"))],
        "status": [_wire(NodeStatus.model_validate({"data": status}))],
    }


def _messages() -> list[_Message]:
    ex = _examples()
    payload_id, data_id = "$message.payload#/id", "$message.payload#/data/id"
    return [
        _Message("benchmarkRequest", BenchmarkRequest, REQUEST_MESSAGE_TYPE,
                 "A benchmark request (INC's Execute benchmark body)", ex["request"], payload_id),
        _Message("benchmarkStart", StartEvent, "benchmark_start",
                 "A worker started the workload", ex["start"], data_id),
        _Message("benchmarkProgress", ProgressEvent, "benchmark_progress",
                 "One more step done: the cumulative payload", ex["progress"], data_id),
        _Message("benchmarkFinish", FinishEvent, "benchmark_finish",
                 "The result, or what failed (once per request)", ex["finish"], data_id),
        _Message("benchmarkCancel", CancelRequest, CANCEL_MESSAGE_TYPE,
                 "Cancel a running or queued workload", ex["cancel"], payload_id),
        _Message("nodeStatus", NodeStatus, NODE_STATUS_SUBJECT,
                 "What a worker is doing: idle, busy, stopping, stopped", ex["status"],
                 "$message.payload#/data/node_id"),
    ]  # fmt: skip


def json_schemas() -> dict[str, dict[str, Any]]:
    """A standalone JSON Schema (draft 2020-12) per message, by file name."""
    out = {}
    for message in _messages():
        schema = message.model.model_json_schema(mode="validation")
        out[message.schema_file] = {"$schema": JSON_SCHEMA_DIALECT, **schema}
    return out


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the worker: what it receives and sends, and where."""
    messages = _messages()
    _, definitions = models_json_schema(
        [(m.model, "validation") for m in messages],
        ref_template="#/components/schemas/{model}",
    )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Benchmark worker",
            "version": __version__,
            "description": (
                "A RabbitMQ worker that benchmarks TensorFlow models, compatible with Intel "
                "Neural Compressor's 'Execute benchmark' contract. Described from the worker's "
                "side: publishers send what it receives, subscribers receive what it sends. "
                "Names are the defaults; operators may rename them. Generated from the "
                "contracts package by `benchmark-worker schema`."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "Any RabbitMQ 3.8+ (quorum queues); the worker's broker.url.",
            }
        },
        "channels": _channels(),
        "operations": _operations(),
        "components": {
            "schemas": definitions["$defs"],
            "messages": _component_messages(messages),
        },
    }


def _channels() -> dict[str, Any]:
    """Where messages go: the queues, and the exchanges' routing keys."""
    events_exchange = _exchange(EVENTS_EXCHANGE)
    workload = {
        "description": f"Workload id of the request, matching {WORKLOAD_ID_PATTERN}.",
        "examples": ["configuration_id"],
    }
    node_id = {
        "description": f"Node id of the worker (hostname-workerid), matching {NODE_ID_PATTERN}.",
        "examples": ["bench-01-3fa2c1d0"],
    }
    return {
        "requests": {
            "address": REQUESTS_QUEUE,
            "title": "Requests queue",
            "description": (
                "Durable quorum queue; publishers send to it through the default exchange "
                "(routing key = queue name), persistent and mandatory, with publisher confirms. "
                f"Declared by the worker with arguments {json.dumps(request_queue_arguments())} "
                f"(x-delivery-limit from its config, default {DEFAULT_DELIVERY_LIMIT}). "
                "Workers consume with prefetch 1; RabbitMQ spreads requests over them."
            ),
            "messages": {"benchmarkRequest": _message_ref("benchmarkRequest")},
            "bindings": {"amqp": _queue_binding(REQUESTS_QUEUE)},
            "x-amqp-queue-arguments": request_queue_arguments(),
        },
        "deadLetters": {
            "address": DEAD_LETTER_QUEUE,
            "title": "Dead letters",
            "description": (
                f"Durable quorum queue bound to the fanout exchange {DEAD_LETTER_EXCHANGE!r}: "
                "requests the worker rejected (undecodable or invalid), bodies unchanged, and "
                "requests past their delivery limit."
            ),
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
            "bindings": {"amqp": _queue_binding(DEAD_LETTER_QUEUE)},
            "x-amqp-queue-arguments": dead_letter_queue_arguments(),
        },
        "workloadStart": _event_channel(
            "benchmark.{workloadId}.start", "benchmarkStart", events_exchange,
            "Start of a workload. Bind benchmark.<id>.# to follow one workload.", workload,
        ),
        "workloadProgress": _event_channel(
            "benchmark.{workloadId}.progress", "benchmarkProgress", events_exchange,
            "After each (model, mode) step: the cumulative payload so far.", workload,
        ),
        "workloadFinish": _event_channel(
            "benchmark.{workloadId}.finish", "benchmarkFinish", events_exchange,
            f"Once per request: success with the result, or error. Bind "
            f"{ALL_FINISHES_BINDING} for every result.", workload,
        ),
        "workloadCancel": _event_channel(
            "benchmark.{workloadId}.cancel", "benchmarkCancel", _exchange(CONTROL_EXCHANGE),
            f"Control messages. Every worker binds its own queue to "
            f"{CANCEL_BINDING} (it outlives a reconnect: x-expires, deleted at a clean stop); "
            "the worker running the workload kills it and ends it with a "
            "benchmark_finish error 'cancelled'; a queued one is dropped with the same finish "
            "when it arrives.", workload,
        ),
        "nodeStatus": _event_channel(
            "node.{nodeId}.status", "nodeStatus", events_exchange,
            f"Each worker's status: at start, periodically, at stop. Bind "
            f"{NODE_STATUS_BINDING} for the whole fleet.", node_id, parameter="nodeId",
        ),
    }  # fmt: skip


def _operations() -> dict[str, Any]:
    """What the worker does on each channel."""
    return {
        "receiveRequest": _operation("receive", "requests", "benchmarkRequest",
                                     "The worker takes one request at a time and acks it after "
                                     "its benchmark_finish is confirmed."),
        "sendStart": _operation("send", "workloadStart", "benchmarkStart",
                                "Published when a worker starts a workload."),
        "sendProgress": _operation("send", "workloadProgress", "benchmarkProgress",
                                   "Published after each step."),
        "sendFinish": _operation("send", "workloadFinish", "benchmarkFinish",
                                 "Published once per request, confirmed before the ack."),
        "deadLetter": _operation("send", "deadLetters", "deadLetter",
                                 "Rejected requests reach it through the dead-letter exchange."),
        "receiveCancel": _operation("receive", "workloadCancel", "benchmarkCancel",
                                    "Every worker listens for cancels."),
        "sendNodeStatus": _operation("send", "nodeStatus", "nodeStatus",
                                     "Published at start, periodically and at stop."),
    }  # fmt: skip


def _component_messages(messages: list[_Message]) -> dict[str, Any]:
    """Each message's name, title and payload schema; a dead letter's is any body."""
    component_messages: dict[str, Any] = {
        message.key: _component_message(message) for message in messages
    }
    component_messages["deadLetter"] = {
        "name": "deadLetter",
        "title": "A rejected request, unchanged",
        "summary": "Whatever body was rejected: possibly not JSON at all.",
        "payload": {},
    }
    return component_messages


def _exchange(name: str) -> dict[str, Any]:
    return {"name": name, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "is": "queue",
        "queue": {
            "name": name,
            "durable": True,
            "exclusive": False,
            "autoDelete": False,
            "vhost": "/",
        },
        "bindingVersion": AMQP_BINDING_VERSION,
    }


def _message_ref(key: str) -> dict[str, str]:
    return {"$ref": f"#/components/messages/{key}"}


def _event_channel(
    address: str,
    message_key: str,
    exchange: dict[str, Any],
    description: str,
    parameter_doc: dict[str, Any],
    parameter: str = "workloadId",
) -> dict[str, Any]:
    return {
        "address": address,
        "description": f"Routing key on the {exchange['type']} exchange "
        f"{exchange['name']!r}. {description}",
        "parameters": {parameter: parameter_doc},
        "messages": {message_key: _message_ref(message_key)},
        "bindings": {
            "amqp": {
                "is": "routingKey",
                "exchange": exchange,
                "bindingVersion": AMQP_BINDING_VERSION,
            }
        },
    }


def _operation(action: str, channel: str, message_key: str, description: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": f"#/channels/{channel}"},
        "description": description,
        "messages": [{"$ref": f"#/channels/{channel}/messages/{message_key}"}],
    }


def _component_message(message: _Message) -> dict[str, Any]:
    return {
        "name": message.amqp_type,
        "title": message.title,
        "summary": (message.model.__doc__ or "").strip().splitlines()[0],
        "contentType": "application/json",
        "correlationId": {
            "description": "The AMQP correlation_id property carries the same id.",
            "location": message.correlation,
        },
        "payload": {"$ref": f"#/components/schemas/{message.model.__name__}"},
        "bindings": {
            "amqp": {"messageType": message.amqp_type, "bindingVersion": AMQP_BINDING_VERSION}
        },
        "examples": [
            {"name": f"{message.amqp_type}_{number}", "payload": example}
            for number, example in enumerate(message.examples, start=1)
        ],
    }


def _wire(model: BaseModel) -> Any:
    """A contract as it is on the wire: its body, parsed back to plain JSON values."""
    return json.loads(model.to_body())  # type: ignore[attr-defined]


class _NoAliasDumper(yaml.SafeDumper):
    """Writes repeated objects out in full: no ``&id001`` anchors for readers to chase."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render() -> dict[str, str]:
    """Every generated file's text, by file name (what ``schema DIR`` writes)."""
    files = {
        name: json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        for name, schema in json_schemas().items()
    }
    files[ASYNCAPI_FILE] = (
        "# Generated from contracts/ by `benchmark-worker schema DIR`; do not edit by hand.\n"
        + yaml.dump(
            asyncapi_document(),
            Dumper=_NoAliasDumper,
            sort_keys=False,
            allow_unicode=True,
            width=100,
        )
    )
    return files


def write_schemas(directory: Path) -> list[Path]:
    """Write every generated file into ``directory`` (created if missing); return the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
