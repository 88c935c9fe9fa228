"""The fingerprint: model hashes (files and SavedModel directories), machine facts, the id."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from service.figures import fingerprint


def test_a_file_hash_is_its_sha256(tmp_path: Path) -> None:
    model = tmp_path / "model.pb"
    model.write_bytes(b"x" * (3 * 1024 * 1024 + 5))  # more than one read chunk

    info = fingerprint.hash_path(model)

    assert info == {
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "size_bytes": 3 * 1024 * 1024 + 5,
        "files": 1,
    }


def make_saved_model(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_a_directory_hash_covers_names_and_bytes_in_path_order(tmp_path: Path) -> None:
    files = {"saved_model.pb": b"graph", "variables/variables.index": b"i", "a/b": b"w"}
    first = fingerprint.hash_path(make_saved_model(tmp_path / "one", files))
    # same files created in another order: same digest
    again = fingerprint.hash_path(make_saved_model(tmp_path / "two", dict(reversed(files.items()))))
    renamed = fingerprint.hash_path(
        make_saved_model(tmp_path / "three", {**files, "a/b": b"", "a/c": b"w"})
    )
    changed = fingerprint.hash_path(make_saved_model(tmp_path / "four", {**files, "a/b": b"W"}))

    assert first["files"] == 3 and first["size_bytes"] == len(b"graphiw")
    assert again["sha256"] == first["sha256"]
    assert renamed["sha256"] != first["sha256"]
    assert changed["sha256"] != first["sha256"]


def test_hash_models_reports_a_missing_model_instead_of_failing(tmp_path: Path) -> None:
    model = tmp_path / "m.pb"
    model.write_bytes(b"abc")

    hashes = asyncio.run(
        fingerprint.hash_models({"input_model": str(model), "optimized_model": str(tmp_path / "x")})
    )

    assert hashes["input_model"]["sha256"] == hashlib.sha256(b"abc").hexdigest()
    assert hashes["optimized_model"]["sha256"] is None


def test_a_model_hashed_earlier_in_the_request_is_not_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker hashes the models for the result store; the sign-off takes those digests and
    reads only the sizes (a model of gigabytes is read once per request, not twice)."""
    files = {"saved_model.pb": b"graph", "variables/v.data": b"weights"}
    model = make_saved_model(tmp_path / "saved", files)
    fresh = fingerprint.hash_path(model)
    monkeypatch.setattr(fingerprint, "_feed", lambda *_: pytest.fail("the model was read again"))

    facts = asyncio.run(
        fingerprint.hash_models({"input_model": str(model)}, {"input_model": fresh["sha256"]})
    )

    assert {k: facts["input_model"][k] for k in fresh} == fresh


