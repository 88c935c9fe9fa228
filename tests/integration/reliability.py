"""Helpers for the reliability tests: worker processes, runner processes, a durable subscriber,
per-test worker settings and the broker's own control tool (``rabbitmqctl``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import psutil
import yaml
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from contracts import FinishEvent, StartEvent, parse_event, workload_binding
from tests.conftest import REPO, worker_environment
from tests.integration.bus import WorkerProcess

RUNNER_MARKER = "service.runner"


# -- requests and settings -------------------------------------------------------------------


def short_request(sample_dir: Path, **benchmark: Any) -> dict[str, Any]:
    """The input model alone, performance only, a short run; a fresh id."""
    return {
        "id": f"rel-{uuid.uuid4().hex[:10]}",
        "input_model": {"precision": "fp32", "path": str(sample_dir / "fp32.pb")},
        "benchmark": {
            "duration_s": 1,
            "warmup": 2,
            "warmup_s": 0,
            "min_iterations": 10,
            "max_duration_s": 2,
            **benchmark,
        },
    }


def long_request(sample_dir: Path, duration_s: float = 30, **benchmark: Any) -> dict[str, Any]:
    """A request whose measurement runs long enough to disturb it mid-benchmark."""
    return short_request(sample_dir, duration_s=duration_s, max_duration_s=duration_s, **benchmark)


def configure(config_path: Path, **sections: dict[str, Any]) -> Path:
    """Merge ``sections`` (e.g. ``worker={"timeout_s": 5}``) into a worker config file."""
    config = yaml.safe_load(config_path.read_text())
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    config_path.write_text(yaml.safe_dump(config))
    return config_path


# -- processes -------------------------------------------------------------------------------


def launch_worker(config_path: Path, env: dict[str, str] | None = None) -> WorkerProcess:
    """``benchmark-worker run`` as a child process, its JSON log in a file beside the config."""
    stderr_path = config_path.with_name(f"worker-{time.monotonic_ns()}.log")
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**worker_environment(), **(env or {})},
            cwd=REPO,
        )
    return WorkerProcess(process, stderr_path)


def runner_processes(worker_pid: int) -> list[psutil.Process]:
    """The worker's runner children (its own processes, found through /proc)."""
    try:
        children = psutil.Process(worker_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if RUNNER_MARKER in " ".join(child.cmdline()):
                found.append(child)
    return found


def runners_by_command(marker: str) -> list[psutil.Process]:
    """Every runner on the machine whose command line holds ``marker`` (e.g. a config path)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if RUNNER_MARKER in command and marker in command:
            found.append(process)
    return found


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.1
) -> Any:
    """Poll ``predicate`` (process and file states have no event to wait on)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"{what}: not within {timeout_s} s")


async def wait_for_log(
    worker: WorkerProcess, event: str, timeout_s: float = 60, **fields: Any
) -> dict[str, Any]:
    """The first line of the worker's JSON log with this ``event`` (and these field values)."""

    def find() -> dict[str, Any] | None:
        for line in worker.log_lines():
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                return line
        return None

    return await wait_until(find, timeout_s, f"log event {event} {fields}")


def log_events(worker: WorkerProcess) -> list[str]:
    return [str(line.get("event")) for line in worker.log_lines()]


def kill_quietly(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)


# -- events ----------------------------------------------------------------------------------


@dataclass
class Subscription:
    """A durable queue bound to one workload's events, read over a robust connection.

    It survives a broker restart and closed connections, so no event published meanwhile is
    missed (an exclusive queue would vanish with its connection).
    """

    connection: AbstractRobustConnection
    queue_name: str
    inbox: asyncio.Queue[AbstractIncomingMessage] = field(default_factory=asyncio.Queue)
    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    @property
    def events(self) -> list[Any]:
        return [parse_event(message.body) for message in self.messages]

    async def next_event(self, timeout_s: float = 120) -> Any:
        message = await asyncio.wait_for(self.inbox.get(), timeout_s)
        self.messages.append(message)
        return parse_event(message.body)

    async def until(self, predicate: Callable[[Any], bool], timeout_s: float = 120) -> Any:
        """Events until one matches ``predicate``; that one is returned."""
        deadline = time.monotonic() + timeout_s
        while True:
            event = await self.next_event(max(0.1, deadline - time.monotonic()))
            if predicate(event):
                return event

    async def until_start(self, timeout_s: float = 120) -> StartEvent:
        return await self.until(lambda e: isinstance(e, StartEvent), timeout_s)

    async def until_finish(self, timeout_s: float = 240) -> FinishEvent:
        return await self.until(lambda e: isinstance(e, FinishEvent), timeout_s)

    async def settle(self, quiet_s: float = 1.0) -> None:
        """Collect whatever else arrives until ``quiet_s`` passes without an event."""
        with contextlib.suppress(TimeoutError):
            while True:
                await self.next_event(quiet_s)


@contextlib.asynccontextmanager
async def subscribe(
    amqp_url: str, exchange: str, workload_id: str | None = None, binding: str | None = None
) -> AsyncIterator[Subscription]:
    """Bind a durable queue to ``benchmark.<id>.#`` (or ``binding``); delete it after.

    The events exchange is declared as the worker declares it, so binding before the worker
    starts works.
    """
    connection = await aio_pika.connect_robust(amqp_url, reconnect_interval=0.5)
    binding = binding or workload_binding(workload_id or "")
    queue_name = f"{exchange}.sub.{uuid.uuid4().hex[:8]}"
    try:
        channel = await connection.channel()
        events = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(events, routing_key=binding)
        subscription = Subscription(connection, queue_name)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await message.ack()
            await subscription.inbox.put(message)

        await queue.consume(deliver)
        yield subscription
    finally:
        with contextlib.suppress(Exception):
            cleanup = await asyncio.wait_for(connection.channel(), 10)
            await cleanup.queue_delete(queue_name)
        await connection.close()


