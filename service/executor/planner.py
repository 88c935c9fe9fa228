"""Plan N benchmark instances x M physical cores each as disjoint CPU sets.

Pure logic over a :class:`~service.executor.topology.CpuTopology`; no TensorFlow, no OS calls.

Unit of allocation
    A *physical core*. By default an instance gets one logical CPU per core (the core's
    lowest-numbered usable sibling) and the other SMT siblings stay idle, which gives the most
    stable per-instance numbers. With ``smt=True`` a core brings all its usable siblings;
    ``cores_per_instance`` still counts physical cores and cores are never split, so two
    instances never share sibling threads.

Defaults (recorded in :attr:`Plan.defaults_used`)
    * neither given: ``cores_per_instance = 4`` when the largest NUMA node has at least 8
      physical cores (INC's usual per-instance size, and at least two instances per node),
      otherwise ``1``; ``instances = max(1, total cores // cores_per_instance)``. On small
      nodes one-core instances are what measures the node's throughput: on a 2-core machine a
      small CNN at batch 1 ran ~10,000 samples/s as 2 x 1 core and ~2,300 as 1 x 2 cores, since
      two threads on one tiny graph mostly wait on each other (1 socket x 2 cores -> 2 x 1).
    * only ``instances``: ``cores_per_instance = total cores // instances`` (error when that
      is 0, i.e. more instances than cores).
    * only ``cores_per_instance``: ``instances = total cores // cores_per_instance`` (error
      when no instance fits).

Placement
    Nodes are filled in order (node 0 first), cores ascending within a node. An instance that
    fits in a node (``cores_per_instance`` <= the node's usable cores) is placed inside one
    node and carries its ``node``; instances are packed whole into each node first. Cores left
    over (uneven nodes, cgroup cpusets with holes) are then taken in node order, so an instance
    bigger than any node, or one built from leftovers, spans contiguous nodes (``node=None``).
    Asking for more cores than are usable is a :class:`PlanError` stating the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.cpulist import format_cpu_list
from service.errors import ServiceError
from service.executor.topology import CpuTopology

DEFAULT_CORES_PER_INSTANCE = 4
SMALL_NODE_CORES = 8  # below this many cores in the largest node, instances get one core


class PlanError(ServiceError, ValueError):
    """The requested instances x cores cannot be placed on the usable CPUs."""


@dataclass(frozen=True)
class InstancePlan:
    index: int
    cpus: tuple[int, ...]
    cores: int  # physical cores
    node: int | None  # the NUMA node when the instance fits in one, else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "cpus": list(self.cpus),
            "cpu_list": format_cpu_list(self.cpus),
            "cores": self.cores,
            "node": self.node,
        }


@dataclass(frozen=True)
class Plan:
    instances: tuple[InstancePlan, ...]
    cores_per_instance: int
    smt: bool  # True when instances include SMT siblings
    defaults_used: tuple[str, ...]  # which of "instances", "cores_per_instance" were defaulted

    def __post_init__(self) -> None:
        _check_disjoint(self.instances)

    @property
    def all_cpus(self) -> tuple[int, ...]:
        """Every CPU used by any instance, ascending."""
        return tuple(sorted(cpu for instance in self.instances for cpu in instance.cpus))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the plan."""
        return {
            "instance_count": len(self.instances),
            "cores_per_instance": self.cores_per_instance,
            "smt": self.smt,
            "defaults_used": list(self.defaults_used),
            "all_cpus": format_cpu_list(self.all_cpus),
            "instances": [instance.to_dict() for instance in self.instances],
        }


@dataclass(frozen=True)
class _Core:
    node: int
    cpus: tuple[int, ...]  # the CPUs this core contributes (one, or all siblings with smt)


def plan_instances(
    topology: CpuTopology,
    instances: int | None,
    cores_per_instance: int | None,
    *,
    smt: bool = False,
) -> Plan:
    """Place ``instances`` x ``cores_per_instance`` physical cores (defaults: module docstring)."""
    use_smt = smt and topology.smt
    cores_by_node = _cores_by_node(topology, use_smt)
    count, size, defaults = _resolve_counts(topology, cores_by_node, instances, cores_per_instance)
    groups = _place(cores_by_node, count, size)
    placed = tuple(
        InstancePlan(
            index=index,
            cpus=tuple(sorted(cpu for core in group for cpu in core.cpus)),
            cores=len(group),
            node=_single_node(group),
        )
        for index, group in enumerate(groups)
    )
    return Plan(placed, cores_per_instance=size, smt=use_smt, defaults_used=defaults)


