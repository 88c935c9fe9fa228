"""Prometheus metrics (prometheus-client), served only when ``metrics.port`` is set.

Each worker has its own registry, so tests and several workers in one process never clash.
The HTTP server is prometheus-client's own, in a daemon thread.
"""

from __future__ import annotations

from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = structlog.get_logger()

DURATION_BUCKETS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    """The worker's counters and gauges; cheap to update whether or not they are served."""

    def __init__(self, node: dict[str, Any]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "benchmark_worker_requests",
            "Requests ended by this worker, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "benchmark_worker_benchmark_duration_seconds",
            "Wall time of benchmarks that ran (start to finish), by outcome.",
            ["outcome"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.busy = Gauge(
            "benchmark_worker_busy", "1 while a benchmark runs, else 0.", registry=self.registry
        )
        self.last_success = Gauge(
            "benchmark_worker_last_success_timestamp_seconds",
            "Unix time of the last successful benchmark (0: none yet).",
            registry=self.registry,
        )
        self.reconnects = Counter(
            "benchmark_worker_broker_reconnects",
            "Broker connections re-established after a loss, by connection.",
            ["connection"],
            registry=self.registry,
        )
        self.warm_runners = Gauge(
            "benchmark_worker_warm_runners",
            "Warm runner processes alive (TensorFlow imported, waiting or running a step).",
            registry=self.registry,
        )
        self.warm_runner_rss = Gauge(
            "benchmark_worker_warm_runner_rss_bytes",
            "Resident memory of all warm runners after their last step.",
            registry=self.registry,
        )
        self.warm_runner_oldest_age = Gauge(
            "benchmark_worker_warm_runner_oldest_age_seconds",
            "Age of the oldest warm runner (0: none).",
            registry=self.registry,
        )
        info = Gauge(
            "benchmark_worker_info",
            "This worker's identity (value 1).",
            ["node_id", "hostname", "cpus", "cpu_model", "version"],
            registry=self.registry,
        )
        info.labels(**{key: str(node.get(key, "")) for key in info._labelnames}).set(1)
        for outcome in ("success", "error", "cancelled", "rejected", "requeued"):
            self.requests.labels(outcome=outcome)  # every series exists from the start
        for connection in ("consume", "publish"):
            self.reconnects.labels(connection=connection)
        self._server: Any = None

    def set_warm_runners(self, snapshot: dict[str, Any] | None) -> None:
        runners = (snapshot or {}).get("runners", [])
        self.warm_runners.set(len(runners))
        self.warm_runner_rss.set(sum(r["rss_bytes"] for r in runners))
        self.warm_runner_oldest_age.set(max((r["age_s"] for r in runners), default=0))

    def serve(self, host: str, port: int) -> int:
        """Start the endpoint; return the port it listens on (``port`` 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound_port = int(server.server_port)
        log.info("metrics_serving", host=host, port=bound_port, path="/metrics")
        return bound_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
