"""The machine and software a result came from, and a short hash to group results by.

No TensorFlow import: the TensorFlow version, its oneDNN state and the threading variables
come from the runners' results (they imported TensorFlow; the worker never does).

``fingerprint["id"]`` is the first 12 hex digits of the SHA-256 of the canonical JSON of every
field except ``observed`` (host name, current frequencies, model paths, worker commit): two
runs with the same id ran on the same kind of machine, same kernel and software stack, same
threading settings and the same model bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from service import __version__
from service.cpulist import parse_cpu_list

SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")
PROC_CPUINFO = Path("/proc/cpuinfo")
_HASH_CHUNK_BYTES = 1 << 20
ID_HEX_DIGITS = 12
_CPUINFO_KEYS = {
    "model name": "model",
    "vendor_id": "vendor",
    "cpu family": "family",
    "model": "model_number",
    "stepping": "stepping",
    "microcode": "microcode",
}


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# CPU features that choose TensorFlow's and oneDNN's kernels (x86 /proc/cpuinfo names, then
# Arm's): results from different kernel paths never share a fingerprint id.
KERNEL_FEATURES = (
    "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)  # fmt: skip


def read_cpuinfo() -> str:
    return _read(PROC_CPUINFO) or ""


def cpu_flags(cpuinfo_text: str) -> set[str]:
    """The first processor's feature flags (``flags`` on x86, ``Features`` on Arm)."""
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def kernel_features(cpuinfo_text: str) -> list[str]:
    """The :data:`KERNEL_FEATURES` this CPU has, in that order."""
    flags = cpu_flags(cpuinfo_text)
    return [feature for feature in KERNEL_FEATURES if feature in flags]


def _cpu_model(cpuinfo_text: str) -> dict[str, str]:
    """The first processor's identity from ``/proc/cpuinfo``."""
    out: dict[str, str] = {}
    for line in cpuinfo_text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        name = _CPUINFO_KEYS.get(key.strip())
        if name is not None:
            out[name] = value.strip()
    return out


def _topology(sys_cpu: Path = SYS_CPU, sys_node: Path = SYS_NODE) -> dict[str, Any]:
    """Sockets, cores, logical CPUs, SMT and NUMA nodes of the whole machine (online CPUs)."""
    online = _read(sys_cpu / "online")
    cpus = parse_cpu_list(online) if online else sorted(os.sched_getaffinity(0))
    packages: set[str] = set()
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = sys_cpu / f"cpu{cpu}" / "topology"
        package = _read(topology / "physical_package_id") or "0"
        packages.add(package)
        cores.add((package, _read(topology / "core_id") or str(cpu)))
    nodes_text = _read(sys_node / "online")
    smt_active = _read(sys_cpu / "smt" / "active")
    return {
        "sockets": len(packages),
        "physical_cores": len(cores),
        "logical_cpus": len(cpus),
        "threads_per_core": len(cpus) // max(1, len(cores)),
        "smt": smt_active == "1" if smt_active is not None else len(cpus) > len(cores),
        "numa_nodes": len(parse_cpu_list(nodes_text)) if nodes_text else 1,
    }


def _frequency(
    cpus: Iterable[int], sys_cpu: Path = SYS_CPU
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stable, observed) frequency facts of ``cpus``: governors and limits; current values."""
    governors: set[str] = set()
    max_khz: set[int] = set()
    current: dict[str, int] = {}
    for cpu in cpus:
        freq = sys_cpu / f"cpu{cpu}" / "cpufreq"
        governor = _read(freq / "scaling_governor")
        if governor:
            governors.add(governor)
        limit = _read(freq / "cpuinfo_max_freq")
        if limit and limit.isdigit():
            max_khz.add(int(limit))
        now = _read(freq / "scaling_cur_freq")
        if now and now.isdigit():
            current[str(cpu)] = int(now)
    boost = next(
        (f"{name}={value}" for name in ("cpufreq/boost", "intel_pstate/no_turbo")
         if (value := _read(sys_cpu / name)) is not None),
        None,
    )  # fmt: skip
    stable = {
        "governors": sorted(governors),
        "max_khz": sorted(max_khz),
        "boost_setting": boost,
    }
    return stable, {"cur_khz": current}


def _libc() -> str:
    name, version = platform.libc_ver()
    return f"{name} {version}".strip()


def machine_facts(cpus: Iterable[int]) -> dict[str, Any]:
    """What the worker reads about the machine and the ``cpus`` its runners use."""
    cpu_list = sorted(set(cpus))
    frequency, observed = _frequency(cpu_list)
    cpuinfo = read_cpuinfo()
    return {
        "cpu": {**_cpu_model(cpuinfo), "features": kernel_features(cpuinfo)},
        "topology": _topology(),
        "frequency": frequency,
        "os": {
            "kernel": platform.release(),
            "machine": platform.machine(),
            "libc": _libc(),
        },
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "worker_version": __version__,
        "observed": {
            "hostname": socket.gethostname(),
            "runner_cpus": cpu_list,
            **observed,
            "worker_commit": _git_commit(),
        },
    }


def _git_commit(start: Path | None = None) -> str | None:
    """The commit of the worker's checkout, read from ``.git`` without running git."""
    start = start or Path(__file__).resolve().parent
    for directory in (start, *start.parents):
        head = _read(directory / ".git" / "HEAD")
        if head is None:
            continue
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        return _read(directory / ".git" / ref) or _packed_ref(directory / ".git", ref)
    return None


