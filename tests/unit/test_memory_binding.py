"""Memory placement of instances: numactl where it exists and matters, otherwise said plainly."""

from __future__ import annotations

import pytest

from service.executor import memory
from service.executor.memory import memory_binding
from service.executor.planner import plan_instances
from service.executor.topology import CpuTopology


def test_single_node_needs_no_binding() -> None:
    """On one NUMA node nothing is prefixed and the policy says memory is local."""
    topology = CpuTopology.from_description(sockets=1, cores_per_socket=2)
    binding = memory_binding(plan_instances(topology, 2, 1).instances[0], topology)
    assert binding.argv_prefix == ()
    assert "single NUMA node" in binding.policy


def test_two_nodes_with_numactl_bind_each_instance_to_its_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With numactl installed, an instance on node 1 runs under numactl --membind=1."""
    monkeypatch.setattr(memory.shutil, "which", lambda name: f"/usr/bin/{name}")
    topology = CpuTopology.from_description(sockets=2, cores_per_socket=4, numa_nodes=2)
    plan = plan_instances(topology, 2, 4)
    prefixes = [memory_binding(i, topology).argv_prefix for i in plan.instances]
    assert prefixes == [("/usr/bin/numactl", "--membind=0"), ("/usr/bin/numactl", "--membind=1")]


def test_two_nodes_without_numactl_say_which_policy_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without numactl the result says the kernel's first-touch policy keeps memory local."""
    monkeypatch.setattr(memory.shutil, "which", lambda name: None)
    topology = CpuTopology.from_description(sockets=2, cores_per_socket=4, numa_nodes=2)
    binding = memory_binding(plan_instances(topology, 2, 4).instances[1], topology)
    assert binding.argv_prefix == ()
    assert "numactl not installed" in binding.policy and "node 1" in binding.policy
