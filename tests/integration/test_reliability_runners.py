"""Runners are untrusted and may crash: confinement, crashes, time limits, disks, Keras safe mode.

Real broker, real TensorFlow; crashes are provoked by real means (signals sent to the runner's
pid found through /proc, a corrupt model, limits set in the worker's config, a full disk).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from contracts import FinishEvent, StartEvent
from service.runner.sandbox import PARENT_PID_ENV
from tests.integration.reliability import (
    configure,
    environ_of,
    is_root,
    limits_of,
    long_request,
    publish_json,
    queue_counts,
    runners_by_command,
    running_worker,
    short_request,
    subscribe,
    wait_for_runner,
    wait_until,
    workload_dir,
)

pytestmark = [pytest.mark.broker, pytest.mark.tensorflow]


async def test_runners_get_no_secrets_their_rlimits_and_no_shell(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """Seen from /proc while it runs: a runner is the worker's direct child (no shell), its
    environment holds no broker URL or secret, and it has the configured rlimits."""
    configure(
        worker_config,
        worker={"runner_memory_mb": 3000, "runner_cpu_time_s": 500, "runner_open_files": 256},
    )
    secrets = {
        "AMQP_URL": amqp_url,
        "MY_API_TOKEN": "token-value-123",
        "DB_PASSWORD": "password-value-456",
        "BENCHMARK_WORKER_LOGGING__LEVEL": "info",
    }
    request = long_request(sample_dir, duration_s=4)
    async with (
        running_worker(worker_config, amqp_url, names["requests_queue"], secrets) as worker,
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
    ):
        await publish_json(amqp_url, names["requests_queue"], request)
        runner = await wait_for_runner(worker, tmp_path / "workspace", request)
        environment = environ_of(runner)
        limits = limits_of(runner)
        parent, executable = runner.parent(), runner.exe()
        finish = await events.until_finish()

    assert finish.status == "success", finish.data
    assert parent is not None and parent.pid == worker.pid
    assert os.path.basename(executable).startswith("python")
    assert not set(secrets) & set(environment)
    assert not any("amqp://" in v or "-value-" in v for v in environment.values())
    assert not any(key.startswith("BENCHMARK_WORKER_") for key in environment)
    assert environment[PARENT_PID_ENV] == str(worker.pid)
    assert limits["Max data size"] == str(3000 * 2**20)
    # a warm runner's soft limit is its CPU time so far plus one step's 500 s
    assert 500 <= int(limits["Max cpu time"]) <= 500 + 60, limits["Max cpu time"]
    assert limits["Max open files"] == "256"
    assert limits["Max core file size"] == "0"


def test_no_shell_in_the_service_code() -> None:
    """No code path of the worker or runner can start a shell (argv lists only)."""
    root = Path(__file__).resolve().parents[2] / "service"
    forbidden = ("shell=True", "create_subprocess_shell", "os.system(", "os.popen(")
    offenders = [
        f"{path.relative_to(root)}: {word}"
        for path in root.rglob("*.py")
        for word in forbidden
        if word in path.read_text()
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"runner_memory_mb": 150}, "out of memory: the worker limits each runner to 150 MiB"),
        ({"runner_cpu_time_s": 1}, "killed by signal SIGXCPU"),
    ],
    ids=["memory", "cpu-time"],
)
async def test_a_runner_over_its_limit_ends_in_an_error_finish(
    worker_config: Path,
    amqp_url: str,
    names: dict[str, str],
    sample_dir: Path,
    limit: dict[str, int],
    expected: str,
) -> None:
    """A runner that outgrows its memory (RLIMIT_DATA) or CPU time (RLIMIT_CPU) fails with the
    cause and its log tail; the worker stays up. The limits bind the pre-flight child too, the
    first to start TensorFlow, so the request ends at step prepare."""
    configure(worker_config, worker=limit)
    request = short_request(sample_dir)
    async with (
        running_worker(worker_config, amqp_url, names["requests_queue"]) as worker,
        subscribe(amqp_url, names["events_exchange"], request["id"]) as events,
    ):
        await publish_json(amqp_url, names["requests_queue"], request)
        finish = await events.until_finish()
        assert worker.process.poll() is None

    assert finish.status == "error" and finish.data.step == "prepare"
    assert expected in finish.data.message, finish.data.message
    # the log is named, with its last lines unless all it holds is TensorFlow's start-up
    assert "last lines of" in finish.data.message or "(log: " in finish.data.message


async def test_runner_crashes_end_in_error_finishes_and_the_worker_takes_the_next_request(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """A runner killed by SIGSEGV or SIGKILL (what the OOM killer sends) and one exiting non-zero
    on a corrupt model each give an error finish with the exit signal or status and the log
    tail; the same worker process then benchmarks a good request."""
    workspace = tmp_path / "workspace"
    corrupt = workspace / "corrupt.pb"
    corrupt.write_bytes(os.urandom(4096))
    async with running_worker(worker_config, amqp_url, names["requests_queue"]) as worker:
        outcomes = {}
        for signum in (signal.SIGSEGV, signal.SIGKILL):
            request = long_request(sample_dir)
            async with subscribe(amqp_url, names["events_exchange"], request["id"]) as events:
                await publish_json(amqp_url, names["requests_queue"], request)
                runner = await wait_for_runner(worker, workspace, request)
                runner.send_signal(signum)
                outcomes[signum.name] = await events.until_finish(timeout_s=60)

        broken = short_request(sample_dir)
        broken["input_model"]["path"] = str(corrupt)
        good = short_request(sample_dir)
        async with subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events:
            await publish_json(amqp_url, names["requests_queue"], broken)
            await publish_json(amqp_url, names["requests_queue"], good)
            finishes = {}
            while len(finishes) < 2:
                finish = await events.until_finish()
                finishes[finish.workload_id] = finish
        assert worker.process.poll() is None

    for name, finish in outcomes.items():
        assert finish.status == "error" and finish.data.step == "input_model/performance"
        assert f"runner was killed by signal {name} without a result" in finish.data.message
        assert "its log ends: " in finish.data.message
        assert "stopped by the worker after instance 0 failed" in finish.data.message
    corrupt_finish = finishes[broken["id"]]
    assert corrupt_finish.status == "error", corrupt_finish.data
    assert corrupt_finish.data.step == "prepare"  # the pre-flight check loads it first
    assert "input_model: could not load frozen graph" in corrupt_finish.data.message
    assert "not a valid GraphDef protobuf" in corrupt_finish.data.message
    assert finishes[good["id"]].status == "success"


async def test_time_limit_kills_the_runners_and_ends_the_request_once(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """A request over its ``timeout_s`` ends in "timed out after N s", its runners are gone,
    it is acked (not retried, not dead-lettered), and the worker takes the next request."""
    request = long_request(sample_dir, duration_s=60, timeout_s=12)  # past the pre-flight
    good = short_request(sample_dir)
    async with (
        running_worker(worker_config, amqp_url, names["requests_queue"]) as worker,
        subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events,
    ):
        await publish_json(amqp_url, names["requests_queue"], request)
        finish = await events.until_finish(timeout_s=120)
        marker = str(workload_dir(tmp_path / "workspace", request))
        await wait_until(lambda: not runners_by_command(marker), 10, "runners killed")
        await publish_json(amqp_url, names["requests_queue"], good)
        good_finish = await events.until_finish()
        await events.settle(quiet_s=1)
        requests_left, _ = await queue_counts(amqp_url, names["requests_queue"])
        dead, _ = await queue_counts(amqp_url, names["dead_letter_queue"])
        assert worker.process.poll() is None

    assert finish.workload_id == request["id"] and finish.status == "error"
    assert finish.data.message.startswith("timed out after 12 s"), finish.data.message
    assert finish.data.step == "input_model/performance"
    starts = [e for e in events.events if isinstance(e, StartEvent)]
    assert [e.workload_id for e in starts] == [request["id"], good["id"]]
    assert good_finish.workload_id == good["id"] and good_finish.status == "success"
    assert (requests_left, dead) == (0, 0)


_LAMBDA_MODELS = """
import pathlib, sys
import keras
marker = sys.argv[2]
inputs = keras.Input(shape=(4,))
x = keras.layers.Dense(3)(inputs)
x = keras.layers.Lambda(lambda t: (__import__("pathlib").Path(marker).touch(), t)[1])(x)
model = keras.Model(inputs, x)
model.save(pathlib.Path(sys.argv[1]) / "lambda.keras")
model.save(pathlib.Path(sys.argv[1]) / "lambda.h5")
"""


@pytest.fixture
def lambda_models(worker_config: Path, tmp_path: Path) -> Path:
    """lambda.keras and lambda.h5 in the workspace; their lambda touches the returned marker."""
    marker = tmp_path / "lambda-ran"
    subprocess.run(
        [sys.executable, "-c", _LAMBDA_MODELS, str(tmp_path / "workspace"), str(marker)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    marker.unlink(missing_ok=True)  # saving traced the model once
    return marker


async def test_keras_models_load_in_safe_mode(
    worker_config: Path,
    amqp_url: str,
    names: dict[str, str],
    sample_dir: Path,
    tmp_path: Path,
    lambda_models: Path,
) -> None:
    """A .keras or .h5 model carrying a Python lambda (arbitrary code) is refused by Keras safe
    mode: an error finish that says so, and the lambda never runs."""
    workspace = tmp_path / "workspace"
    marker = lambda_models
    requests = []
    for name in ("lambda.keras", "lambda.h5"):
        request = short_request(sample_dir)
        request["input_model"]["path"] = str(workspace / name)
        requests.append(request)
    async with (
        running_worker(worker_config, amqp_url, names["requests_queue"]),
        subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events,
    ):
        for request in requests:
            await publish_json(amqp_url, names["requests_queue"], request)
        finishes = [await events.until_finish(), await events.until_finish()]

    for finish in finishes:
        assert finish.status == "error" and finish.data.step == "prepare"
        assert "safe_mode" in finish.data.message and "Lambda" in finish.data.message
    assert not marker.exists()


@contextlib.contextmanager
def tmpfs(directory: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs mounted at ``directory`` (needs root), unmounted after."""
    directory.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); needs root")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _fill(directory: Path, leave_bytes: int) -> None:
    """Fill a filesystem until only about ``leave_bytes`` remain."""
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    with contextlib.suppress(OSError):
        (directory / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


async def test_unwritable_or_full_workspace_gives_an_error_finish_and_no_result_file(
    worker_config: Path, amqp_url: str, names: dict[str, str], sample_dir: Path, tmp_path: Path
) -> None:
    """A read-only workspace and a full one each end in an error finish naming the cause; no
    result.json (nor a temporary one) is left behind; the worker carries on."""
    if not is_root():
        pytest.skip("read-only and full tmpfs mounts need root")
    read_only = tmp_path / "workspace" / "read-only"
    full = tmp_path / "workspace" / "full"
    with tmpfs(read_only, "64k", read_only=True), tmpfs(full, "256k"):
        _fill(full, leave_bytes=8 * 1024)
        requests = {"read-only": short_request(sample_dir), "full": short_request(sample_dir)}
        requests["read-only"]["workspace_path"] = str(read_only)
        requests["full"]["workspace_path"] = str(full)
        good = short_request(sample_dir)
        async with (
            running_worker(worker_config, amqp_url, names["requests_queue"]) as worker,
            subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events,
        ):
            for request in (*requests.values(), good):
                await publish_json(amqp_url, names["requests_queue"], request)
            finishes = {}
            while len(finishes) < 3:
                finish = await events.until_finish()
                finishes[finish.workload_id] = finish
            assert worker.process.poll() is None
        leftovers = [p.name for p in full.rglob("*result.json*")]

    read_only_finish = finishes[requests["read-only"]["id"]]
    assert read_only_finish.status == "error" and read_only_finish.data.step == "prepare"
    assert "Read-only file system" in read_only_finish.data.message
    full_finish = finishes[requests["full"]["id"]]
    assert full_finish.status == "error", full_finish.data
    assert "No space left on device" in full_finish.data.message, full_finish.data.message
    assert leftovers == []
    assert finishes[good["id"]].status == "success"


def test_result_file_is_never_half_written_on_a_full_disk(tmp_path: Path) -> None:
    """Writing result.json onto a full filesystem fails cleanly: the previous result.json stays
    whole and no temporary file remains."""
    if not is_root():
        pytest.skip("a tmpfs mount needs root")
    from contracts import error_finish
    from service.engine.results import RESULT_FILE, write_result

    with tmpfs(tmp_path / "disk", "64k") as disk:
        previous = error_finish("job-1", "the previous result", "validate")
        write_result(disk, previous)
        before = (disk / RESULT_FILE).read_bytes()
        _fill(disk, leave_bytes=0)
        big = error_finish("job-1", "x" * 32 * 1024, "validate")
        with pytest.raises(OSError) as raised:
            write_result(disk, big)
        assert raised.value.errno == 28  # ENOSPC
        assert (disk / RESULT_FILE).read_bytes() == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", RESULT_FILE]
    assert FinishEvent.model_validate_json(before).data.message == "the previous result"
