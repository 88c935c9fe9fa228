"""``benchmark-worker plan``: the CPU plan as JSON, or an error that states the numbers."""

from __future__ import annotations

import json
import os

import pytest

from service.cli import main


def test_plan_prints_disjoint_cpu_sets_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """One 1-core instance per usable CPU, printed as JSON with each instance's CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    assert main(["plan", "--instances", str(len(cpus)), "--cores-per-instance", "1"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [i["cpus"] for i in plan["instances"]] == [[cpu] for cpu in cpus]


def test_plan_over_the_node_fails_with_the_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    """Asking for more cores than the node has exits 2 and says how many there are."""
    too_many = len(os.sched_getaffinity(0)) + 1
    assert main(["plan", "--instances", str(too_many), "--cores-per-instance", "1"]) == 2
    error = capsys.readouterr().err
    assert f"{too_many} instances" in error and "available" in error


def test_plan_with_a_cpu_the_process_may_not_use_names_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--cpus naming a CPU outside the process's affinity is an error naming that CPU."""
    assert main(["plan", "--cpus", "4095"]) == 2
    assert "4095" in capsys.readouterr().err
