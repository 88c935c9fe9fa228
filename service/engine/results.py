"""The stored result of a run: ``result.json`` in the run's directory, written atomically.

A delivery that was answered before (the broker could not learn it: a lost ack, a finish
confirmed after the delivery was requeued, or a publisher that published the same message
twice because a confirm went missing) is answered from the store instead of running again: the
stored finish is published again with the same ``message_id`` as the first time, so a
subscriber that drops message ids it has seen counts it once.

The key (:class:`ResultKey`) is the delivery's own ``message_id`` (set by the publisher, once
per message), the SHA-256 of the validated request and the SHA-256 of each model's content.
So a new message with the same body runs again, and so does a request whose model file was
replaced at the same path. A message without a ``message_id`` is never answered from the store.

The store is the workspace: across nodes, deduplication needs a shared workspace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts import BenchmarkRequest, FinishEvent
from service.atomic import write_atomic
from service.engine.run_dirs import RESULT_FILE, run_directories

DIGEST_FIELD = "request_sha256"
MESSAGE_ID_FIELD = "request_message_id"
MODELS_FIELD = "models_sha256"


@dataclass(frozen=True)
class ResultKey:
    """What a stored result must match to answer a delivery."""

    message_id: str | None
    request_sha256: str
    models_sha256: Mapping[str, str]

    def labels(self) -> dict[str, Any]:
        """The key's fields as they go into every event of the run (and so into the store)."""
        labels: dict[str, Any] = {
            DIGEST_FIELD: self.request_sha256,
            MODELS_FIELD: dict(self.models_sha256),
        }
        if self.message_id:
            labels[MESSAGE_ID_FIELD] = self.message_id
        return labels

    def answers(self, finish: FinishEvent) -> bool:
        """A successful finish of this very delivery, on these very models."""
        data = finish.data
        return (
            finish.ok
            and self.message_id is not None
            and getattr(data, MESSAGE_ID_FIELD, None) == self.message_id
            and getattr(data, DIGEST_FIELD, None) == self.request_sha256
            and getattr(data, MODELS_FIELD, None) == dict(self.models_sha256)
        )


def request_digest(request: BenchmarkRequest) -> str:
    """SHA-256 of the validated request (equivalent bodies, e.g. mods/mode, hash alike)."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def write_result(directory: Path, finish: FinishEvent) -> Path:
    target = directory / RESULT_FILE
    write_atomic(target, finish.model_dump_json(indent=2, exclude_none=True), durable=True)
    return target


def stored_finish(stable: Path, key: ResultKey) -> FinishEvent | None:
    """The stored successful finish that answers ``key``, newest run first, or None."""
    if key.message_id is None:
        return None
    for directory in reversed(run_directories(stable)):
        try:
            finish = FinishEvent.model_validate_json((directory / RESULT_FILE).read_bytes())
        except (OSError, ValueError):
            continue
        if key.answers(finish):
            return finish
    return None
