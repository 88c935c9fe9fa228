"""Helpers shared by the benchmark scripts: sample models, bare loops, worker bench runs."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BARE_LOOP = Path(__file__).with_name("bare_loop.py")


def sample_models(directory: Path | None) -> Path:
    """The sample models in ``directory``, made there (or in a temporary directory) if missing."""
    directory = directory or Path(tempfile.mkdtemp(prefix="perf-samples-"))
    if not (directory / "request.json").exists():
        subprocess.run(
            [sys.executable, "-m", "service", "sample-models", str(directory)],
            check=True,
            capture_output=True,
            cwd=REPO,
        )
    return directory


def pinned_sample_model(samples: Path, cpu: int, batch_size: int) -> tuple[Any, list[Any]]:
    """The sample fp32 graph loaded in this process as a runner loads it: pinned to ``cpu``
    before TensorFlow starts, one thread, warmed up; the model and its synthetic inputs."""
    from service.runner.pinning import pin_process
    from service.runner.protocol import RunnerModel

    pin_process([cpu])  # before TensorFlow starts its thread pools, as the runner does
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from service.runner import performance
    from service.runner.loading import load_model

    model = load_model(
        RunnerModel(path=str(samples / "fp32.pb"), precision="fp32", format="frozen_pb"),
        cpu_count=1,
    )
    feeds = performance.synthetic_inputs(model.inputs, batch_size)
    performance.warm_up(model, feeds, 200, 1.0)
    return model, feeds


def bare_loops(model: Path, cpus: list[int], batch_size: int, duration_s: float) -> list[float]:
    """Run one bare loop per CPU, started together after all have warmed up; throughputs."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(BARE_LOOP),
                str(model),
                "--cpu",
                str(cpu),
                "--batch-size",
                str(batch_size),
                "--duration-s",
                str(duration_s),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for cpu in cpus
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=duration_s + 120)
        results.append(json.loads(out.strip().splitlines()[-1])["throughput_samples_per_s"])
    return results


def worker_bench(
    samples: Path,
    benchmark: dict[str, Any],
    model: str = "fp32.pb",
    optimized: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Performance of ``model`` (and of ``optimized``: (file, precision)) through
    ``benchmark-worker bench``; its finish data."""
    workspace = Path(tempfile.mkdtemp(prefix="perf-ws-"))
    request: dict[str, Any] = {
        "id": f"perf-{uuid.uuid4().hex[:8]}",
        "workspace_path": str(workspace),
        "input_model": {"precision": "fp32", "path": str(samples / model), "mods": ["performance"]},
        "benchmark": benchmark,
    }
    if optimized is not None:
        request["optimized_model"] = {
            "precision": optimized[1],
            "path": str(samples / optimized[0]),
            "mods": ["performance"],
        }
    path = workspace / "request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "bench",
            str(path),
            "--allowed-root",
            str(samples),
            "--allowed-root",
            str(workspace),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    finish = json.loads(done.stdout.strip().splitlines()[-1])
    if finish["status"] != "success":
        raise RuntimeError(f"bench failed: {finish['data']}")
    return finish["data"]


def median_ratio(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(a / b for a, b in pairs)
