"""Where the time of one request goes: measurement versus set-up.

    .venv/bin/python ops/perf/breakdown.py [--samples DIR]

Runs the sample request (2 models x performance + accuracy, the sample's own settings) through
``benchmark-worker bench`` and splits its wall time into: timed measurement windows, model
loading (inside the runners), and the rest (process start, Python and TensorFlow import,
first inference, warmup, the accuracy pass, orchestration). Also times a bare
``import tensorflow`` for scale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.perf._common import REPO, sample_models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=Path, default=None)
    args = parser.parse_args()
    samples = sample_models(args.samples)
    workspace = Path(tempfile.mkdtemp(prefix="perf-breakdown-"))
    request = json.loads((samples / "request.json").read_text())
    request["workspace_path"] = str(workspace)
    path = workspace / "request.json"
    path.write_text(json.dumps(request))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "service", "bench", str(path),
         "--allowed-root", str(samples), "--allowed-root", str(workspace)],
        capture_output=True, text=True, cwd=REPO, check=True,
    )  # fmt: skip
    total_s = time.monotonic() - started
    finish = json.loads(done.stdout.strip().splitlines()[-1])["data"]
    rows = []
    for role, modes in finish["execution_details"].items():
        for mode, step in modes.items():
            instances = step.get("per_instance") or [step]
            load_s = max(i.get("load_time_s") or 0.0 for i in instances)
            rows.append((f"{role}/{mode}", step["step_wall_s"], step.get("window_s", 0.0), load_s))
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import tensorflow"], check=True, capture_output=True)
    import_s = time.monotonic() - started
    print(f"{'step':34} {'wall s':>8} {'measured s':>11} {'model load s':>13}")
    for name, wall_s, window_s, load_s in rows:
        print(f"{name:34} {wall_s:8.2f} {window_s:11.2f} {load_s:13.2f}")
    measured_s = sum(r[2] for r in rows)
    load_s = sum(r[3] for r in rows)
    print(f"total wall time of the request: {total_s:.2f} s (bench process included)")
    print(f"timed measurement windows:      {measured_s:.2f} s ({measured_s / total_s:.0%})")
    print(f"model loading in the runners:   {load_s:.2f} s ({load_s / total_s:.0%})")
    rest_s = total_s - measured_s - load_s
    print(f"everything else:                {rest_s:.2f} s ({rest_s / total_s:.0%})")
    print(f"  for scale, one bare 'import tensorflow' takes {import_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
