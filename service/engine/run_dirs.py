"""One directory per run, and a stable path that points at the latest.

``<workspace>/workloads/<model_name>_<id>`` (the spec's path) is a symbolic link to
``<model_name>_<id>.runs/<run_id>``, switched atomically when a run starts. Each run writes only
into its own directory, so two runs of one workload id on a shared workspace (two workers, a
fixed sample id, a redelivery while the first run still ends) never delete or mix each other's
files. Runs that finished (``result.json``) beyond the newest ``keep`` are pruned; a run that is
still going (no ``result.json``) is never touched. A real directory left at the stable path by
an older worker is moved into the runs as ``legacy-<mtime>``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

import structlog

log = structlog.get_logger()

RUNS_SUFFIX = ".runs"
RESULT_FILE = "result.json"


def runs_root(stable: Path) -> Path:
    """Where the runs of a workload live: beside the stable path, ``<name>.runs``."""
    return stable.with_name(stable.name + RUNS_SUFFIX)


def run_directories(stable: Path) -> list[Path]:
    """Every run directory of a workload, oldest first (by modification time)."""
    try:
        runs = [p for p in runs_root(stable).iterdir() if p.is_dir()]
    except OSError:
        return []
    return sorted(runs, key=_mtime)


def create_run_directory(stable: Path, run_id: str, keep: int) -> Path:
    """A new, empty directory for ``run_id``; the stable path points at it from now on."""
    directory = runs_root(stable) / run_id
    directory.mkdir(parents=True)  # run ids are unique: an existing one is an error
    _adopt_legacy(stable)
    point_latest(stable, directory)
    prune(stable, keep)
    return directory


def point_latest(stable: Path, directory: Path) -> None:
    """Make ``stable`` a link to ``directory`` in one rename (readers never see it missing)."""
    link = stable.with_name(f".{stable.name}.{uuid.uuid4().hex[:8]}.link")
    os.symlink(os.path.relpath(directory, stable.parent), link)
    try:
        os.replace(link, stable)
    except OSError:
        with contextlib.suppress(OSError):
            link.unlink()
        raise


def prune(stable: Path, keep: int) -> list[Path]:
    """Remove finished runs beyond the newest ``keep`` (never the latest, never a live one)."""
    latest = _latest_target(stable)
    finished = [p for p in run_directories(stable) if (p / RESULT_FILE).is_file()]
    removed = []
    for directory in finished[: max(0, len(finished) - keep)]:
        if latest is not None and directory.resolve() == latest:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    if removed:
        log.info("runs_pruned", workload=stable.name, removed=len(removed), kept=keep)
    return removed


def _latest_target(stable: Path) -> Path | None:
    with contextlib.suppress(OSError):
        if stable.is_symlink():
            return stable.resolve()
    return None


def _adopt_legacy(stable: Path) -> None:
    """A real directory at the stable path (an older worker's layout) becomes a run."""
    if stable.is_symlink() or not stable.is_dir():
        return
    target = runs_root(stable) / f"legacy-{int(_mtime(stable))}-{uuid.uuid4().hex[:6]}"
    with contextlib.suppress(FileNotFoundError):  # another worker adopted it first
        stable.rename(target)
        log.info("legacy_workload_directory_moved", directory=str(stable), to=str(target))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
