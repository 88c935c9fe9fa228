"""Where the time of one request goes: measurement versus set-up.

    .venv/bin/python ops/perf/breakdown.py [--samples DIR] [--worker] [--duration-s 3]

With ``--worker``: the fixed cost on a running worker instead. A worker is started (on the
broker at AMQP_URL, default localhost, with queue names of its own) once with
``runners.warm: false`` and once with warm runners; each gets the sample request twice
(publish to finish, one after the other). The fixed cost of a request is its publish-to-finish
time minus the timed windows and the warmups of its steps. Printed side by side: first and
second request, fresh and warm.

Runs the sample request (2 models x performance + accuracy, the sample's own settings) through
``benchmark-worker bench`` and splits its wall time into: timed measurement windows, model
loading (inside the runners), and the rest (process start, Python and TensorFlow import,
first inference, warmup, the accuracy pass, orchestration). Also times a bare
``import tensorflow`` for scale.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import REPO, sample_models


def fixed_cost_s(wall_s: float, finish: dict[str, Any]) -> tuple[float, float]:
    """(fixed cost, timed windows + warmups) of one finished request."""
    measured = 0.0
    for modes in finish["execution_details"].values():
        for step in modes.values():
            warmup = max((i.get("warmup_s") or 0.0 for i in step.get("per_instance", [])),
                         default=0.0)  # fmt: skip
            measured += (step.get("window_s") or 0.0) + warmup
    return wall_s - measured, measured


def _on_a_worker(samples: Path, warm: bool, duration_s: float) -> list[tuple[float, float]]:
    """Start a worker, time two sample requests on it, stop it."""
    import yaml

    url = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
    tag = uuid.uuid4().hex[:8]
    names = {"requests_queue": f"perf.{tag}.requests", "events_exchange": f"perf.{tag}.events",
             "dead_letter_exchange": f"perf.{tag}.dead",
             "dead_letter_queue": f"perf.{tag}.dead"}  # fmt: skip
    workspace = Path(tempfile.mkdtemp(prefix="perf-breakdown-worker-"))
    config = workspace / "worker.yaml"
    config.write_text(yaml.safe_dump({
        "broker": {**names, "url": url}, "runners": {"warm": warm},
        "worker": {"workspace": str(workspace), "allowed_roots": [str(samples), str(workspace)]},
        "logging": {"level": "warning", "json_output": True},
        "node": {"worker_id": f"perf-{tag}"},
    }))  # fmt: skip
    command = [sys.executable, "-m", "service", "run", "--config", str(config)]
    worker = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        return asyncio.run(_two_requests(url, names, samples, workspace, tag, duration_s))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        asyncio.run(_delete(url, names))


async def _two_requests(
    url: str, names: dict[str, str], samples: Path, workspace: Path, tag: str, duration_s: float
) -> list[tuple[float, float]]:
    import aio_pika

    costs = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(names["events_exchange"], "topic", durable=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the worker consumes
            if await _consumers(connection, names["requests_queue"]):
                break
            await asyncio.sleep(0.2)
        for number in range(2):
            request = json.loads((samples / "request.json").read_text())
            request["id"] = f"breakdown-{tag}-{number}"
            request["workspace_path"] = str(workspace)
            request["benchmark"] = {**request.get("benchmark", {}), "duration_s": duration_s}
            events = await channel.declare_queue(exclusive=True)
            await events.bind(exchange, f"benchmark.{request['id']}.finish")
            started = time.monotonic()
            await channel.default_exchange.publish(
                aio_pika.Message(json.dumps(request).encode(), content_type="application/json"),
                routing_key=names["requests_queue"],
            )
            async with events.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    finish = json.loads(message.body)
                    break
            if finish["status"] != "success":
                raise RuntimeError(f"request failed: {finish['data']}")
            costs.append(fixed_cost_s(time.monotonic() - started, finish["data"]))
    return costs


async def _delete(url: str, names: dict[str, str]) -> None:
    import aio_pika

    async with await aio_pika.connect(url) as connection:
        for queue_name in (names["requests_queue"], names["dead_letter_queue"]):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue_name)


async def _consumers(connection: Any, queue_name: str) -> int:
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        return int(queue.declaration_result.consumer_count)
    except Exception:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


def worker_main(samples: Path, duration_s: float) -> int:
    results = {warm: _on_a_worker(samples, warm, duration_s) for warm in (False, True)}
    print(f"sample request ({duration_s:g} s windows) on a running worker: fixed cost = "
          "publish-to-finish minus timed windows and warmups")  # fmt: skip
    print(f"{'runners':8} {'request':>8} {'fixed s':>8} {'measured s':>11}")
    for warm, costs in results.items():
        for number, (fixed, measured) in enumerate(costs, start=1):
            print(f"{'warm' if warm else 'fresh':8} {number:>8} {fixed:8.2f} {measured:11.2f}")
    fresh, warm = results[False][1][0], results[True][1][0]
    print(f"second request: fixed cost fresh/warm = {fresh / warm:.1f}x ({fresh:.2f} s -> "
          f"{warm:.2f} s)")  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, default=None)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--duration-s", type=float, default=3.0)
    args = parser.parse_args()
    samples = sample_models(args.samples)
    if args.worker:
        return worker_main(samples, args.duration_s)
    workspace = Path(tempfile.mkdtemp(prefix="perf-breakdown-"))
    request = json.loads((samples / "request.json").read_text())
    request["workspace_path"] = str(workspace)
    path = workspace / "request.json"
    path.write_text(json.dumps(request))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "service", "bench", str(path),
         "--allowed-root", str(samples), "--allowed-root", str(workspace)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    total_s = time.monotonic() - started
    finish = json.loads(done.stdout.strip().splitlines()[-1])["data"]
    rows = []
    for role, modes in finish["execution_details"].items():
        for mode, step in modes.items():
            instances = step.get("per_instance") or [step]
            load_s = max(i.get("load_time_s") or 0.0 for i in instances)
            rows.append((f"{role}/{mode}", step["step_wall_s"], step.get("window_s", 0.0), load_s))
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, capture_output=True)
    import_s = time.monotonic() - started
    print(f"{'step':34} {'wall s':>8} {'measured s':>11} {'model load s':>13}")
    for name, wall_s, window_s, load_s in rows:
        print(f"{name:34} {wall_s:8.2f} {window_s:11.2f} {load_s:13.2f}")
    measured_s = sum(r[2] for r in rows)
    load_s = sum(r[3] for r in rows)
    print(f"total wall time of the request: {total_s:.2f} s (bench process included)")
    print(f"timed measurement windows:      {measured_s:.2f} s ({measured_s / total_s:.0%})")
    print(f"model loading in the runners:   {load_s:.2f} s ({load_s / total_s:.0%})")
    rest_s = total_s - measured_s - load_s
    print(f"everything else:                {rest_s:.2f} s ({rest_s / total_s:.0%})")
    print(f"  for scale, one bare 'import tensorflow' takes {import_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
