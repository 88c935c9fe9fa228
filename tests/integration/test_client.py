"""The contracts' Python client over the real broker, from a process with nothing but its deps."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest

from contracts import BenchmarkRequest, FinishEvent, ProgressEvent, StartEvent
from contracts.client import BenchmarkClient, PublishFailed, QueueMissing
from tests.conftest import REPO
from tests.integration.bus import WorkerProcess
from tests.integration.clients import short_request

pytestmark = [pytest.mark.broker]

# Modules the publisher's process must not be able to import: the worker and its heavy deps.
NOT_INSTALLED = ("tensorflow", "service", "numpy", "structlog", "yaml", "psutil", "rich")


def _client_requirements() -> list[str]:
    """What the `client` extra of pyproject.toml declares: the publisher installs exactly this."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["client"])


def _python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def _copy_installed_distributions(requirements: list[str], site_packages: Path) -> None:
    """Offline fallback: copy the installed files of the requirements and their dependencies."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    pending = [Requirement(r) for r in requirements]
    while pending:
        requirement = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = requirement.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        distribution = metadata.distribution(requirement.name)
        for file in distribution.files or []:
            source = Path(distribution.locate_file(file))
            if source.is_file() and not str(file).startswith(".."):
                target = site_packages / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        pending += [Requirement(r) for r in distribution.requires or []]


@pytest.fixture(scope="session")
def publisher_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A fresh virtualenv with only the client extra installed, and a copy of contracts/ alone.

    Installs with pip (the ordinary way); when no package index answers, copies the installed
    distributions of exactly those requirements instead.
    """
    root = tmp_path_factory.mktemp("publisher")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    requirements = _client_requirements()
    installed = subprocess.run(
        [str(_python_of(venv)), "-m", "pip", "install", "--quiet", *requirements],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if installed.returncode != 0:
        site = next((venv / "lib").glob("python3*/site-packages"))
        _copy_installed_distributions(requirements, site)
    app = root / "app"
    shutil.copytree(REPO / "contracts", app / "contracts",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    yield _python_of(venv), app


PUBLISHER = """
import asyncio, importlib.util, json, sys

missing = [name for name in {not_installed!r} if importlib.util.find_spec(name) is None]

from contracts import BenchmarkRequest
from contracts.client import BenchmarkClient

async def main():
    request = BenchmarkRequest.model_validate_json(sys.argv[2])
    options = json.loads(sys.argv[3])
    async with BenchmarkClient.connect(sys.argv[1], **options) as client:
        subjects = []
        async with await client.submit(request) as stream:
            async for event in stream.events(timeout_s=240):
                subjects.append(event.subject)
        finish = stream.finish
    print(json.dumps({{
        "missing": missing,
        "subjects": subjects,
        "finish": json.loads(finish.to_body()),
        "modules": sorted(m for m in sys.modules if m.split(".")[0] in {not_installed!r}),
        "path": sys.path,
    }}))

asyncio.run(main())
"""


async def test_publisher_with_only_the_contracts_and_aio_pika_runs_a_benchmark(
    publisher_env: tuple[Path, Path],
    worker: WorkerProcess,
    names: dict[str, str],
    amqp_url: str,
    sample_dir: Path,
) -> None:
    """A venv with just the `client` extra and a copy of contracts/ submits and gets the result."""
    python, app = publisher_env
    script = app / "publish.py"
    script.write_text(PUBLISHER.format(not_installed=NOT_INSTALLED))
    request = short_request(sample_dir)
    options = {"requests_queue": names["requests_queue"],
               "events_exchange": names["events_exchange"]}  # fmt: skip
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    argv = [
        str(python),
        "-E",
        "-s",
        str(script),
        amqp_url,
        json.dumps(request),
        json.dumps(options),
    ]
    done = await asyncio.to_thread(
        subprocess.run, argv, capture_output=True, text=True, timeout=300, cwd=app, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["missing"] == list(NOT_INSTALLED), "the publisher's venv has more than it needs"
    assert report["modules"] == []
    assert not any(".venv" in entry or str(REPO) == entry for entry in report["path"])
    assert report["subjects"] == ["benchmark_start", "benchmark_progress", "benchmark_finish"]
    finish = FinishEvent.model_validate(report["finish"])
    assert finish.ok, finish
    assert finish.data.perf_throughput_input_model > 0  # type: ignore[union-attr]


async def test_client_follows_events_refuses_a_missing_queue_and_an_unheard_cancel(
    worker: WorkerProcess,
    names: dict[str, str],
    amqp_url: str,
    sample_dir: Path,
    amqp: aio_pika.abc.AbstractConnection,
) -> None:
    """Typed events in order; a missing queue and a cancel nobody hears are errors, not silence."""
    request = BenchmarkRequest.model_validate(short_request(sample_dir))
    options = {"requests_queue": names["requests_queue"],
               "events_exchange": names["events_exchange"],
               "control_exchange": names["control_exchange"]}  # fmt: skip
    async with BenchmarkClient.connect(amqp_url, **options) as client:
        async with await client.submit(request) as stream:
            events = [event async for event in stream.events(timeout_s=240)]
        assert [type(e) for e in events] == [StartEvent, ProgressEvent, FinishEvent]
        assert isinstance(events[0], StartEvent) and events[0].data.node is not None
        assert stream.finish is events[-1] and stream.finish.ok
        await client.cancel("nobody-runs-this", reason="test")  # every worker's queue gets it
    unheard = f"{names['control_exchange']}.unheard"
    try:
        async with BenchmarkClient.connect(
            amqp_url, **{**options, "control_exchange": unheard}
        ) as client:
            with pytest.raises(PublishFailed, match="could not route"):
                await client.cancel(request.id)
    finally:
        channel = await amqp.channel()
        await channel.exchange_delete(unheard)
    with pytest.raises(QueueMissing, match="does not exist"):
        async with BenchmarkClient.connect(amqp_url, requests_queue=f"{names['requests_queue']}.x"):
            pass
