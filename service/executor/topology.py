"""The CPU topology this process may use: logical CPUs, physical cores, sockets, NUMA nodes.

Pure logic, no TensorFlow. Two ways to build a :class:`CpuTopology`:

* :meth:`CpuTopology.from_system` reads Linux sysfs and keeps only the CPUs this process may
  run on (``os.sched_getaffinity(0)``, which reflects cgroup cpusets and ``taskset``),
  optionally narrowed further by the worker's ``--cpus``.
* :meth:`CpuTopology.from_description` describes a machine we don't have (for tests and
  planning), numbered the way Linux usually numbers x86 servers.

A *physical core* is identified by ``(physical_package_id, core_id)`` (cross-checked with
``thread_siblings_list``) and numbered machine-wide by its lowest sibling CPU id, so a core's
number does not depend on which of its siblings the process may use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.cpulist import format_cpu_list, parse_cpu_list
from service.errors import ServiceError

SYSFS_ROOT = Path("/sys/devices/system")

Numbering = Literal["linux", "adjacent"]


class TopologyError(ServiceError, ValueError):
    """The topology cannot be read or described as asked."""


@dataclass(frozen=True)
class LogicalCpu:
    cpu: int
    core: int  # a physical core id unique across the machine
    socket: int
    node: int  # NUMA node


@dataclass(frozen=True)
class CpuTopology:
    """The logical CPUs this process may use (sorted by cpu id)."""

    cpus: tuple[LogicalCpu, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.cpus, key=lambda c: c.cpu))
        object.__setattr__(self, "cpus", ordered)
        _check_cpus(ordered)

    # -- views -----------------------------------------------------------------------------

    @property
    def cpu_ids(self) -> tuple[int, ...]:
        """Usable logical CPU ids, ascending."""
        return tuple(c.cpu for c in self.cpus)

    @property
    def physical_cores(self) -> dict[int, tuple[int, ...]]:
        """Physical core id → its usable logical CPUs (ascending), cores by lowest CPU."""
        groups: dict[int, list[int]] = {}
        for c in self.cpus:  # cpus are sorted, so each core appears at its lowest cpu first
            groups.setdefault(c.core, []).append(c.cpu)
        return {core: tuple(cpus) for core, cpus in groups.items()}

    @property
    def sockets(self) -> tuple[int, ...]:
        """Socket (package) ids with at least one usable CPU, ascending."""
        return tuple(sorted({c.socket for c in self.cpus}))

    @property
    def nodes(self) -> tuple[int, ...]:
        """NUMA node ids with at least one usable CPU, ascending."""
        return tuple(sorted({c.node for c in self.cpus}))

    @property
    def smt(self) -> bool:
        """True if any physical core has more than one usable sibling thread."""
        return any(len(cpus) > 1 for cpus in self.physical_cores.values())

    def cores_by_node(self) -> dict[int, tuple[int, ...]]:
        """NUMA node → its usable physical core ids, in ascending CPU order."""
        node_of_core = {c.core: c.node for c in self.cpus}
        result: dict[int, list[int]] = {node: [] for node in self.nodes}
        for core in self.physical_cores:
            result[node_of_core[core]].append(core)
        return {node: tuple(cores) for node, cores in result.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (what the worker reports about the machine)."""
        cores = self.physical_cores
        core_info = {c.core: c for c in self.cpus}
        return {
            "cpus": format_cpu_list(self.cpu_ids),
            "logical_cpu_count": len(self.cpus),
            "physical_core_count": len(cores),
            "sockets": list(self.sockets),
            "nodes": {
                str(node): format_cpu_list([c.cpu for c in self.cpus if c.node == node])
                for node in self.nodes
            },
            "smt": self.smt,
            "cores": [
                {
                    "core": core,
                    "cpus": list(cpus),
                    "socket": core_info[core].socket,
                    "node": core_info[core].node,
                }
                for core, cpus in cores.items()
            ],
        }

    # -- constructors ----------------------------------------------------------------------

    @classmethod
    def from_system(
        cls,
        allowed: Iterable[int] | None = None,
        *,
        sysfs_root: Path | str = SYSFS_ROOT,
        affinity: Iterable[int] | None = None,
    ) -> CpuTopology:
        """Read the topology of the CPUs this process may use from Linux sysfs.

        ``allowed`` (the worker's ``--cpus``) narrows the process affinity further; a CPU in it
        that the process may not use is an error. ``sysfs_root`` and ``affinity`` (default
        ``os.sched_getaffinity(0)``) exist for tests. Missing sysfs files fall back to socket 0,
        node 0 and one core per CPU.
        """
        usable = _restrict(
            _process_affinity() if affinity is None else set(affinity),
            allowed,
            usable="this process may not use",
        )
        root = Path(sysfs_root)
        node_of = _read_numa_nodes(root / "node")
        raw = {cpu: _read_cpu_topology(root / "cpu" / f"cpu{cpu}") for cpu in sorted(usable)}
        core_of = _number_cores(raw)
        return cls(
            tuple(
                LogicalCpu(
                    cpu=cpu, core=core_of[cpu], socket=raw[cpu].package, node=node_of.get(cpu, 0)
                )
                for cpu in sorted(usable)
            )
        )

    @classmethod
    def from_description(
        cls,
        sockets: int,
        cores_per_socket: int,
        threads_per_core: int = 1,
        numa_nodes: int | None = None,
        allowed: Iterable[int] | None = None,
        numbering: Numbering = "linux",
    ) -> CpuTopology:
        """Describe a machine: ``sockets`` x ``cores_per_socket`` x ``threads_per_core``.

        ``numbering="linux"`` (the usual x86 server numbering): first the first thread of every
        core socket by socket, then the second threads, e.g. 2 x 8 x 2 → cpus 0-15 are first
        threads, 16-31 their siblings (cpu 16 is cpu 0's sibling). ``numbering="adjacent"``
        puts siblings next to each other (0,1 = core 0), as some VMs and BIOSes do.
        ``numa_nodes`` (default: one per socket) splits sockets evenly (sub-NUMA clustering)
        or groups whole sockets. ``allowed`` keeps only those CPUs (a cgroup cpuset).
        """
        _check_positive(
            sockets=sockets, cores_per_socket=cores_per_socket, threads_per_core=threads_per_core
        )
        node_count = sockets if numa_nodes is None else numa_nodes
        _check_numa_split(sockets, cores_per_socket, node_count)
        total_cores = sockets * cores_per_socket
        cores_per_node = total_cores // node_count
        cpus = [
            LogicalCpu(
                cpu=_described_cpu_id(core, thread, total_cores, threads_per_core, numbering),
                core=_described_cpu_id(core, 0, total_cores, threads_per_core, numbering),
                socket=core // cores_per_socket,
                node=core // cores_per_node,
            )
            for core in range(total_cores)
            for thread in range(threads_per_core)
        ]
        keep = _restrict(
            {c.cpu for c in cpus}, allowed, usable="the described machine does not have"
        )
        return cls(tuple(c for c in cpus if c.cpu in keep))


