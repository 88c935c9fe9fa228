"""A side-by-side text summary of a finish event: input model versus optimized model.

``python -m service.summary EVENTS.jsonl`` prints the table for the last finish in the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from contracts import FinishEvent, parse_event

ROWS = (
    ("throughput (samples/s)", "perf_throughput_{role}", "{:,.1f}"),
    ("latency mean (ms)", "perf_latency_{role}", "{:.3f}"),
    ("accuracy", "acc_{role}", "{:.4f}"),
)


def summary_table(finish: FinishEvent) -> str:
    data = finish.data.model_dump()
    if finish.status != "success":
        return f"FAILED at {data.get('step')}: {data.get('message')}"
    lines = [f"{'':24} {'input model':>14} {'optimized':>14}"]
    for label, key, fmt in ROWS:
        cells = []
        for role in ("input_model", "optimized_model"):
            value = data.get(key.format(role=role))
            cells.append(fmt.format(value) if isinstance(value, int | float) else "-")
        lines.append(f"{label:24} {cells[0]:>14} {cells[1]:>14}")
    if "speedup" in data:
        lines.append(f"{'speedup (optimized/input)':24} {data['speedup']:>29.3f}")
    if "accuracy_delta" in data:
        lines.append(f"{'accuracy delta':24} {data['accuracy_delta']:>+29.4f}")
    return "\n".join(lines)


def last_finish(lines: list[str]) -> FinishEvent | None:
    finish = None
    for line in lines:
        if line.strip().startswith("{"):
            event = parse_event(line)
            if isinstance(event, FinishEvent):
                finish = event
    return finish


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = Path(args[0]).read_text() if args else sys.stdin.read()
    finish = last_finish(text.splitlines())
    if finish is None:
        print("no benchmark_finish event found", file=sys.stderr)
        return 1
    print(summary_table(finish))
    return 0 if finish.ok else 1


if __name__ == "__main__":
    sys.exit(main())
