"""Several workers on one queue, node status, cancel, health check and metrics, end to end."""

from __future__ import annotations

import json
import socket
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from contracts import CANCELLED_MESSAGE, make_node_id
from tests.integration.bus import WorkerProcess, publish_request, start_worker, wait_for_consumer
from tests.integration.fleet import (
    Everything,
    cli,
    disjoint_cpu_sets,
    fleet_config,
    perf_request,
    poll_until,
)
from tests.integration.reliability import close_connections_of, wait_for_log

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]

FAST_HEALTH = {"heartbeat_interval_s": 0.5, "stale_after_s": 5}


@pytest.fixture
def workers():
    """Worker processes started by a test; each must exit 0 on SIGTERM (also on failure)."""
    started: list[WorkerProcess] = []
    yield started
    codes = {worker.pid: worker.terminate() for worker in started}
    assert all(code == 0 for code in codes.values()), codes


def node_of(event) -> dict:
    return event.data.model_dump()["node"]


def runner_pids(worker: WorkerProcess) -> list[int]:
    children = psutil.Process(worker.pid).children(recursive=True)
    return [p.pid for p in children if "service.runner" in " ".join(p.cmdline())]


async def test_three_workers_share_six_requests_each_run_once_and_report_status(
    amqp, bus, workers, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    """Six requests over three workers run once each, on the node their events name."""
    hostname = socket.gethostname()
    everything = await Everything.bind(bus, names["events_exchange"])
    config = fleet_config(worker_config, "fleet", node={"status_interval_s": 1})
    node_ids = []
    for number, cpus in enumerate(disjoint_cpu_sets(3)):
        worker_id = f"w{number}"
        workers.append(start_worker(config, "--cpus", cpus, "--worker-id", worker_id))
        node_ids.append(make_node_id(hostname, worker_id))
    await wait_for_consumer(amqp, names["requests_queue"], count=3)
    requests = [perf_request(sample_dir) for _ in range(6)]
    for request in requests:
        await publish_request(bus, names["requests_queue"], json.dumps(request).encode())

    await everything.wait_for(lambda: len(everything.finishes()) == 6)
    for worker in workers:
        assert worker.terminate() == 0
    await everything.wait_for(
        lambda: all(
            any(s.data.state == "stopped" for s in everything.statuses(node)) for node in node_ids
        ),
        timeout_s=30,
    )

    ran_on: Counter[str] = Counter()
    for request in requests:
        events = everything.workload(request["id"])
        subjects = [event.subject for event in events]
        assert subjects.count("benchmark_start") == 1, subjects
        assert subjects.count("benchmark_finish") == 1, subjects
        start, finish = events[0], events[-1]
        assert finish.status == "success", finish
        assert node_of(start) == node_of(finish)
        assert node_of(finish)["node_id"] in node_ids
        assert node_of(finish)["cpu_model"] and node_of(finish)["version"]
        ran_on[node_of(finish)["node_id"]] += 1
    assert set(ran_on) == set(node_ids), ran_on  # RabbitMQ gave every idle worker one first
    logs = [line for worker in workers for line in worker.log_lines()]
    completed = [line for line in logs if line["event"] == "request_completed"]
    assert len(completed) == 6

    for node_id in node_ids:
        statuses = [status.data for status in everything.statuses(node_id)]
        assert statuses[0].state == "idle" and statuses[0].counts.success == 0
        busy = [s for s in statuses if s.state == "busy"]
        assert busy and {s.workload_id for s in busy} <= {r["id"] for r in requests}
        assert statuses[-1].state == "stopped"
        assert statuses[-1].counts.success == ran_on[node_id]
        assert statuses[-1].node.node_id == node_id and statuses[-1].uptime_s > 0


async def test_cancel_kills_a_running_request_and_drops_a_queued_one(
    amqp, bus, workers, worker_config: Path, names: dict[str, str], sample_dir: Path
) -> None:
    """Cancelling a running and a queued request ends both with 'cancelled'; the next succeeds."""
    everything = await Everything.bind(bus, names["events_exchange"])
    config = fleet_config(worker_config, "cancel", metrics={"port": 0, "host": "127.0.0.1"})
    worker = start_worker(config, "--worker-id", "canceller")
    workers.append(worker)
    await wait_for_consumer(amqp, names["requests_queue"])
    running = perf_request(sample_dir, duration_s=100, max_duration_s=100)
    queued, after = perf_request(sample_dir), perf_request(sample_dir)
    for request in (running, queued, after):
        await publish_request(bus, names["requests_queue"], json.dumps(request).encode())
    await everything.wait_for(lambda: everything.workload(running["id"]))
    await wait_for_log(worker, "window_planned", timeout_s=120)  # measuring, past pre-flight
    runners = await wait_for_runners(worker)

    assert cli("cancel", queued["id"], "--config", str(config)).returncode == 0
    done = cli("cancel", running["id"], "--config", str(config), "--reason", "wrong model")
    assert done.returncode == 0, done.stderr
    await everything.wait_for(lambda: after["id"] in everything.finishes())

    start, finish = everything.workload(running["id"])
    assert start.subject == "benchmark_start"
    assert finish.status == "error" and finish.data.message == CANCELLED_MESSAGE
    assert finish.data.step == "input_model/performance"
    assert finish.data.model_dump()["cancel_reason"] == "wrong model"
    assert not any(psutil.pid_exists(pid) for pid in runners), "runners outlived the cancel"
    (dropped,) = everything.workload(queued["id"])  # no start: it never ran
    assert dropped.status == "error" and dropped.data.message == CANCELLED_MESSAGE
    assert dropped.data.step == "queued"
    assert everything.finishes()[after["id"]].status == "success"

    metrics = scrape(heartbeat(config, "canceller")["metrics_port"])
    assert metrics[("benchmark_worker_requests_total", (("outcome", "cancelled"),))] == 2
    assert metrics[("benchmark_worker_requests_total", (("outcome", "success"),))] == 1
    histogram = "benchmark_worker_benchmark_duration_seconds"
    assert metrics[(f"{histogram}_count", (("outcome", "success"),))] == 1
    assert metrics[("benchmark_worker_busy", ())] == 0
    assert metrics[("benchmark_worker_last_success_timestamp_seconds", ())] > 0
    assert metrics[("benchmark_worker_broker_reconnects_total", (("connection", "consume"),))] == 0


async def test_check_passes_while_the_worker_consumes_and_fails_otherwise(
    amqp, workers, worker_config: Path, names: dict[str, str]
) -> None:
    """`check` exits 0 for a consuming worker, non-zero before, after a stop and after a kill."""
    config = fleet_config(worker_config, "health", health=FAST_HEALTH)
    check = ("check", "--config", str(config), "--worker-id", "checked")
    before = cli(*check)
    assert before.returncode == 1 and "no heartbeat file" in before.stdout

    worker = start_worker(config, "--worker-id", "checked")
    workers.append(worker)
    await wait_for_consumer(amqp, names["requests_queue"])
    running = cli(*check)
    assert running.returncode == 0, running.stdout
    assert worker.terminate() == 0
    stopped = cli(*check)
    assert stopped.returncode == 1 and "'stopped'" in stopped.stdout

    killed_worker = start_worker(config, "--worker-id", "checked")
    await wait_for_consumer(amqp, names["requests_queue"])
    assert cli(*check).returncode == 0
    killed_worker.process.kill()  # SIGKILL: no last heartbeat
    killed_worker.process.wait(timeout=30)
    killed = cli(*check)
    assert killed.returncode == 1 and "gone" in killed.stdout


async def test_a_lost_connection_is_counted_and_the_worker_serves_again(
    amqp, workers, worker_config: Path, names: dict[str, str]
) -> None:
    """After the broker drops its connections, the worker reconnects, counts it, consumes,
    answers check and hears cancels again."""
    config = fleet_config(
        worker_config, "reconnect", health=FAST_HEALTH, metrics={"port": 0, "host": "127.0.0.1"}
    )
    worker = start_worker(config, "--worker-id", "reconnector")
    workers.append(worker)
    await wait_for_consumer(amqp, names["requests_queue"])
    port = heartbeat(config, "reconnector")["metrics_port"]
    check = ("check", "--config", str(config), "--worker-id", "reconnector")
    assert cli(*check).returncode == 0

    assert len(close_connections_of(worker.pid, "fleet test")) == 2  # consume and publish

    def reconnects() -> tuple[float, float]:
        metrics = scrape(port)
        return tuple(  # type: ignore[return-value]
            metrics[("benchmark_worker_broker_reconnects_total", (("connection", name),))]
            for name in ("consume", "publish")
        )

    await poll_until(lambda: reconnects() == (1, 1), timeout_s=60)
    await wait_for_consumer(amqp, names["requests_queue"])
    await poll_until(lambda: cli(*check).returncode == 0, timeout_s=30, interval_s=0.5)
    assert cli("cancel", "nobody-runs-this", "--config", str(config)).returncode == 0


async def wait_for_runners(worker: WorkerProcess) -> list[int]:
    """The pids of the worker's runner processes, once there are some."""
    await poll_until(lambda: runner_pids(worker), timeout_s=60, interval_s=0.1)
    return runner_pids(worker)


def heartbeat(config: Path, worker_id: str) -> dict:
    workspace = Path(yaml.safe_load(config.read_text())["worker"]["workspace"])
    node_id = make_node_id(socket.gethostname(), worker_id)
    return json.loads((workspace / "health" / f"{node_id}.json").read_text())


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the worker's /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
