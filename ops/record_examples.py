"""Record the AsyncAPI examples from a real run, instead of writing them by hand.

    .venv/bin/python ops/record_examples.py [--samples DIR]
    .venv/bin/benchmark-worker schema contracts/schemas    # then regenerate the documents

Runs the seed's request (fp32 with ``mods: [benchmark, accuracy]``, its INC int8 model for
performance, no dataset named: it is found beside the model) with ``benchmark-worker bench``
on the sample models, and a request for a missing model (an error finish). Writes
``contracts/schemas/examples/recorded_run.json``: every event as recorded, with local paths
replaced by the seed page's placeholders and each step reduced to the seed's fields and the
headline figures (the values are the run's own; bulky detail such as per-instance CPU windows
is left out so the document stays readable).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "contracts" / "schemas" / "examples" / "recorded_run.json"
MODELS, WORKSPACE = "/models", "/path/to/workspace"  # the seed page's placeholders

STEP_KEYS = (
    "instances", "cores_per_instance", "model_path", "precision", "mode", "batch_size",
    "framework", "config_path", "benchmark_script", "command", "cpus", "model_format",
    "throughput_samples_per_s", "throughput_ci95", "latency_ms", "latency_ms_mean",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "window_s", "stop_reason",
    "accuracy", "samples", "metric", "fed_shapes", "onednn_enabled",
)  # fmt: skip
TOP_KEYS = (
    "id", "message", "step", "run_id", "attempt", "node", "progress", "current_step",
    "number_of_steps", "perf_throughput_input_model", "perf_throughput_optimized_model",
    "perf_latency_input_model", "perf_latency_optimized_model", "acc_input_model",
    "acc_optimized_model", "speedup", "speedup_ci95", "accuracy_delta", "dataset",
)  # fmt: skip


def bench(request: dict[str, Any], samples: Path, workspace: Path) -> list[dict[str, Any]]:
    path = workspace / "request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run(
        [sys.executable, "-m", "service", "bench", str(path), "--allowed-root", str(samples),
         "--allowed-root", str(workspace), "--workspace", str(workspace)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def project(event: dict[str, Any]) -> dict[str, Any]:
    data = {key: event["data"][key] for key in TOP_KEYS if key in event["data"]}
    details = event["data"].get("execution_details")
    if details is not None:
        data["execution_details"] = {
            model: {
                mode: {key: step[key] for key in STEP_KEYS if key in step}
                | {"verdict": {"status": step["verdict"]["status"]}}
                for mode, step in modes.items()
            }
            for model, modes in details.items()
        }
    if "fingerprint" in event["data"]:
        data["fingerprint"] = {"id": event["data"]["fingerprint"]["id"]}
    if "verdict" in event["data"]:
        data["verdict"] = {"status": event["data"]["verdict"]["status"]}
    return {"subject": event["subject"], "status": event["status"], "data": data}


def placeholders(value: Any, replace: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in replace.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [placeholders(v, replace) for v in value]
    if isinstance(value, dict):
        return {k: placeholders(v, replace) for k, v in value.items()}
    return value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="record-examples-"))
    samples = args.samples or work / "models"
    if args.samples is None:
        subprocess.run([sys.executable, "-m", "service", "sample-models", str(samples)],
                       check=True, cwd=REPO, capture_output=True)  # fmt: skip
    workspace = work / "workspace"
    workspace.mkdir()
    request = {
        "id": "configuration_id",
        "workspace_path": str(workspace),
        "input_model": {"precision": "fp32", "path": f"{samples}/fp32.pb",
                        "mods": ["benchmark", "accuracy"]},
        "optimized_model": {"precision": "int8", "path": f"{samples}/int8.pb"},
        "benchmark": {"duration_s": 2},
    }  # fmt: skip
    events = bench(request, samples, workspace)
    missing = {**request, "id": "configuration_id",
               "input_model": {"precision": "fp32", "path": f"{samples}/missing.pb"}}  # fmt: skip
    error = bench(missing, samples, workspace)[-1]
    if events[-1]["status"] != "success" or error["status"] != "error":
        print(f"the recorded run did not go as expected: {events[-1]} / {error}", file=sys.stderr)
        return 1
    replace = {str(samples.resolve()): MODELS, str(samples): MODELS,
               str(workspace.resolve()): WORKSPACE, str(workspace): WORKSPACE,
               sys.executable: "python", str(REPO): "/opt/benchmark-worker"}  # fmt: skip
    recorded = placeholders(
        {
            "request": request,
            "start": project(events[0]),
            "progress": [project(e) for e in events if e["subject"] == "benchmark_progress"],
            "finish": project(events[-1]),
            "error": project(error),
        },
        replace,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(recorded, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)}: {len(events)} events and an error finish")
    return 0


if __name__ == "__main__":
    sys.exit(main())
