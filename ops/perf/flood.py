"""Flood a worker with malformed requests: how fast are they dead-lettered, does memory grow?

    .venv/bin/python ops/perf/flood.py [--count 5000] [--amqp-url URL] [--samples DIR]
                                       [--reject-lane-prefetch N]

Starts a real worker (``benchmark-worker run``) on broker names of its own, warms it up with a
few hundred malformed bodies, freezes it (SIGSTOP), queues ``--count`` more (truncated JSON,
bad UTF-8), lets it go (SIGCONT) and times until all of them sit in the dead-letter queue.
Then a valid request (the sample model) must succeed. Prints the dead-letter rate, the worker's
memory (RSS) before and after and its CPU time; exits 1 when the rate is under ``--min-rate``
(default 1000/s), the RSS grew by ``--max-growth-mb`` (default 10) or more, or the valid
request did not succeed. Everything it declared is deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
WARMUP_COUNT = 500
PUBLISH_BATCH = 500


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="malformed messages to send")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    )
    parser.add_argument("--samples", type=Path, help="sample-models directory (default: made)")
    parser.add_argument("--min-rate", type=float, default=1000.0, help="dead letters per second")
    parser.add_argument("--max-growth-mb", type=float, default=10.0, help="worker RSS growth")
    parser.add_argument(
        "--reject-lane-prefetch",
        type=int,
        help="the worker's worker.reject_lane_prefetch (0: prefetch 1 only; default: its own)",
    )
    return parser.parse_args()


def malformed_body(number: int) -> bytes:
    """Undecodable bodies of two kinds: truncated JSON and invalid UTF-8."""
    if number % 2:
        return b'{"id": "flood-%d", "input_model": {"path": ' % number
    return b'{"id": "\xff\xfe%d"}' % number


def names(tag: str) -> dict[str, str]:
    return {
        "requests_queue": f"{tag}.requests",
        "dead_letter_exchange": f"{tag}.dead",
        "dead_letter_queue": f"{tag}.requests.dead",
        "events_exchange": f"{tag}.events",
        "control_exchange": f"{tag}.control",
    }


def write_config(
    directory: Path,
    url: str,
    broker_names: dict[str, str],
    samples: Path,
    lane_prefetch: int | None,
) -> Path:
    workspace = directory / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    worker: dict[str, Any] = {
        "workspace": str(workspace),
        "allowed_roots": [str(samples), str(workspace)],
    }
    if lane_prefetch is not None:
        worker["reject_lane_prefetch"] = lane_prefetch
    config = {
        "broker": {**broker_names, "url": url},
        "worker": worker,
        "logging": {"level": "info", "json_output": True},
    }
    path = directory / "worker.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sample_models(directory: Path) -> Path:
    print("making the sample models ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "service", "sample-models", str(directory), "--train-seconds", "3"],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    return directory


async def queue_depth(channel: aio_pika.abc.AbstractChannel, queue: str) -> tuple[int, int]:
    declared = await channel.declare_queue(queue, passive=True)
    result = declared.declaration_result
    return result.message_count or 0, result.consumer_count or 0


async def wait_for_consumer(connection: aio_pika.abc.AbstractConnection, queue: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        channel = await connection.channel()
        try:
            if (await queue_depth(channel, queue))[1] >= 1:
                return
        except aio_pika.exceptions.ChannelClosed:
            pass
        finally:
            if not channel.is_closed:
                await channel.close()
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker consuming {queue}")


async def publish_many(
    channel: aio_pika.abc.AbstractChannel, queue: str, first: int, count: int
) -> None:
    """Publish ``count`` malformed bodies with confirms, in batches awaited together."""
    for start in range(first, first + count, PUBLISH_BATCH):
        batch = range(start, min(start + PUBLISH_BATCH, first + count))
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(malformed_body(n), content_type="application/json"),
                    routing_key=queue,
                    timeout=30,
                )
                for n in batch
            )
        )


async def wait_for_dead_letters(
    connection: aio_pika.abc.AbstractConnection, queue: str, expected: int, timeout_s: float
) -> float:
    """Until ``expected`` messages sit in ``queue``; returns when that was seen (monotonic)."""
    channel = await connection.channel()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (await queue_depth(channel, queue))[0] >= expected:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{queue} did not reach {expected} messages in {timeout_s} s")


async def valid_request_succeeds(
    connection: aio_pika.abc.AbstractConnection, broker_names: dict[str, str], samples: Path
) -> dict[str, Any]:
    channel = await connection.channel()
    workload_id = f"flood-valid-{uuid.uuid4().hex[:8]}"
    events = await channel.get_exchange(broker_names["events_exchange"])
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(events, routing_key=f"benchmark.{workload_id}.finish")
    request = {
        "id": workload_id,
        "input_model": {"precision": "fp32", "path": str(samples / "fp32.pb")},
        "benchmark": {"duration_s": 1, "warmup": 2, "min_iterations": 10, "max_duration_s": 2},
    }
    await channel.default_exchange.publish(
        aio_pika.Message(json.dumps(request).encode(), content_type="application/json"),
        routing_key=broker_names["requests_queue"],
        timeout=30,
    )
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            return json.loads(message.body)
    raise RuntimeError("no finish")


async def delete_objects(url: str, broker_names: dict[str, str]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        for queue in (broker_names["requests_queue"], broker_names["dead_letter_queue"]):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        for key in ("dead_letter_exchange", "events_exchange", "control_exchange"):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(broker_names[key])


def start_worker(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """``benchmark-worker run`` with its JSON log in ``log_path`` (no broker URL inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHMARK_WORKER_")}
    env.pop("AMQP_URL", None)
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=env,
            cwd=REPO,
        )


