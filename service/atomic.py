"""Writing a file so that a reader sees it whole or not at all: the one helper for it.

The data goes to a temporary file beside the target, named for this process and call (runners
of one step may write the same path at once), then is renamed over the target. With
``durable``, the file and its directory are fsynced too, so the file survives a power cut
(``result.json``); runners' own files skip that cost. On any error the temporary file is
removed and the error raised.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path


def write_atomic(target: Path, data: str | bytes, *, durable: bool = False) -> None:
    raw = data.encode() if isinstance(data, str) else data
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(raw)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
