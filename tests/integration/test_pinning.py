"""Pinning, verified from outside: each instance's threads stay on the CPUs the plan gave it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.cpulist import parse_cpu_list

pytestmark = pytest.mark.tensorflow


def runner_pids(config_path: Path) -> dict[int, int]:
    """{instance: pid} of the runner processes reading ``config_path``."""
    found: dict[int, int] = {}
    config_path = config_path.resolve()  # the run's own directory (the workload path links it)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        if "service.runner" in argv and str(config_path) in argv and "performance" in argv:
            found[int(argv[argv.index("--instance") + 1])] = int(proc.name)  # a fresh runner
        elif "service.runner.warm" in argv:  # a warm runner: its output is the step's log
            try:
                log = Path(os.readlink(proc / "fd" / "1"))
            except OSError:
                continue
            prefix = "input_model_performance_benchmark_"
            if log.parent == config_path.parent and log.name.startswith(prefix):
                found[int(log.stem.removeprefix(prefix))] = int(proc.name)
    return found


def thread_cpus(pid: int) -> set[int]:
    """The union of Cpus_allowed_list over every thread of ``pid`` (empty once it exits)."""
    cpus: set[int] = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    cpus |= set(parse_cpu_list(line.split(":", 1)[1].strip()))
        except OSError:
            continue
    return cpus


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin two instances")
def test_two_instances_stay_on_their_own_cpus_and_the_event_says_so(
    sample_dir: Path, tmp_path: Path
) -> None:
    """2 instances x 1 core: /proc shows each instance's threads on its own CPU, as reported."""
    request = json.loads((sample_dir / "request.json").read_text())
    request.update(id="pinning", workspace_path=str(tmp_path))
    request.pop("optimized_model")
    request["input_model"]["mods"] = ["performance"]
    request["benchmark"] = {"instances": 2, "cores_per_instance": 1, "duration_s": 3,
                            "min_iterations": 10, "max_duration_s": 4, "warmup": 5}  # fmt: skip
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps(request))
    config_path = tmp_path / "workloads" / "fp32_pinning" / "config.yaml"
    bench = subprocess.Popen(
        [sys.executable, "-m", "service", "bench", str(request_path),
         "--allowed-root", str(sample_dir), "--allowed-root", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    sync_dir = config_path.parent / "sync_input_model_performance"
    seen: dict[int, set[int]] = {}
    samples = 0
    while bench.poll() is None:
        for instance, pid in runner_pids(config_path).items():
            if not (sync_dir / f"ready.{instance}").exists():
                continue  # still starting Python; it pins itself before TensorFlow loads
            cpus = thread_cpus(pid)
            if cpus:
                seen.setdefault(instance, set()).update(cpus)
                samples += 1
        time.sleep(0.05)
    stdout, _ = bench.communicate()
    assert bench.returncode == 0, stdout.decode()[-2000:]
    finish = json.loads(stdout.decode().splitlines()[-1])
    step = finish["data"]["execution_details"]["input_model_benchmark"]["performance"]
    reported = {i["instance"]: i for i in step["per_instance"]}

    assert samples > 10, "the runners were never observed while running"
    assert seen == {0: {0}, 1: {1}}, f"threads seen on {seen}"
    for instance, cpus in seen.items():
        assert reported[instance]["cpus_planned"] == sorted(cpus)
        assert reported[instance]["cpus_observed"] == sorted(cpus)
        assert reported[instance]["intra_op_threads"] == 1
    assert step["cpus"] == [[0], [1]]