def accuracy_plan(plan: Plan) -> InstancePlan:
    """The CPUs for the accuracy run: the first instance of the performance plan.

    Accuracy runs single-instance, as INC does: the metric does not depend on parallelism, so
    one pass over the dataset is enough. Instance 0's CPUs are the same cores (and NUMA node)
    a performance instance was measured on, with the same thread count, so the two runs are
    comparable; and being one of the plan's disjoint sets, it never shares a core or a sibling
    thread with another instance, so nothing contends with it.
    """
    if not plan.instances:
        raise PlanError("the plan has no instances")
    return plan.instances[0]


# -- helpers ----------------------------------------------------------------------------------


def _cores_by_node(topology: CpuTopology, use_smt: bool) -> dict[int, list[_Core]]:
    """NUMA node → its allocatable cores, ascending (nodes ascending)."""
    siblings = topology.physical_cores
    return {
        node: [_Core(node, siblings[core] if use_smt else siblings[core][:1]) for core in cores]
        for node, cores in topology.cores_by_node().items()
    }


def _resolve_counts(
    topology: CpuTopology,
    cores_by_node: dict[int, list[_Core]],
    instances: int | None,
    cores_per_instance: int | None,
) -> tuple[int, int, tuple[str, ...]]:
    """Apply the defaults and check the request fits: (instances, cores_per_instance, defaults)."""
    _check_at_least_one(instances=instances, cores_per_instance=cores_per_instance)
    total_cores = sum(len(cores) for cores in cores_by_node.values())
    largest_node_cores = max(len(cores) for cores in cores_by_node.values())
    available = _available_text(topology, total_cores)
    defaults: list[str] = []
    if cores_per_instance is None and instances is None:
        cores_per_instance = (
            DEFAULT_CORES_PER_INSTANCE if largest_node_cores >= SMALL_NODE_CORES else 1
        )
        defaults.append("cores_per_instance")
    if cores_per_instance is None:
        assert instances is not None
        cores_per_instance = total_cores // instances
        defaults.append("cores_per_instance")
        if cores_per_instance == 0:
            raise PlanError(
                f"asked for {_count(instances, 'instance')} of at least 1 core = "
                f"{_count(instances, 'physical core')}, but {available}"
            )
    if instances is None:
        instances = total_cores // cores_per_instance
        defaults.append("instances")
        if instances == 0:
            raise PlanError(
                f"asked for {_count(cores_per_instance, 'physical core')} per instance, "
                f"but {available}"
            )
    needed_cores = instances * cores_per_instance
    if needed_cores > total_cores:
        raise PlanError(
            f"asked for {_count(instances, 'instance')} x {_count(cores_per_instance, 'core')} = "
            f"{_count(needed_cores, 'physical core')}, but {available}"
        )
    return instances, cores_per_instance, tuple(dict.fromkeys(defaults))


def _available_text(topology: CpuTopology, total_cores: int) -> str:
    cpus = format_cpu_list(topology.cpu_ids)
    siblings = ", with SMT siblings" if len(topology.cpu_ids) > total_cores else ""
    verb = "is" if total_cores == 1 else "are"
    return f"only {total_cores} {verb} available (cpus {cpus}{siblings})"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _check_at_least_one(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 1:
            raise PlanError(f"{name} must be at least 1, got {value}")


def _place(
    cores_by_node: dict[int, list[_Core]], instances: int, cores_per_instance: int
) -> list[list[_Core]]:
    """Node-local instances first (node by node), then the leftovers in node order."""
    groups: list[list[_Core]] = []
    leftovers: list[_Core] = []
    for cores in cores_by_node.values():
        local_count = min(len(cores) // cores_per_instance, instances - len(groups))
        for i in range(local_count):
            groups.append(cores[i * cores_per_instance : (i + 1) * cores_per_instance])
        leftovers.extend(cores[local_count * cores_per_instance :])
    while len(groups) < instances:
        groups.append(leftovers[:cores_per_instance])
        leftovers = leftovers[cores_per_instance:]
    return groups


def _single_node(group: list[_Core]) -> int | None:
    nodes = {core.node for core in group}
    return nodes.pop() if len(nodes) == 1 else None


def _check_disjoint(instances: tuple[InstancePlan, ...]) -> None:
    seen: dict[int, int] = {}
    for instance in instances:
        for cpu in instance.cpus:
            other = seen.setdefault(cpu, instance.index)
            if other != instance.index:
                raise PlanError(f"cpu {cpu} is in instances {other} and {instance.index}")