def lane_use(log_path: Path) -> tuple[int, int]:
    """(times the reject lane opened, rejections it made), from the worker's JSON log."""
    opened = through = 0
    for line in log_path.read_text(errors="replace").splitlines():
        if '"reject_lane_opened"' in line:
            opened += 1
        elif '"request_rejected"' in line and '"lane": "reject"' in line:
            through += 1
    return opened, through


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def flood(args: argparse.Namespace, directory: Path) -> int:
    samples = args.samples or sample_models(directory / "samples")
    broker_names = names(f"flood.{uuid.uuid4().hex[:8]}")
    config = write_config(
        directory, args.amqp_url, broker_names, samples, args.reject_lane_prefetch
    )
    worker = start_worker(config, directory / "worker.log")
    process = psutil.Process(worker.pid)
    connection = await aio_pika.connect(args.amqp_url)
    try:
        await wait_for_consumer(connection, broker_names["requests_queue"])
        channel = await connection.channel(publisher_confirms=True)
        dead_queue = broker_names["dead_letter_queue"]

        await publish_many(channel, broker_names["requests_queue"], 0, WARMUP_COUNT)
        await wait_for_dead_letters(connection, dead_queue, WARMUP_COUNT, 60)
        baseline_mb = rss_mb(process)

        peak_mb = baseline_mb
        # The flood arrives as a backlog: publish it while the worker is frozen (SIGSTOP), so
        # the rate below is the worker's and the broker's, not the publisher's.
        worker.send_signal(signal.SIGSTOP)
        try:
            publish_started = time.monotonic()
            await publish_many(channel, broker_names["requests_queue"], WARMUP_COUNT, args.count)
            publish_s = time.monotonic() - publish_started
        finally:
            worker.send_signal(signal.SIGCONT)
        cpu_before = process.cpu_times()
        started = time.monotonic()
        waiting = asyncio.create_task(
            wait_for_dead_letters(connection, dead_queue, WARMUP_COUNT + args.count, 300)
        )
        while not waiting.done():
            peak_mb = max(peak_mb, rss_mb(process))
            await asyncio.wait({waiting}, timeout=0.1)
        finished = waiting.result()
        after_mb = rss_mb(process)
        cpu_after = process.cpu_times()
        cpu_s = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
        rate = args.count / (finished - started)

        finish = await asyncio.wait_for(
            valid_request_succeeds(connection, broker_names, samples), 300
        )
        growth_mb = after_mb - baseline_mb
        print(
            f"malformed messages:   {args.count} (after {WARMUP_COUNT} to warm up), queued in "
            f"{publish_s:.2f} s while the worker was stopped"
        )
        print(f"dead-lettered in:     {finished - started:.2f} s  ->  {rate:,.0f} msg/s")
        print(
            f"worker RSS:           {baseline_mb:.1f} MiB before, {after_mb:.1f} MiB after "
            f"(growth {growth_mb:+.1f} MiB, peak {peak_mb:.1f} MiB)"
        )
        print(
            f"worker CPU:           {cpu_s:.2f} s ({cpu_s / args.count * 1e6:.0f} µs per message,"
            f" {cpu_s / (finished - started):.0%} of one CPU)"
        )
        lane_opened, via_lane = lane_use(directory / "worker.log")
        print(f"reject lane:          opened {lane_opened}x, {via_lane} messages through it")
        print(f"valid request after:  {finish['status']}")
        ok = (
            rate >= args.min_rate
            and growth_mb < args.max_growth_mb
            and finish["status"] == "success"
            and worker.poll() is None
        )
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        await connection.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
        await delete_objects(args.amqp_url, broker_names)


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="flood-") as tmp:
        return asyncio.run(flood(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
