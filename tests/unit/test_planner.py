"""Unit tests for service.executor.planner on described topologies."""

from __future__ import annotations

import json

import pytest

from service.executor.planner import (
    InstancePlan,
    Plan,
    PlanError,
    accuracy_plan,
    plan_instances,
)
from service.executor.topology import CpuTopology


def _cpu_sets(plan: Plan) -> list[set[int]]:
    return [set(instance.cpus) for instance in plan.instances]


@pytest.fixture
def small() -> CpuTopology:
    """1 socket x 2 cores, no SMT."""
    return CpuTopology.from_description(1, 2)


@pytest.fixture
def two_socket_smt() -> CpuTopology:
    """2 sockets x 8 cores x 2 threads, 2 NUMA nodes, Linux numbering (siblings are +16)."""
    return CpuTopology.from_description(2, 8, 2)


@pytest.fixture
def holes() -> CpuTopology:
    """1 socket x 12 cores restricted by a cgroup cpuset to {0,2,3,5,8,9}."""
    return CpuTopology.from_description(1, 12, allowed={0, 2, 3, 5, 8, 9})


# -- small machine ----------------------------------------------------------------------------


def test_small_two_instances_of_one_core(small: CpuTopology) -> None:
    """2 instances x 1 core on 1x2 get cpu 0 and cpu 1."""
    plan = plan_instances(small, 2, 1)
    assert _cpu_sets(plan) == [{0}, {1}]
    assert [i.node for i in plan.instances] == [0, 0]
    assert plan.defaults_used == ()


def test_small_defaults_give_one_core_per_instance(small: CpuTopology) -> None:
    """With no sizes given, a node under 8 cores runs one-core instances: 1x2 gives 2 x 1."""
    plan = plan_instances(small, None, None)
    assert _cpu_sets(plan) == [{0}, {1}]
    assert plan.cores_per_instance == 1
    assert plan.defaults_used == ("cores_per_instance", "instances")


def test_small_one_instance_of_two_cores(small: CpuTopology) -> None:
    """1 instance x 2 cores on 1x2 uses both CPUs."""
    assert _cpu_sets(plan_instances(small, 1, 2)) == [{0, 1}]


def test_only_instances_divides_the_cores(small: CpuTopology) -> None:
    """Given only instances, cores_per_instance is total cores // instances."""
    plan = plan_instances(small, 2, None)
    assert plan.cores_per_instance == 1
    assert plan.defaults_used == ("cores_per_instance",)


def test_only_cores_per_instance_fits_as_many_as_possible(small: CpuTopology) -> None:
    """Given only cores_per_instance, instances is as many as fit."""
    plan = plan_instances(small, None, 1)
    assert len(plan.instances) == 2
    assert plan.defaults_used == ("instances",)


# -- 2 sockets x 8 cores x SMT, 2 NUMA nodes ---------------------------------------------------


def test_four_by_four_stays_in_nodes_without_sibling_sharing(two_socket_smt: CpuTopology) -> None:
    """4x4 puts two instances per node on first threads only, so no instance shares a core."""
    plan = plan_instances(two_socket_smt, 4, 4)
    assert _cpu_sets(plan) == [{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}]
    assert [i.node for i in plan.instances] == [0, 0, 1, 1]
    cores = two_socket_smt.physical_cores
    core_of = {cpu: core for core, cpus in cores.items() for cpu in cpus}
    core_sets = [{core_of[cpu] for cpu in i.cpus} for i in plan.instances]
    assert all(a.isdisjoint(b) for n, a in enumerate(core_sets) for b in core_sets[n + 1 :])
    assert not plan.smt


def test_smt_gives_whole_cores_with_siblings(two_socket_smt: CpuTopology) -> None:
    """With smt=True each instance gets its cores' sibling threads too."""
    plan = plan_instances(two_socket_smt, 4, 4, smt=True)
    assert set(plan.instances[0].cpus) == {0, 1, 2, 3, 16, 17, 18, 19}
    assert set(plan.instances[3].cpus) == {12, 13, 14, 15, 28, 29, 30, 31}
    assert all(i.cores == 4 for i in plan.instances)
    assert plan.smt
    assert plan.all_cpus == tuple(range(32))


def test_two_by_eight_is_one_instance_per_node(two_socket_smt: CpuTopology) -> None:
    """2x8 fills node 0 with instance 0 and node 1 with instance 1."""
    plan = plan_instances(two_socket_smt, 2, 8)
    assert _cpu_sets(plan) == [set(range(8)), set(range(8, 16))]
    assert [i.node for i in plan.instances] == [0, 1]


def test_one_by_sixteen_spans_nodes(two_socket_smt: CpuTopology) -> None:
    """An instance bigger than any node spans nodes and has node=None."""
    plan = plan_instances(two_socket_smt, 1, 16)
    assert _cpu_sets(plan) == [set(range(16))]
    assert plan.instances[0].node is None