# -- helpers: validation ----------------------------------------------------------------------


def _check_cpus(cpus: tuple[LogicalCpu, ...]) -> None:
    if not cpus:
        raise TopologyError("the topology has no usable CPUs")
    ids = [c.cpu for c in cpus]
    if len(set(ids)) != len(ids):
        raise TopologyError(f"duplicate CPU ids in topology: {ids}")
    place: dict[int, tuple[int, int]] = {}
    for c in cpus:
        if place.setdefault(c.core, (c.socket, c.node)) != (c.socket, c.node):
            raise TopologyError(f"core {c.core} spans sockets or NUMA nodes (cpu {c.cpu})")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise TopologyError(f"{name} must be at least 1, got {value}")


def _check_numa_split(sockets: int, cores_per_socket: int, numa_nodes: int) -> None:
    if numa_nodes < 1:
        raise TopologyError(f"numa_nodes must be at least 1, got {numa_nodes}")
    splits_sockets = numa_nodes % sockets == 0 and cores_per_socket % (numa_nodes // sockets) == 0
    groups_sockets = sockets % numa_nodes == 0
    if not (splits_sockets or groups_sockets):
        raise TopologyError(
            f"{numa_nodes} NUMA nodes cannot evenly split or group {sockets} sockets x "
            f"{cores_per_socket} cores"
        )


def _restrict(available: set[int], allowed: Iterable[int] | None, *, usable: str) -> set[int]:
    """``available`` ∩ ``allowed``; an allowed CPU outside ``available`` is an error."""
    if allowed is None:
        return set(available)
    wanted = set(allowed)
    missing = wanted - available
    if missing:
        raise TopologyError(
            f"allowed CPUs include {format_cpu_list(missing)}, which {usable} "
            f"(usable: {format_cpu_list(available) or 'none'})"
        )
    if not wanted:
        raise TopologyError("the allowed CPU set is empty")
    return wanted


# -- helpers: described machines --------------------------------------------------------------


def _described_cpu_id(
    core: int, thread: int, total_cores: int, threads_per_core: int, numbering: Numbering
) -> int:
    if numbering == "linux":
        return thread * total_cores + core
    if numbering == "adjacent":
        return core * threads_per_core + thread
    raise TopologyError(f"unknown numbering {numbering!r} (expected 'linux' or 'adjacent')")


# -- helpers: sysfs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _RawCpu:
    package: int
    core_id: int | None
    siblings: tuple[int, ...] | None


def _process_affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: assume every CPU is usable
        return set(range(os.cpu_count() or 1))


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = _read_text(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _read_cpu_topology(cpu_dir: Path) -> _RawCpu:
    topo = cpu_dir / "topology"
    package = _read_int(topo / "physical_package_id")
    siblings_text = _read_text(topo / "thread_siblings_list")
    siblings: tuple[int, ...] | None = None
    if siblings_text:
        try:
            siblings = tuple(parse_cpu_list(siblings_text))
        except ValueError:
            siblings = None
    return _RawCpu(
        package=package if package is not None and package >= 0 else 0,
        core_id=_read_int(topo / "core_id"),
        siblings=siblings or None,
    )


def _read_numa_nodes(node_root: Path) -> dict[int, int]:
    """CPU → NUMA node from ``node*/cpulist``; empty if there is no NUMA information."""
    node_of: dict[int, int] = {}
    for node_dir in sorted(node_root.glob("node[0-9]*")):
        text = _read_text(node_dir / "cpulist")
        if text is None or not node_dir.name[4:].isdigit():
            continue
        try:
            cpus = parse_cpu_list(text)
        except ValueError:  # e.g. a memory-only node with an empty cpulist
            continue
        for cpu in cpus:
            node_of.setdefault(cpu, int(node_dir.name[4:]))
    return node_of


def _number_cores(raw: Mapping[int, _RawCpu]) -> dict[int, int]:
    """CPU → machine-wide physical core id (the core's lowest sibling CPU id).

    CPUs share a core when they share ``(package, core_id)`` and agree on their sibling list;
    a CPU without ``core_id`` is its own core.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for cpu, info in raw.items():
        key = (info.package, info.core_id, info.siblings) if info.core_id is not None else (cpu,)
        groups.setdefault(key, []).append(cpu)
    numbers = {key: _lowest_sibling(members, raw) for key, members in groups.items()}
    if len(set(numbers.values())) != len(numbers):  # inconsistent sysfs: use usable CPUs only
        numbers = {key: min(members) for key, members in groups.items()}
    return {cpu: numbers[key] for key, members in groups.items() for cpu in members}


def _lowest_sibling(members: list[int], raw: Mapping[int, _RawCpu]) -> int:
    info = raw[members[0]]
    if info.core_id is None or info.siblings is None:
        return min(members)
    return min(*members, *info.siblings)
