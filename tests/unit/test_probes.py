"""Reading what else ran on our CPUs: /proc/stat parsing and the foreign-busy arithmetic."""

from __future__ import annotations

import os

import pytest

from service.runner import probes
from service.runner.probes import CpuTicks, Snapshot

PROC_STAT = """\
cpu  500 10 200 9000 50 5 5 40 0 0
cpu0 300 10 100 4000 20 3 2 40 7 0
cpu1 200 0 100 5000 30 2 3 0 0 0
intr 12345 0 0
ctxt 987654
"""


def test_parse_proc_stat_splits_busy_idle_and_steal() -> None:
    ticks = probes.parse_proc_stat(PROC_STAT)

    assert set(ticks) == {0, 1}
    # busy = user + nice + system + irq + softirq; guest (7) is inside user already
    assert ticks[0] == CpuTicks(busy=300 + 10 + 100 + 3 + 2, steal=40, total=4475)
    assert ticks[1] == CpuTicks(busy=305, steal=0, total=5335)


def snap(t_s: float, busy: int, total: int, own_s: float, steal: int = 0) -> Snapshot:
    return Snapshot(
        monotonic_s=t_s,
        ticks={3: CpuTicks(busy=busy, steal=steal, total=total)},
        own_cpu_s=own_s,
        freq_khz={3: None},
        throttle={3: None},
    )


def test_foreign_busy_is_cpu_busy_minus_our_own_time() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    before = snap(10.0, busy=1000, total=5000, own_s=2.0)
    # one second: the CPU was busy all of it, we had 0.6 s of it
    after = snap(11.0, busy=1000 + hz, total=5000 + hz, own_s=2.6)

    window = probes.window([3], before, after)

    assert window.foreign_busy_fraction == pytest.approx(0.4)
    assert window.cpu_busy_fraction == {3: pytest.approx(1.0)}
    assert window.resolution_fraction == pytest.approx(4 / hz)
    assert window.wall_s == pytest.approx(1.0)
    assert window.throttle_events is None and window.freq_khz_start == {}


def test_own_time_above_cpu_busy_is_not_negative_foreign_load() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    window = probes.window(
        [3], snap(0.0, 0, 0, own_s=0.0), snap(1.0, busy=hz - 2, total=hz, own_s=1.0)
    )
    assert window.foreign_busy_fraction == 0.0


def test_steal_is_reported_apart() -> None:
    hz = os.sysconf("SC_CLK_TCK")
    window = probes.window(
        [3], snap(0.0, 0, 0, 0.0), snap(1.0, busy=hz // 2, total=hz, own_s=0.5, steal=hz // 2)
    )
    assert window.steal_fraction == pytest.approx(0.5)
    assert window.foreign_busy_fraction == pytest.approx(0.0)


def test_unreadable_counters_give_no_fractions() -> None:
    empty = Snapshot(0.0, {}, 0.0, {3: None}, {3: None})
    window = probes.window([3], empty, empty)
    assert window.foreign_busy_fraction is None and window.cpu_busy_fraction == {}


def test_a_real_snapshot_of_this_process_cpu() -> None:
    cpu = sorted(os.sched_getaffinity(0))[0]
    before = probes.snapshot([cpu])
    total = 0
    for i in range(2_000_000):  # ~0.1 s of our own CPU time
        total += i
    window = probes.window([cpu], before, probes.snapshot([cpu]))

    assert window.own_cpu_s > 0
    assert window.foreign_busy_fraction is not None and 0 <= window.foreign_busy_fraction <= 1
    assert sum(window.total_ticks.values()) > 0
