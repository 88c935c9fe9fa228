"""`benchmark-worker submit --wait` against a real worker: on a terminal, piped, and timing out."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent, parse_event
from service.cli import main
from service.tools.summary import comparison_rows
from tests.conftest import REPO, worker_environment
from tests.integration.clients import short_request

pytestmark = [pytest.mark.broker]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def submit_argv(request_path: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "service", "submit", str(request_path), "--wait",
            "--config", str(config), *extra]  # fmt: skip


def run_in_terminal(argv: list[str], log: Path, columns: int = 120) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdout; its exit code and what it showed."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**worker_environment(), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=stderr, env=env, cwd=REPO
        )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return process.wait(timeout=60), b"".join(chunks).decode("utf-8", errors="replace")


def workload_result(request: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The result.json the worker wrote for ``request``, and its directory."""
    workspace = Path(request["workspace_path"]) / "workloads"
    (directory,) = [d for d in workspace.iterdir() if d.name.endswith(f"_{request['id']}")]
    return json.loads((directory / "result.json").read_text()), directory


async def test_terminal_shows_each_step_then_the_comparison_table(
    worker: Any, worker_config: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """On a terminal: a line per finished step and a table whose figures are the result's."""
    request = short_request(sample_dir, optimized=True, accuracy=True)
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    argv = submit_argv(request_path, worker_config, "--timeout", "240")
    code, shown = await asyncio.to_thread(run_in_terminal, argv, tmp_path / "submit.log")
    screen = ANSI.sub("", shown)
    assert code == 0, screen[-3000:]
    assert "\x1b[" in shown, "no terminal control codes: rich did not see a terminal"
    assert "{" not in screen, "JSON lines on a terminal"
    for step in ("input_model · performance", "input_model · accuracy",
                 "optimized_model · performance", "optimized_model · accuracy"):  # fmt: skip
        assert re.search(rf"✓ {step} ", screen), step
    assert "4/4" in screen
    result, directory = workload_result(request)
    table = screen[screen.index("input versus optimized") :]
    for row in comparison_rows(result["data"]):
        line = next(line for line in table.splitlines() if row.label in line)
        for text in (*row.cells(), row.change_text()):
            assert text in line, (row.label, text, line)
    assert f"speedup ×{result['data']['speedup']:.2f} (optimized/input throughput" in table
    assert f"accuracy delta {result['data']['accuracy_delta']:+.4f} (optimized - input)" in table
    assert main(["report", str(directory)]) == 0  # and the same result as a page
    assert (directory / "report.html").is_file()


async def test_terminal_shows_each_sweep_point_then_the_sweep_and_best_points(
    worker: Any, worker_config: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """A sweep on a terminal: a line per point as it finishes, the bar counting every run,
    then the sweep table and each model's best point, as in the result."""
    request = short_request(sample_dir, optimized=True)
    request["benchmark"].update(batch_size=1, instances=1, cores_per_instance=2,
                                sweep={"batch_sizes": [1, 2]})  # fmt: skip
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    argv = submit_argv(request_path, worker_config, "--timeout", "240")
    code, shown = await asyncio.to_thread(run_in_terminal, argv, tmp_path / "submit.log", 160)
    screen = ANSI.sub("", shown)
    assert code == 0, screen[-3000:]
    for role in ("input_model", "optimized_model"):
        assert re.search(rf"✓ sweep batch 2, 1×2 · {role} +[\d,.]+ samples/s", screen), role
    assert "4/4" in screen  # 2 main steps + 2 sweep runs
    result, _ = workload_result(request)
    best = result["data"]["sweep"]["best"]["optimized_model"]["by_throughput"]
    assert (f"optimized model: best throughput at batch {best['batch_size']}, "
            f"{best['instances']}×{best['cores_per_instance']}") in screen  # fmt: skip
    table = screen[screen.rindex("sweep") :]
    assert "speedup" in screen and "verdicts" in table


async def test_piped_prints_one_json_line_per_event_and_exits_by_status(
    worker: Any, worker_config: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """Piped: every event as one JSON line, to the finish; exit 0, or 1 for an error finish."""
    good = short_request(sample_dir, optimized=True)
    bad = short_request(sample_dir)
    bad["input_model"]["path"] = str(sample_dir / "missing.pb")
    outcomes = {}
    for name, request in (("good", good), ("bad", bad)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(request))
        outcomes[name] = await asyncio.to_thread(
            subprocess.run, submit_argv(path, worker_config, "--timeout", "240"),
            capture_output=True, text=True, env=worker_environment(), cwd=REPO, timeout=300,
        )  # fmt: skip
    done = outcomes["good"]
    assert done.returncode == 0, done.stderr[-3000:]
    events = [parse_event(line) for line in done.stdout.splitlines()]
    subjects = ["start", "progress", "progress", "finish"]
    assert [e.subject for e in events] == [f"benchmark_{s}" for s in subjects]
    assert all(e.workload_id == good["id"] for e in events)
    finish = events[-1]
    assert isinstance(finish, FinishEvent) and finish.ok
    assert finish.data.model_dump()["speedup"] > 0
    failed = outcomes["bad"]
    assert failed.returncode == 1, failed.stderr[-3000:]
    (line,) = failed.stdout.splitlines()
    error = parse_event(line)
    assert isinstance(error, FinishEvent) and error.status == "error"
    assert "missing.pb" in error.data.message


async def test_timeout_without_a_worker_exits_1_and_says_so(
    worker_config: Path, sample_dir: Path, tmp_path: Path
) -> None:
    """No worker: the request waits in the queue, and --timeout ends the wait with exit 1."""
    request = short_request(sample_dir)
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    done = await asyncio.to_thread(
        subprocess.run, submit_argv(path, worker_config, "--timeout", "1"),
        capture_output=True, text=True, env=worker_environment(), cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"no benchmark_finish for {request['id']} within 1 s" in done.stderr
    assert done.stdout == ""
