"""The stored result of a workload: ``result.json``, written atomically, keyed by request.

A redelivered request (the broker could not learn that it was answered: lost ack, finish not
confirmed) whose complete result is stored is answered from the store instead of running again:
its stored finish is published again, with the same ``message_id`` as the first time, so a
subscriber that drops message ids it has seen counts it once. The key is the workload id (the
directory) and the SHA-256 of the validated request, so a request that changed under the same
id runs again.

The store is this worker's workspace: across nodes, deduplication needs a shared workspace.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path

from contracts import BenchmarkRequest, FinishEvent

RESULT_FILE = "result.json"
DIGEST_FIELD = "request_sha256"


def request_digest(request: BenchmarkRequest) -> str:
    """SHA-256 of the validated request (equivalent bodies, e.g. mods/mode, hash alike)."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def write_atomic(target: Path, data: bytes) -> None:
    """Write to a temporary file beside ``target``, fsync, rename: never half-written.

    On any error (disk full, read-only) the temporary file is removed and the error raised.
    """
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_result(directory: Path, finish: FinishEvent) -> Path:
    target = directory / RESULT_FILE
    write_atomic(target, finish.model_dump_json(indent=2, exclude_none=True).encode())
    return target


def stored_finish(directory: Path, digest: str) -> FinishEvent | None:
    """The stored successful finish of exactly this request, or None."""
    try:
        finish = FinishEvent.model_validate_json((directory / RESULT_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    if not finish.ok or getattr(finish.data, DIGEST_FIELD, None) != digest:
        return None
    return finish