def test_topology_from_a_described_sysfs(tmp_path: Path) -> None:
    """2 sockets x 2 cores x 2 threads, 2 NUMA nodes, written as Linux lays sysfs out."""
    cpu_root, node_root = tmp_path / "cpu", tmp_path / "node"
    (cpu_root / "smt").mkdir(parents=True)
    (cpu_root / "online").write_text("0-7\n")
    (cpu_root / "smt" / "active").write_text("1\n")
    for cpu in range(8):
        topology = cpu_root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(str(cpu % 4 // 2))  # 4-7: siblings
        (topology / "core_id").write_text(str(cpu % 2))
    node_root.mkdir()
    (node_root / "online").write_text("0-1\n")

    facts = fingerprint._topology(cpu_root, node_root)

    assert facts == {"sockets": 2, "physical_cores": 4, "logical_cpus": 8,
                     "threads_per_core": 2, "smt": True, "numa_nodes": 2}  # fmt: skip


def test_frequency_reads_governor_and_limits(tmp_path: Path) -> None:
    for cpu, governor in ((0, "performance"), (1, "powersave")):
        freq = tmp_path / f"cpu{cpu}" / "cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text(governor)
        (freq / "cpuinfo_max_freq").write_text("3500000")
        (freq / "scaling_cur_freq").write_text(str(1200000 + cpu))

    stable, observed = fingerprint._frequency([0, 1], tmp_path)

    assert stable["governors"] == ["performance", "powersave"]
    assert stable["max_khz"] == [3500000]
    assert observed == {"cur_khz": {"0": 1200000, "1": 1200001}}


def test_machine_facts_of_this_machine() -> None:
    facts = fingerprint.machine_facts([0])

    assert facts["topology"]["logical_cpus"] >= 1 and facts["os"]["kernel"]
    assert facts["python"].split()[0] in {"CPython", "PyPy"}
    assert facts["worker_version"]


def test_the_id_groups_runs_by_what_matters_not_by_what_varies() -> None:
    machine = fingerprint.machine_facts([0])
    models = {"input_model": {"sha256": "ab" * 32, "size_bytes": 10, "files": 1, "path": "/a"}}
    runtime = {"tensorflow_version": "2.21.0", "thread_environment": {"OMP_NUM_THREADS": "1"}}

    base = fingerprint.build(machine, models, runtime)
    elsewhere = fingerprint.build(
        {**machine, "observed": {"hostname": "other", "cur_khz": {"0": 1}}},
        {"input_model": {**models["input_model"], "path": "/b"}},
        runtime,
    )
    other_model = fingerprint.build(
        machine, {"input_model": {**models["input_model"], "sha256": "cd" * 32}}, runtime
    )
    other_threads = fingerprint.build(
        machine, models, {**runtime, "thread_environment": {"OMP_NUM_THREADS": "2"}}
    )

    assert len(base["id"]) == fingerprint.ID_HEX_DIGITS
    assert elsewhere["id"] == base["id"]
    assert other_model["id"] != base["id"] and other_threads["id"] != base["id"]
    assert base["observed"]["model_paths"] == {"input_model": "/a"}


def test_runner_facts_default_onednn_opts_to_unset() -> None:
    facts = fingerprint.runner_facts(
        {"tensorflow_version": "2.21.0", "onednn_enabled": True, "thread_environment": {}}
    )
    assert facts["TF_ENABLE_ONEDNN_OPTS"] == "unset (default)" and facts["onednn_enabled"]


def test_the_id_differs_between_onednn_on_and_off_and_between_kernel_features() -> None:
    machine = fingerprint.machine_facts([0])
    models = {"input_model": {"sha256": "ab" * 32, "size_bytes": 10, "files": 1, "path": "/a"}}

    def step(effective: str) -> dict:
        value = "1" if effective == "on" else "0"
        return {
            "tensorflow_version": "2.21.0",
            "onednn_enabled": effective == "on",
            "onednn": {"effective": effective},
            "thread_environment": {"TF_ENABLE_ONEDNN_OPTS": value},
        }

    on = fingerprint.build(machine, models, fingerprint.runner_facts(step("on")))
    off = fingerprint.build(machine, models, fingerprint.runner_facts(step("off")))
    cpu = machine["cpu"]
    other_cpu = {**machine, "cpu": {**cpu, "features": [*cpu["features"], "amx_tile"]}}
    amx = fingerprint.build(other_cpu, models, fingerprint.runner_facts(step("on")))

    assert on["runtime"]["onednn_effective"] == "on" and off["runtime"]["onednn_effective"] == "off"
    assert on["id"] != off["id"]
    assert amx["id"] != on["id"]
    assert set(cpu["features"]) <= set(fingerprint.KERNEL_FEATURES)


def test_the_id_differs_with_the_shapes_fed_and_the_dataset() -> None:
    machine = fingerprint.machine_facts([0])
    models = {"input_model": {"sha256": "ab" * 32, "size_bytes": 10, "files": 1, "path": "/a"}}
    dataset = {"sha256": "cd" * 32, "size_bytes": 5, "path": "/d.npz"}

    def built(shape: list[int], data: dict | None) -> dict:
        step = {"fed_shapes": [shape]}
        return fingerprint.build(machine, models, None, fingerprint.workload_facts(step, data))

    small, large = built([1, 128, 128, 3], dataset), built([1, 224, 224, 3], dataset)
    other_data = built([1, 128, 128, 3], {**dataset, "sha256": "ef" * 32})

    assert small["workload"]["fed_shapes"] == [[1, 128, 128, 3]]
    assert small["workload"]["dataset"] == {"sha256": "cd" * 32, "size_bytes": 5}
    assert len({small["id"], large["id"], other_data["id"]}) == 3