async def publish_json(
    amqp_url: str, queue_name: str, body: dict[str, Any] | bytes, **properties: Any
) -> None:
    """Publish one request on a connection of its own (confirmed), with a fresh message_id
    unless ``message_id`` is given."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    properties.setdefault("content_type", "application/json")
    properties.setdefault("message_id", uuid.uuid4().hex)  # as every real client sets one
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(raw, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
            routing_key=queue_name,
            timeout=10,
        )


async def queue_counts(amqp_url: str, queue_name: str) -> tuple[int, int]:
    """(ready messages, consumers) of a queue, from a passive declare."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, passive=True)
        result = queue.declaration_result
        return result.message_count or 0, result.consumer_count or 0


# -- the broker ------------------------------------------------------------------------------


def rabbitmqctl(*args: str, timeout_s: float = 60) -> str:
    """Run ``rabbitmqctl``; raise with its output when it fails."""
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout


def connection_pids_of(pid: int) -> list[str]:
    """The broker's (Erlang) pids of the AMQP connections a process holds, by client port."""
    ports = {
        conn.laddr.port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == 5672
    }
    output = rabbitmqctl("list_connections", "pid", "peer_port", "--no-table-headers", "-q")
    found = []
    for line in output.splitlines():
        connection, _, port = line.rpartition("\t")
        if port.strip().isdigit() and int(port) in ports:
            found.append(connection.strip())
    return found


def close_connections_of(pid: int, reason: str = "reliability test") -> list[str]:
    """Close (broker side) every AMQP connection of one process; other clients are untouched."""
    connections = connection_pids_of(pid)
    for connection in connections:
        rabbitmqctl("close_connection", connection, reason)
    return connections


@contextlib.contextmanager
def broker_user() -> Iterator[tuple[str, str]]:
    """A throwaway broker user with a unique password, full rights on ``/``."""
    user, password = f"bw-test-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        with contextlib.suppress(Exception):
            rabbitmqctl("delete_user", user)


def amqp_url_for(amqp_url: str, user: str, password: str) -> str:
    """``amqp_url`` with other credentials (same host and port)."""
    from yarl import URL

    return str(URL(amqp_url).with_user(user).with_password(password))


def environ_of(process: psutil.Process) -> dict[str, str]:
    """A process's environment as the kernel holds it (/proc/<pid>/environ)."""
    raw = Path(f"/proc/{process.pid}/environ").read_bytes()
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, _, value in pairs}


def limits_of(process: psutil.Process) -> dict[str, str]:
    """``/proc/<pid>/limits``: limit name → soft limit as printed."""
    limits = {}
    for line in Path(f"/proc/{process.pid}/limits").read_text().splitlines()[1:]:
        name, soft = line[:26].strip(), line[26:47].strip()
        limits[name] = soft
    return limits


def is_root() -> bool:
    return os.geteuid() == 0


@contextlib.asynccontextmanager
async def running_worker(
    config_path: Path, amqp_url: str, queue_name: str, env: dict[str, str] | None = None
) -> AsyncIterator[WorkerProcess]:
    """A worker consuming ``queue_name``; stopped with SIGTERM after, which must exit 0."""
    process = launch_worker(config_path, env)
    try:
        await await_consumer(amqp_url, queue_name)
        yield process
    finally:
        code = process.terminate()
        assert code == 0, f"worker exited with {code}: {process.stderr_path.read_text()[-3000:]}"


def workload_dir(workspace: Path, request: dict[str, Any]) -> Path:
    """Where the worker puts this request's files (the input model's stem, then the id): a link
    to the latest run's own directory."""
    stem = Path(request["input_model"]["path"].rstrip("/")).stem
    return workspace / "workloads" / f"{stem}_{request['id']}"


async def wait_for_runner(worker: WorkerProcess, workspace: Path, request: dict[str, Any]) -> Any:
    """The first runner of ``request`` once it has written to its log (TensorFlow is loading)."""
    log_path = workload_dir(workspace, request) / "input_model_performance_benchmark_0.txt"

    def started() -> Any:
        if not (log_path.is_file() and log_path.stat().st_size > 0):
            return None
        for process in runner_processes(worker.pid):
            with contextlib.suppress(psutil.Error):
                if request["id"] in " ".join(process.cmdline()):
                    return process  # a fresh runner: its command names the workload
                if str(log_path.resolve()) in {f.path for f in process.open_files()}:
                    return process  # a warm runner: its output goes to the step's log
        return None

    return await wait_until(started, 120, f"runner of {request['id']}")


async def await_consumer(amqp_url: str, queue_name: str, timeout_s: float = 60) -> None:
    """Until the worker consumes from ``queue_name`` (so a request published now is not lost)."""
    from tests.integration.bus import wait_for_consumer

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await wait_for_consumer(connection, queue_name, timeout_s)


def is_dead(process: psutil.Process) -> bool:
    """Gone, or a zombie (dead, waiting to be reaped by whoever inherited it)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
