"""Contracts of the benchmark worker: requests, events, control, node status and routing.

Depends on pydantic only, so a publisher or subscriber can use it without the worker, its
TensorFlow or its broker client. The optional :mod:`contracts.client` (needs ``aio-pika``;
``pip install 'benchmark-worker[client]'``) publishes requests and follows their events; it is
not imported here.

>>> import contracts
>>> request = contracts.BenchmarkRequest(
...     id="job-1", input_model=contracts.ModelSpec(precision="fp32", path="/models/a.pb"))
>>> body = request.to_body()      # what goes on the wire, defaults filled in
>>> body[:60]
b'{"id":"job-1","input_model":{"precision":"fp32","path":"/mod'
>>> contracts.BenchmarkRequest.model_validate_json(body) == request
True
>>> contracts.routing_key(request.id, "finish")
'benchmark.job-1.finish'
"""

from .control import CANCEL_MESSAGE_TYPE, CANCELLED_MESSAGE, CancelRequest, parse_cancel
from .events import (
    AnyEvent,
    BestPoint,
    BestPoints,
    ErrorData,
    Event,
    FinishEvent,
    ProgressEvent,
    ResultData,
    StartData,
    StartEvent,
    StepDetails,
    SweepFigures,
    SweepResult,
    SweepRow,
    error_finish,
    parse_event,
    step_key,
)
from .node import (
    NODE_STATUS_SUBJECT,
    NodeIdentity,
    NodeState,
    NodeStatus,
    NodeStatusData,
    OutcomeCounts,
    parse_node_status,
)
from .requests import (
    SCHEMA_VERSION,
    BenchmarkRequest,
    BenchmarkSettings,
    Layout,
    Mode,
    ModelRole,
    ModelSpec,
    Scenario,
    ScenarioName,
    Sweep,
    TopKMetric,
)
from .routing import (
    ALL_FINISHES_BINDING,
    ALL_WORKLOADS_BINDING,
    CANCEL_BINDING,
    CONTROL_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DEFAULT_DELIVERY_LIMIT,
    EVENTS_EXCHANGE,
    NODE_ID_PATTERN,
    NODE_STATUS_BINDING,
    REQUESTS_QUEUE,
    WORKLOAD_ID_PATTERN,
    cancel_routing_key,
    dead_letter_queue_arguments,
    is_routable_id,
    make_node_id,
    node_status_routing_key,
    request_queue_arguments,
    routing_key,
    workload_binding,
)

__all__ = [
    "ALL_FINISHES_BINDING",
    "ALL_WORKLOADS_BINDING",
    "CANCELLED_MESSAGE",
    "CANCEL_BINDING",
    "CANCEL_MESSAGE_TYPE",
    "CONTROL_EXCHANGE",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DEFAULT_DELIVERY_LIMIT",
    "EVENTS_EXCHANGE",
    "NODE_ID_PATTERN",
    "NODE_STATUS_BINDING",
    "NODE_STATUS_SUBJECT",
    "REQUESTS_QUEUE",
    "SCHEMA_VERSION",
    "WORKLOAD_ID_PATTERN",
    "AnyEvent",
    "BenchmarkRequest",
    "BenchmarkSettings",
    "BestPoint",
    "BestPoints",
    "CancelRequest",
    "ErrorData",
    "Event",
    "FinishEvent",
    "Layout",
    "Mode",
    "ModelRole",
    "ModelSpec",
    "NodeIdentity",
    "NodeState",
    "NodeStatus",
    "NodeStatusData",
    "OutcomeCounts",
    "ProgressEvent",
    "ResultData",
    "Scenario",
    "ScenarioName",
    "StartData",
    "StartEvent",
    "StepDetails",
    "Sweep",
    "SweepFigures",
    "SweepResult",
    "SweepRow",
    "TopKMetric",
    "cancel_routing_key",
    "dead_letter_queue_arguments",
    "error_finish",
    "is_routable_id",
    "make_node_id",
    "node_status_routing_key",
    "parse_cancel",
    "parse_event",
    "parse_node_status",
    "request_queue_arguments",
    "routing_key",
    "step_key",
    "workload_binding",
]
