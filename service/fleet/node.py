"""Who this worker is: node id, host, CPUs, CPU model, version (in events and node status).

The node id is ``<hostname>-<worker_id>``. The worker id defaults to the CPUs the worker owns
(``cpu0-3``), so it is stable across restarts and distinct for workers on disjoint CPU sets of
one host; workers sharing CPUs on one host need ``node.worker_id`` set apart.
"""

from __future__ import annotations

import hashlib
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.routing import make_node_id
from service import __version__
from service.cpulist import format_cpu_list

CPUINFO = Path("/proc/cpuinfo")
_CPU_MODEL_KEYS = ("model name", "Model", "cpu model", "cpu", "Hardware")
_MAX_WORKER_ID_CHARS = 32


def default_worker_id(cpus: tuple[int, ...]) -> str:
    """``cpu0-3_8`` for CPUs 0-3 and 8; a short hash when the list would be too long."""
    text = "cpu" + format_cpu_list(cpus).replace(",", "_")
    if len(text) <= _MAX_WORKER_ID_CHARS:
        return text
    return "cpu" + hashlib.sha1(text.encode()).hexdigest()[:10]


def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU model name from ``/proc/cpuinfo`` (x86 ``model name``, ARM ``Model``...)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    for key in _CPU_MODEL_KEYS:
        if key in fields:
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class NodeIdentity:
    """This worker process as the fleet sees it."""

    node_id: str
    hostname: str
    worker_id: str
    pid: int
    cpus: tuple[int, ...]
    cpu_model: str
    version: str

    @classmethod
    def of_this_process(cls, cpus: tuple[int, ...], worker_id: str | None) -> NodeIdentity:
        hostname = socket.gethostname()
        worker_id = worker_id or default_worker_id(cpus)
        return cls(
            node_id=make_node_id(hostname, worker_id),
            hostname=hostname,
            worker_id=worker_id,
            pid=os.getpid(),
            cpus=cpus,
            cpu_model=cpu_model(),
            version=__version__,
        )

    def to_dict(self) -> dict[str, Any]:
        """The ``node`` object of ``benchmark_start``, ``benchmark_finish`` and node status."""
        return {
            "node_id": self.node_id,
            "hostname": self.hostname,
            "worker_id": self.worker_id,
            "pid": self.pid,
            "cpus": format_cpu_list(self.cpus),
            "cpu_count": len(self.cpus),
            "cpu_model": self.cpu_model,
            "version": self.version,
        }
