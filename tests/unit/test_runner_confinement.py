"""Runner confinement and failure reports that stay bounded, whatever a runner does."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from service.executor.failures import describe_exit, log_tail
from service.executor.launch import runner_environment
from service.runner.sandbox import LIMITS_ENV, PARENT_PID_ENV, RunnerLimits


def test_limits_travel_to_the_runner_through_its_environment() -> None:
    """The limits the worker sets are the limits the runner reads back."""
    limits = RunnerLimits(data_bytes=3 * 2**30, cpu_time_s=600, open_files=256)
    env = runner_environment({"PATH": "/bin", "AMQP_URL": "amqp://u:p@h/"}, limits)
    assert RunnerLimits.from_environment(env) == limits
    assert "AMQP_URL" not in env and env[PARENT_PID_ENV].isdigit()


def test_a_runner_process_applies_its_limits_first_thing() -> None:
    """A child that confines itself from that environment has the lowered rlimits."""
    limits = RunnerLimits(data_bytes=2**30, cpu_time_s=100, open_files=128)
    code = (
        "import resource; from service.runner.sandbox import confine; confine();"
        "print(resource.getrlimit(resource.RLIMIT_DATA)[0],"
        " resource.getrlimit(resource.RLIMIT_CPU)[0],"
        " resource.getrlimit(resource.RLIMIT_NOFILE)[0],"
        " resource.getrlimit(resource.RLIMIT_CORE)[0])"
    )
    env = runner_environment(limits=limits)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [str(2**30), "100", "128", "0"]
    assert resource.getrlimit(resource.RLIMIT_CPU)[0] != 100  # the worker keeps its own


def test_a_runner_whose_worker_is_already_gone_exits_at_once() -> None:
    """A runner started for a parent that is not its parent (the worker died) does not run."""
    done = subprocess.run(
        [sys.executable, "-c", "from service.runner.sandbox import confine; confine()"],
        env={**runner_environment(), PARENT_PID_ENV: "1", LIMITS_ENV: ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 3 and "is gone" in done.stderr


def test_the_log_tail_of_a_huge_log_is_small(tmp_path: Path) -> None:
    """A runner that wrote 64 MiB of output yields at most 5 lines of 200 characters."""
    log = tmp_path / "runner.txt"
    with log.open("wb") as handle:
        handle.truncate(64 * 2**20)  # sparse: cheap to make
        handle.seek(0, 2)
        handle.write(b"x" * 5000 + b"\n" + b"last line\n")
    tail = log_tail(log)
    assert tail.endswith("last line") and len(tail) < 5 * 203


def test_exits_are_described_by_signal_name_or_status() -> None:
    """Negative return codes name the signal; others are statuses."""
    assert describe_exit(-11) == "was killed by signal SIGSEGV"
    assert describe_exit(2) == "exited with status 2"
