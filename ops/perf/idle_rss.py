"""The worker's resident memory when idle and consuming, and proof it never loaded TensorFlow.

    .venv/bin/python ops/perf/idle_rss.py

Starts ``benchmark-worker run`` against the broker found as the tests find it, on throw-away
queue names, waits until it consumes, then prints its RSS and whether its memory maps mention
TensorFlow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import REPO
from service.tools.devbroker import find_broker


def main() -> int:
    url = find_broker().url
    tag = f"perf.{uuid.uuid4().hex[:8]}"
    directory = Path(tempfile.mkdtemp(prefix="perf-idle-"))
    config = {
        "broker": {"url": url, "requests_queue": f"{tag}.requests",
                   "dead_letter_exchange": f"{tag}.dead",
                   "dead_letter_queue": f"{tag}.requests.dead",
                   "events_exchange": f"{tag}.events"},
        "worker": {"workspace": str(directory)},
        "logging": {"json_output": True},
    }  # fmt: skip
    config_path = directory / "worker.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = directory / "worker.log"
    env = {k: v for k, v in os.environ.items() if k != "AMQP_URL"}
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "service", "run", "--config", str(config_path)],
            stderr=log, stdout=subprocess.DEVNULL, cwd=REPO, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while b"worker_started" not in log_path.read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                print(log_path.read_text(), file=sys.stderr)
                return 1
            time.sleep(0.1)
        time.sleep(2.0)  # settle
        rss_mib = psutil.Process(worker.pid).memory_info().rss / 2**20
        maps = Path(f"/proc/{worker.pid}/maps").read_text().lower()
        print(f"idle worker RSS: {rss_mib:.1f} MiB")
        print(f"TensorFlow in the worker's memory maps: {'yes' if 'tensorflow' in maps else 'no'}")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        _delete(url, config["broker"])
    return 0


def _delete(url: str, names: dict[str, str]) -> None:
    import asyncio

    import aio_pika

    async def delete() -> None:
        async with await aio_pika.connect(url) as connection:
            channel = await connection.channel()
            await channel.queue_delete(names["requests_queue"])
            await channel.queue_delete(names["dead_letter_queue"])
            await channel.exchange_delete(names["dead_letter_exchange"])
            await channel.exchange_delete(names["events_exchange"])

    asyncio.run(delete())


if __name__ == "__main__":
    sys.exit(main())
