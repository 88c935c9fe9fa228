"""Unit tests for service.executor.topology (described machines, fake sysfs, this machine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from service.executor.topology import CpuTopology, LogicalCpu, TopologyError

# -- described machines ---------------------------------------------------------------------


def test_linux_numbering_puts_siblings_after_all_first_threads() -> None:
    """2 sockets x 8 cores x 2 threads numbers first threads 0-15 and their siblings 16-31."""
    topo = CpuTopology.from_description(2, 8, 2)
    assert topo.cpu_ids == tuple(range(32))
    assert topo.physical_cores[0] == (0, 16)
    assert topo.physical_cores[15] == (15, 31)
    assert len(topo.physical_cores) == 16
    assert topo.sockets == (0, 1)
    assert topo.nodes == (0, 1)
    assert topo.smt
    assert topo.cores_by_node() == {0: tuple(range(8)), 1: tuple(range(8, 16))}


def test_adjacent_numbering_puts_siblings_next_to_each_other() -> None:
    """With adjacent numbering cpus 0 and 1 are the two threads of core 0."""
    topo = CpuTopology.from_description(1, 4, 2, numbering="adjacent")
    assert topo.physical_cores == {0: (0, 1), 2: (2, 3), 4: (4, 5), 6: (6, 7)}


def test_numa_nodes_can_split_a_socket() -> None:
    """Sub-NUMA clustering: 1 socket x 8 cores in 2 nodes gives 4 cores per node."""
    topo = CpuTopology.from_description(1, 8, numa_nodes=2)
    assert topo.cores_by_node() == {0: (0, 1, 2, 3), 1: (4, 5, 6, 7)}
    assert topo.sockets == (0,)


def test_numa_nodes_can_group_sockets() -> None:
    """One NUMA node over 2 sockets puts every core in node 0."""
    topo = CpuTopology.from_description(2, 2, numa_nodes=1)
    assert topo.nodes == (0,)
    assert topo.sockets == (0, 1)


def test_uneven_numa_split_is_an_error() -> None:
    """3 NUMA nodes cannot evenly split 1 socket x 8 cores."""
    with pytest.raises(TopologyError, match="3 NUMA nodes"):
        CpuTopology.from_description(1, 8, numa_nodes=3)


def test_non_positive_sizes_are_an_error() -> None:
    """A described machine needs at least one socket, core and thread."""
    with pytest.raises(TopologyError, match="cores_per_socket"):
        CpuTopology.from_description(1, 0)


def test_allowed_keeps_only_those_cpus() -> None:
    """`allowed` restricts a described machine like a cgroup cpuset with holes."""
    topo = CpuTopology.from_description(1, 4, 2, allowed={0, 1, 5})
    assert topo.cpu_ids == (0, 1, 5)
    assert topo.physical_cores == {0: (0,), 1: (1, 5)}
    assert topo.smt


def test_allowed_cpu_outside_the_machine_is_an_error() -> None:
    """An allowed CPU the described machine does not have is named in the error."""
    with pytest.raises(TopologyError, match="64"):
        CpuTopology.from_description(1, 4, allowed={0, 64})


def test_topology_sorts_cpus_and_rejects_duplicates() -> None:
    """CPUs are kept sorted by id and a duplicate id is an error."""
    topo = CpuTopology((LogicalCpu(3, 3, 0, 0), LogicalCpu(1, 1, 0, 0)))
    assert topo.cpu_ids == (1, 3)
    with pytest.raises(TopologyError, match="duplicate"):
        CpuTopology((LogicalCpu(1, 1, 0, 0), LogicalCpu(1, 1, 0, 0)))


def test_a_core_cannot_span_nodes() -> None:
    """Two siblings of one core in different NUMA nodes is an inconsistent topology."""
    with pytest.raises(TopologyError, match="core 0"):
        CpuTopology((LogicalCpu(0, 0, 0, 0), LogicalCpu(1, 0, 0, 1)))


def test_empty_topology_is_an_error() -> None:
    """A topology needs at least one usable CPU."""
    with pytest.raises(TopologyError, match="no usable"):
        CpuTopology(())


def test_to_dict_is_json_ready() -> None:
    """to_dict() serialises to JSON and summarises cpus, cores and nodes."""
    data = CpuTopology.from_description(2, 2, 2).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["cpus"] == "0-7"
    assert data["physical_core_count"] == 4
    assert data["nodes"] == {"0": "0-1,4-5", "1": "2-3,6-7"}
    assert data["cores"][0] == {"core": 0, "cpus": [0, 4], "socket": 0, "node": 0}


# -- fake sysfs -------------------------------------------------------------------------------


def _write_sysfs(root: Path, cpus: dict[int, tuple[int, int, str]], nodes: dict[int, str]) -> None:
    """cpus: cpu -> (package, core_id, thread_siblings_list); nodes: node -> cpulist."""
    for cpu, (package, core_id, siblings) in cpus.items():
        topo = root / "cpu" / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core_id}\n")
        (topo / "thread_siblings_list").write_text(f"{siblings}\n")
    for node, cpulist in nodes.items():
        node_dir = root / "node" / f"node{node}"
        node_dir.mkdir(parents=True)
        (node_dir / "cpulist").write_text(f"{cpulist}\n")


@pytest.fixture
def two_socket_sysfs(tmp_path: Path) -> Path:
    """2 packages x 2 cores x 2 threads, Linux numbering, one NUMA node per package.

    core_id restarts at 0 in each package, so cores are told apart by (package, core_id).
    """
    cpus = {
        0: (0, 0, "0,4"),
        1: (0, 1, "1,5"),
        2: (1, 0, "2,6"),
        3: (1, 1, "3,7"),
        4: (0, 0, "0,4"),
        5: (0, 1, "1,5"),
        6: (1, 0, "2,6"),
        7: (1, 1, "3,7"),
    }
    _write_sysfs(tmp_path, cpus, {0: "0-1,4-5", 1: "2-3,6-7"})
    return tmp_path


def test_sysfs_cores_are_identified_by_package_and_core_id(two_socket_sysfs: Path) -> None:
    """Equal core_ids in different packages are different physical cores."""
    topo = CpuTopology.from_system(sysfs_root=two_socket_sysfs, affinity=range(8))
    assert topo.physical_cores == {0: (0, 4), 1: (1, 5), 2: (2, 6), 3: (3, 7)}
    assert topo.sockets == (0, 1)
    assert topo.cores_by_node() == {0: (0, 1), 1: (2, 3)}
    assert topo.smt


def test_sysfs_core_ids_do_not_depend_on_affinity(two_socket_sysfs: Path) -> None:
    """A core keeps its machine-wide id (lowest sibling) when only a higher sibling is usable."""
    topo = CpuTopology.from_system(sysfs_root=two_socket_sysfs, affinity={5, 6, 7})
    assert topo.physical_cores == {1: (5,), 2: (6,), 3: (7,)}
    assert not topo.smt


def test_sysfs_allowed_narrows_the_affinity(two_socket_sysfs: Path) -> None:
    """`allowed` (the worker's --cpus) is intersected with the process affinity."""
    topo = CpuTopology.from_system([0, 2], sysfs_root=two_socket_sysfs, affinity=range(8))
    assert topo.cpu_ids == (0, 2)
    assert topo.nodes == (0, 1)


def test_sysfs_allowed_cpu_outside_the_affinity_is_an_error(two_socket_sysfs: Path) -> None:
    """An allowed CPU the process may not use (cgroup/taskset) is named in the error."""
    with pytest.raises(TopologyError, match=r"include 3\b"):
        CpuTopology.from_system([0, 3], sysfs_root=two_socket_sysfs, affinity={0, 1, 2})


def test_missing_sysfs_files_fall_back_to_one_core_per_cpu(tmp_path: Path) -> None:
    """Without topology or node files each CPU is its own core on socket 0, node 0."""
    topo = CpuTopology.from_system(sysfs_root=tmp_path, affinity={0, 1, 2})
    assert topo.cpus == tuple(LogicalCpu(cpu, cpu, 0, 0) for cpu in (0, 1, 2))


# -- this machine -----------------------------------------------------------------------------


def _affinity() -> set[int]:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("os.sched_getaffinity is Linux-only")
    return set(os.sched_getaffinity(0))


def test_from_system_matches_the_process_affinity() -> None:
    """from_system() on this machine lists exactly the CPUs in os.sched_getaffinity(0)."""
    affinity = _affinity()
    topo = CpuTopology.from_system()
    assert topo.cpu_ids == tuple(sorted(affinity))
    assert 1 <= len(topo.physical_cores) <= len(affinity)
    assert topo.sockets and topo.nodes


def test_from_system_allowed_subset() -> None:
    """from_system(allowed=...) keeps only the allowed CPUs."""
    first = min(_affinity())
    assert CpuTopology.from_system(allowed=[first]).cpu_ids == (first,)


def test_from_system_rejects_a_cpu_the_process_may_not_use() -> None:
    """from_system(allowed=[999]) fails naming CPU 999."""
    _affinity()
    with pytest.raises(TopologyError, match="999"):
        CpuTopology.from_system(allowed=[999])