def test_fill_node_by_node(two_socket_smt: CpuTopology) -> None:
    """Small plans fill node 0 before node 1."""
    plan = plan_instances(two_socket_smt, 2, 4)
    assert [i.node for i in plan.instances] == [0, 0]


def test_defaults_on_two_sockets(two_socket_smt: CpuTopology) -> None:
    """Defaults on 2x8 SMT give 4 instances x 4 physical cores."""
    plan = plan_instances(two_socket_smt, None, None)
    assert (len(plan.instances), plan.cores_per_instance) == (4, 4)


def test_leftover_cores_form_a_spanning_instance() -> None:
    """When nodes have leftovers, an extra instance is built from them across nodes."""
    topo = CpuTopology.from_description(2, 3)  # nodes {0,1,2} and {3,4,5}
    plan = plan_instances(topo, 3, 2)
    assert _cpu_sets(plan) == [{0, 1}, {3, 4}, {2, 5}]
    assert [i.node for i in plan.instances] == [0, 1, None]


# -- cgroup cpuset with holes -----------------------------------------------------------------


def test_holes_two_by_two(holes: CpuTopology) -> None:
    """2x2 on the usable CPUs {0,2,3,5,8,9} takes cores in ascending order."""
    assert _cpu_sets(plan_instances(holes, 2, 2)) == [{0, 2}, {3, 5}]


def test_holes_with_smt_siblings_partly_allowed() -> None:
    """With smt=True a core only brings its usable siblings."""
    topo = CpuTopology.from_description(1, 4, 2, allowed={0, 4, 1, 2, 6})
    plan = plan_instances(topo, 2, 1, smt=True)
    assert _cpu_sets(plan) == [{0, 4}, {1}]


# -- errors -----------------------------------------------------------------------------------


def test_more_instances_than_cores_states_the_numbers(small: CpuTopology) -> None:
    """3 instances x 1 core on 2 cores is a PlanError with the numbers and the cpus."""
    with pytest.raises(PlanError) as error:
        plan_instances(small, 3, 1)
    assert str(error.value) == (
        "asked for 3 instances x 1 core = 3 physical cores, but only 2 are available (cpus 0-1)"
    )


def test_more_instances_than_cores_without_size(small: CpuTopology) -> None:
    """Only instances given and more of them than cores is a PlanError."""
    with pytest.raises(PlanError, match=r"asked for 5 instances .* only 2 are available"):
        plan_instances(small, 5, None)


def test_instance_bigger_than_the_machine(holes: CpuTopology) -> None:
    """Only cores_per_instance given and no instance fits is a PlanError."""
    with pytest.raises(PlanError, match=r"7 physical cores per instance.*cpus 0,2-3,5,8-9"):
        plan_instances(holes, None, 7)


def test_oversubscription_with_smt_mentions_siblings(two_socket_smt: CpuTopology) -> None:
    """The error counts physical cores even when SMT siblings are present."""
    with pytest.raises(PlanError, match=r"= 20 physical cores, but only 16 .*SMT siblings"):
        plan_instances(two_socket_smt, 5, 4, smt=True)


@pytest.mark.parametrize(("instances", "cores"), [(0, 1), (1, 0), (-1, None)])
def test_non_positive_sizes_are_rejected(small: CpuTopology, instances: int, cores: int) -> None:
    """Zero or negative instances or cores_per_instance is a PlanError."""
    with pytest.raises(PlanError, match="at least 1"):
        plan_instances(small, instances, cores)


def test_plan_rejects_overlapping_instances() -> None:
    """A Plan whose instances share a CPU cannot be built."""
    a = InstancePlan(0, (0, 1), 2, 0)
    b = InstancePlan(1, (1, 2), 2, 0)
    with pytest.raises(PlanError, match="cpu 1"):
        Plan((a, b), cores_per_instance=2, smt=False, defaults_used=())


# -- output -----------------------------------------------------------------------------------


def test_to_dict_is_json_ready(two_socket_smt: CpuTopology) -> None:
    """Plan.to_dict() round-trips through JSON and lists each instance's cpus."""
    data = plan_instances(two_socket_smt, 2, 2).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["instances"][1] == {
        "index": 1,
        "cpus": [2, 3],
        "cpu_list": "2-3",
        "cores": 2,
        "node": 0,
    }
    assert data["all_cpus"] == "0-3"


def test_accuracy_uses_the_first_instance(two_socket_smt: CpuTopology) -> None:
    """The accuracy run gets exactly the CPUs of the plan's first instance."""
    plan = plan_instances(two_socket_smt, 4, 4)
    assert accuracy_plan(plan) == plan.instances[0]
