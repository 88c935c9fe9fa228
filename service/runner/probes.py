"""What else happened on our CPUs during the timed window, read from /proc and sysfs.

No TensorFlow, no threads: one snapshot right before the window and one right after, so the
timed region holds nothing but inference calls.

* ``/proc/stat``: per-CPU jiffies. Busy = user + nice + system + irq + softirq (guest time is
  already inside user); steal is kept apart (a hypervisor running someone else).
* our own CPU time: ``os.times()`` user + system of this process (all its threads; they are
  all pinned to these CPUs).
* foreign busy fraction = (busy of our CPUs − our own CPU time) / all time of our CPUs. It is
  what other processes (and the kernel on their behalf) took from us.
* resolution: jiffies are sampled on the scheduler tick, so each CPU's count at each end is
  uncertain by about one tick, and our own time by about one more at each end; the fraction is
  therefore uncertain by ``(2 * cpus + 2) / total ticks`` (4% for one CPU over one second).
* frequency: ``scaling_cur_freq`` at both ends and ``cpuinfo_max_freq``; throttling: Intel's
  ``thermal_throttle/{core,package}_throttle_count`` before and after. Absent files (VMs,
  containers, non-Intel) give None: "not visible".
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from service.runner.protocol import CpuWindow

PROC_STAT = Path("/proc/stat")
SYS_CPU = Path("/sys/devices/system/cpu")
_BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq (idle=3, iowait=4)
_STEAL_FIELD = 7
_COUNTED_FIELDS = 8  # guest and guest_nice are already counted in user and nice


@dataclass(frozen=True)
class CpuTicks:
    busy: int
    steal: int
    total: int


def parse_proc_stat(text: str) -> dict[int, CpuTicks]:
    """Per-CPU tick counters from the text of ``/proc/stat``."""
    out: dict[int, CpuTicks] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        fields = [int(value) for value in rest.split()[:_COUNTED_FIELDS]]
        fields += [0] * (_COUNTED_FIELDS - len(fields))
        out[int(name[3:])] = CpuTicks(
            busy=sum(fields[i] for i in _BUSY_FIELDS),
            steal=fields[_STEAL_FIELD],
            total=sum(fields),
        )
    return out


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _throttle_count(cpu: int) -> int | None:
    counts = [
        _read_int(SYS_CPU / f"cpu{cpu}" / "thermal_throttle" / f"{kind}_throttle_count")
        for kind in ("core", "package")
    ]
    visible = [count for count in counts if count is not None]
    return sum(visible) if visible else None


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class Snapshot:
    monotonic_s: float
    ticks: dict[int, CpuTicks]
    own_cpu_s: float
    freq_khz: dict[int, int | None]
    throttle: dict[int, int | None]


def snapshot(cpus: list[int]) -> Snapshot:
    """The counters of ``cpus`` now."""
    try:
        ticks = parse_proc_stat(PROC_STAT.read_text())
    except OSError:
        ticks = {}
    return Snapshot(
        monotonic_s=time.monotonic(),
        ticks={cpu: ticks[cpu] for cpu in cpus if cpu in ticks},
        own_cpu_s=_own_cpu_s(),
        freq_khz={cpu: _read_int(SYS_CPU / f"cpu{cpu}/cpufreq/scaling_cur_freq") for cpu in cpus},
        throttle={cpu: _throttle_count(cpu) for cpu in cpus},
    )


def window(cpus: list[int], before: Snapshot, after: Snapshot) -> CpuWindow:
    """What happened on ``cpus`` between two snapshots."""
    hz = os.sysconf("SC_CLK_TCK")
    seen = [cpu for cpu in cpus if cpu in before.ticks and cpu in after.ticks]
    busy = {cpu: after.ticks[cpu].busy - before.ticks[cpu].busy for cpu in seen}
    steal = {cpu: after.ticks[cpu].steal - before.ticks[cpu].steal for cpu in seen}
    total = {cpu: after.ticks[cpu].total - before.ticks[cpu].total for cpu in seen}
    own_s = after.own_cpu_s - before.own_cpu_s
    total_ticks = sum(total.values())
    foreign = steal_fraction = resolution = None
    if seen and total_ticks > 0:
        foreign = max(0.0, sum(busy.values()) / hz - own_s) / (total_ticks / hz)
        steal_fraction = sum(steal.values()) / total_ticks
        resolution = (2 * len(seen) + 2) / total_ticks
    throttled = {
        cpu: after.throttle[cpu] - start  # type: ignore[operator]
        for cpu, start in before.throttle.items()
        if start is not None and after.throttle.get(cpu) is not None
    }
    return CpuWindow(
        cpus=cpus,
        wall_s=after.monotonic_s - before.monotonic_s,
        clock_ticks_per_s=hz,
        busy_ticks=busy,
        steal_ticks=steal,
        total_ticks=total,
        own_cpu_s=own_s,
        foreign_busy_fraction=foreign,
        steal_fraction=steal_fraction,
        resolution_fraction=resolution,
        cpu_busy_fraction={cpu: busy[cpu] / total[cpu] for cpu in seen if total[cpu] > 0},
        freq_khz_start={cpu: f for cpu, f in before.freq_khz.items() if f is not None},
        freq_khz_end={cpu: f for cpu, f in after.freq_khz.items() if f is not None},
        freq_khz_max={
            cpu: f
            for cpu in cpus
            if (f := _read_int(SYS_CPU / f"cpu{cpu}/cpufreq/cpuinfo_max_freq")) is not None
        },
        throttle_events=throttled or None,
    )


def status_bytes(field: str) -> int | None:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None if absent."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
