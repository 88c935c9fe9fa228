"""Keeping an instance's memory on its own NUMA node, and saying how it was done.

Where the machine has several NUMA nodes and ``numactl`` is installed, a runner whose CPUs lie
in one node is started under ``numactl --membind=<node>``. Otherwise the kernel's default policy
applies: pages are allocated on the node of the CPU that first touches them, and since the
runner pins itself before TensorFlow allocates anything, that is the instance's own node.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from service.executor.planner import InstancePlan
from service.executor.topology import CpuTopology


@dataclass(frozen=True)
class MemoryBinding:
    argv_prefix: tuple[str, ...]
    policy: str


def memory_binding(instance: InstancePlan, topology: CpuTopology) -> MemoryBinding:
    """How ``instance``'s memory is kept local: a command prefix and a description."""
    if len(topology.nodes) < 2:
        return MemoryBinding((), "single NUMA node: all memory is local")
    if instance.node is None:
        return MemoryBinding(
            (), "instance spans NUMA nodes: kernel default (first touch by its pinned threads)"
        )
    numactl = shutil.which("numactl")
    if numactl is None:
        return MemoryBinding(
            (),
            f"numactl not installed: kernel default first-touch allocation, local to node "
            f"{instance.node} because the runner is pinned there before TensorFlow loads",
        )
    return MemoryBinding(
        (numactl, f"--membind={instance.node}"), f"numactl --membind={instance.node}"
    )
