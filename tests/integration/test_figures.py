"""The trust figures of a real two-model run, in the finish event and in result.json."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.figures.stats import percentile_floor

pytestmark = pytest.mark.tensorflow

REPO = Path(__file__).resolve().parents[2]


def test_two_models_report_intervals_costs_fingerprint_and_verdict(
    sample_dir: Path, tmp_path: Path
) -> None:
    request = {
        "id": "figures",
        "workspace_path": str(tmp_path),
        "input_model": {"precision": "fp32", "path": str(sample_dir / "fp32.pb")},
        "optimized_model": {"precision": "fp32", "path": str(sample_dir / "optimized_fp32.pb")},
        "benchmark": {"instances": 1, "duration_s": 1, "min_iterations": 700,
                      "max_duration_s": 20, "warmup": 5, "warmup_s": 0.2},
    }  # fmt: skip
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))

    done = subprocess.run(
        [sys.executable, "-m", "service", "bench", str(path),
         "--allowed-root", str(sample_dir), "--allowed-root", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )  # fmt: skip

    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    finish = events[-1]
    assert finish["status"] == "success", (finish, done.stderr[-2000:])
    data = finish["data"]
    low, high = data["speedup_ci95"]
    assert low <= data["speedup"] <= high
    for role, name in (("input_model", "fp32.pb"), ("optimized_model", "optimized_fp32.pb")):
        step = data["execution_details"][f"{role}_benchmark"]["performance"]
        assert step["latency_samples"] >= 700
        assert step["stop_reason"] == "duration_and_min_iterations"
        low, high = step["throughput_ci95"]
        assert low <= step["throughput_samples_per_s"] <= high
        low, high = step["latency_ms_median_ci95"]
        assert low <= step["latency_ms_median"] == step["latency_ms_p50"] <= high
        by_pct = {p["percentile"]: p for p in step["latency_percentiles"]}
        assert by_pct[99.0]["status"] == "ok" and by_pct[99.0]["value_ms"] == step["latency_ms_p99"]
        assert by_pct[99.0]["min_samples"] == percentile_floor(99) == 662
        if step["latency_samples"] < 6636:
            assert by_pct[99.9]["status"] == "insufficient" and "latency_ms_p999" not in step
        assert step["latency_ms_std"] > 0 and step["latency_iqr_over_median"] >= 0
        model_bytes = (sample_dir / name).read_bytes()
        assert step["costs"]["model_size_bytes"] == len(model_bytes)
        assert step["costs"]["first_inference_s"] > 0 and step["costs"]["peak_rss_bytes_max"] > 0
        assert step["per_instance"][0]["warmup_s"] >= 0.2
        assert step["verdict"]["status"] in ("valid", "invalid")
        print_ = data["fingerprint"]["models"][role]
        assert print_["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    fingerprint = data["fingerprint"]
    assert len(fingerprint["id"]) == 12 and fingerprint["runtime"]["tensorflow_version"]
    assert fingerprint["topology"]["logical_cpus"] >= 1
    assert data["verdict"]["status"] in ("valid", "invalid")
    assert data["verdict"]["thresholds"]["foreign_busy_fraction_invalid"] == 0.1
    progress = [e for e in events if e["subject"] == "benchmark_progress"]
    assert [p["data"]["verdict"]["status"] for p in progress]  # every progress carries one
    assert progress[0]["data"]["fingerprint"]["id"] == fingerprint["id"]
    saved = json.loads((tmp_path / "workloads" / "fp32_figures" / "result.json").read_text())
    assert saved["data"]["speedup_ci95"] == data["speedup_ci95"]
    assert saved["data"]["fingerprint"] == fingerprint