def _packed_ref(git_dir: Path, ref: str) -> str | None:
    for line in (_read(git_dir / "packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    return None


def hash_path(path: Path) -> dict[str, Any]:
    """SHA-256 and size of a model: a file, or a directory (SavedModel) as all its files.

    A directory's digest runs over its regular files sorted by relative path, each contributing
    its relative path, a NUL, its length, a NUL and its bytes, so renames and moves count.
    """
    files = _model_files(path)
    digest = hashlib.sha256()
    if path.is_file():
        size = _feed(digest, path)
        return {"sha256": digest.hexdigest(), "size_bytes": size, "files": len(files)}
    size = 0
    for relative, file in files:
        digest.update(relative.encode() + b"\0" + str(file.stat().st_size).encode() + b"\0")
        size += _feed(digest, file)
    return {"sha256": digest.hexdigest(), "size_bytes": size, "files": len(files)}


def _model_files(path: Path) -> list[tuple[str, Path]]:
    """A model's regular files with their relative paths, sorted (a file: itself)."""
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if path.is_file():
        return [(path.name, path)]
    return sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())


def _feed(digest: Any, path: Path) -> int:
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size


async def hash_models(
    paths: Mapping[str, str], known_sha256: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{role: {sha256, size_bytes, files, path}}``, in a thread (models can be big).

    A role in ``known_sha256`` (hashed earlier in the same request) is not read again: only
    its size and file count are taken from the file system."""
    known = known_sha256 or {}

    def hash_all() -> dict[str, dict[str, Any]]:
        out = {}
        for role, raw in paths.items():
            try:
                facts = _sized(Path(raw), known[role]) if role in known else hash_path(Path(raw))
                out[role] = {**facts, "path": raw}
            except OSError as exc:
                out[role] = {"sha256": None, "error": exc.strerror, "path": raw}
        return out

    return await asyncio.to_thread(hash_all)


def _sized(path: Path, sha256: str) -> dict[str, Any]:
    """:func:`hash_path`'s answer for a model whose digest is known: sizes from ``stat``."""
    files = _model_files(path)
    size = sum(file.stat().st_size for _, file in files)
    return {"sha256": sha256, "size_bytes": size, "files": len(files)}


def runner_facts(details: Mapping[str, Any]) -> dict[str, Any]:
    """TensorFlow and threading facts a runner reported, from a step's details."""
    environment = details.get("thread_environment") or {}
    return {
        "tensorflow_version": details.get("tensorflow_version"),
        "onednn_enabled": details.get("onednn_enabled"),
        "onednn_effective": (details.get("onednn") or {}).get("effective"),
        "TF_ENABLE_ONEDNN_OPTS": environment.get("TF_ENABLE_ONEDNN_OPTS", "unset (default)"),
        "thread_environment": environment,
    }


def workload_facts(
    first_step: Mapping[str, Any] | None, dataset: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What was fed: the first step's concrete input shapes (every performance step of a
    request feeds the same batch and sample shape) and the dataset's hash. A dynamic-shape
    model runs at another speed on other shapes, so they belong in the id; taking the first
    step keeps the id the same from the first progress event to the finish."""
    return {
        "fed_shapes": None if first_step is None else first_step.get("fed_shapes"),
        "dataset": None
        if dataset is None
        else {key: dataset.get(key) for key in ("sha256", "size_bytes")},
    }


def build(
    machine: Mapping[str, Any],
    models: Mapping[str, Mapping[str, Any]],
    runner: Mapping[str, Any] | None,
    workload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fingerprint with its ``id``; ``observed`` facts are reported but not hashed."""
    observed = {
        **machine.get("observed", {}),
        "model_paths": {role: info.get("path") for role, info in models.items()},
    }
    body = {
        **{key: value for key, value in machine.items() if key != "observed"},
        "runtime": dict(runner) if runner else None,
        "workload": dict(workload) if workload else None,
        "models": {
            role: {key: info.get(key) for key in ("sha256", "size_bytes", "files")}
            for role, info in models.items()
        },
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    fingerprint_id = hashlib.sha256(canonical.encode()).hexdigest()[:ID_HEX_DIGITS]
    return {"id": fingerprint_id, **body, "observed": observed}
