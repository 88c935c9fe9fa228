"""Shared fixtures: a real broker, the sample models, isolated broker names, a worker process."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from service.tools.devbroker import NoBrokerError, find_broker

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A real RabbitMQ: AMQP_URL, localhost, testcontainers, or a started rabbitmq-server."""
    try:
        handle = find_broker()
    except NoBrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield handle.url
    handle.stop()


SAMPLE_SOURCES = ("service/tools/samples.py", "service/runner/loading.py")


def _samples_key() -> str:
    """What the sample models depend on: their code and the TensorFlow and INC versions."""
    digest = hashlib.sha256()
    for relative in SAMPLE_SOURCES:
        digest.update((REPO / relative).read_bytes())
    for distribution in ("tensorflow-cpu", "tensorflow", "keras", "neural-compressor-tf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{distribution}={importlib.metadata.version(distribution)}".encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def sample_dir(pytestconfig: pytest.Config) -> Path:
    """The project's sample models (fp32 and INC's int8), made by the real CLI.

    Cached across sessions in pytest's cache, keyed by the sample code and the TensorFlow and
    INC versions; the workloads of earlier sessions are cleared.
    """
    name = f"samples-{_samples_key()}"
    cache = getattr(pytestconfig, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        directory = Path(cache.mkdir(name))
    else:  # where the cache plugin keeps its directories
        directory = pytestconfig.rootpath / ".pytest_cache" / "d" / name
        directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "request.json").is_file():
        done = subprocess.run(
            [sys.executable, "-m", "service", "sample-models", str(directory)],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
    shutil.rmtree(directory / "workspace" / "workloads", ignore_errors=True)
    assert (directory / "int8.pb").is_file(), (
        "sample-models wrote no int8.pb: Intel Neural Compressor is missing; run ops/setup.sh"
    )
    return directory


@pytest.fixture
def names() -> dict[str, str]:
    """Broker names unique to one test, so tests never see each other's messages."""
    tag = f"test.{uuid.uuid4().hex[:10]}"
    return {
        "requests_queue": f"{tag}.requests",
        "dead_letter_exchange": f"{tag}.dead",
        "dead_letter_queue": f"{tag}.requests.dead",
        "events_exchange": f"{tag}.events",
        "control_exchange": f"{tag}.control",
    }


@pytest.fixture
def worker_config(
    tmp_path: Path, amqp_url: str, names: dict[str, str], sample_dir: Path
) -> Iterator[Path]:
    """A worker config YAML with this test's broker names; its broker objects are deleted after."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    config = {
        "broker": {**names, "url": amqp_url, "publish_timeout_s": 10},
        "worker": {
            "workspace": str(workspace),
            "allowed_roots": [str(sample_dir), str(workspace)],
            "timeout_s": 240,
            "shutdown_grace_s": 5,
        },
        "logging": {"level": "info", "json_output": True},
    }
    path = tmp_path / "worker.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path
    _delete_broker_objects(amqp_url, names)


def _delete_broker_objects(amqp_url: str, names: dict[str, str]) -> None:
    import asyncio

    import aio_pika

    async def delete() -> None:
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            for queue in (names["requests_queue"], names["dead_letter_queue"]):
                channel = await connection.channel()
                with contextlib.suppress(Exception):  # not declared by this test
                    await channel.queue_delete(queue)
            exchanges = ("dead_letter_exchange", "events_exchange", "control_exchange")
            for exchange in (names[key] for key in exchanges if key in names):
                channel = await connection.channel()
                with contextlib.suppress(Exception):  # not declared by this test
                    await channel.exchange_delete(exchange)

    asyncio.run(delete())


def worker_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCHMARK_WORKER_")}
    env.pop("AMQP_URL", None)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # default settings: the worker decides oneDNN
    return env
