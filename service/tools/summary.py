"""Input model versus optimized model: the comparison shown by ``submit --wait`` and ``report``.

One place decides which figures are compared and how they are formatted, so the terminal table,
the HTML report and the plain-text summary always agree.

``python -m service.tools.summary EVENTS.jsonl`` prints the table for the last finish in the file.

>>> data = {"perf_throughput_input_model": 100.0, "perf_throughput_optimized_model": 250.0,
...         "speedup": 2.5, "acc_input_model": 0.75, "acc_optimized_model": 0.7488,
...         "accuracy_delta": -0.0012}
>>> rows = comparison_rows(data)
>>> for row in rows:
...     print(row.label, row.cells(), row.change_text())
throughput (samples/s) ('100.0', '250.0') ×2.50
latency p50 (ms) ('-', '-') -
latency p99 (ms) ('-', '-') -
accuracy ('0.7500', '0.7488') -0.0012
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from contracts import FinishEvent, parse_event

ROLES = ("input_model", "optimized_model")
ROLE_LABELS = {"input_model": "input model", "optimized_model": "optimized model"}
MISSING = "-"


@dataclass(frozen=True)
class Row:
    """One compared figure: its value for each model and the optimized model's change."""

    key: str
    label: str
    input_model: float | None
    optimized_model: float | None
    fmt: str
    change: float | None
    change_kind: Literal["ratio", "delta"]
    better: Literal["higher", "lower"]

    def cells(self) -> tuple[str, str]:
        """The two values, formatted; ``-`` where a model was not measured."""
        return (_format(self.fmt, self.input_model), _format(self.fmt, self.optimized_model))

    def change_text(self) -> str:
        """``×2.50`` for a ratio (optimized/input), ``+0.0012`` for a delta; ``-`` if unknown."""
        if self.change is None:
            return MISSING
        return f"×{self.change:.2f}" if self.change_kind == "ratio" else f"{self.change:+.4f}"

    def improved(self) -> bool | None:
        """Whether the optimized model is better on this figure (None when unknown)."""
        neutral = 1.0 if self.change_kind == "ratio" else 0.0
        if self.change is None or self.change == neutral:
            return None
        return self.change > neutral if self.better == "higher" else self.change < neutral


def _format(fmt: str, value: float | None) -> str:
    return MISSING if value is None else fmt.format(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def step_figures(data: Mapping[str, Any], role: str, mode: str) -> Mapping[str, Any]:
    """``execution_details.<role>_benchmark.<mode>``, or an empty mapping."""
    details = data.get("execution_details") or {}
    step = (details.get(f"{role}_benchmark") or {}).get(mode)
    return step if isinstance(step, Mapping) else {}


def comparison_rows(data: Mapping[str, Any]) -> list[Row]:
    """Throughput, latency p50 and p99, accuracy: input versus optimized, with the change.

    ``data`` is the payload of a successful ``benchmark_finish`` (or a ``result.json``'s).
    Speedup and accuracy delta are the worker's own figures when it reported them.
    """

    def both(get: Any) -> tuple[float | None, float | None]:
        return get("input_model"), get("optimized_model")

    def latency(pct: str) -> Any:
        return lambda role: _number(
            step_figures(data, role, "performance").get(f"latency_ms_{pct}")
        )

    rows = []
    specs: list[tuple[str, str, Any, str, str, Literal["higher", "lower"]]] = [
        ("throughput", "throughput (samples/s)",
         lambda role: _number(data.get(f"perf_throughput_{role}")), "{:,.1f}", "speedup", "higher"),
        ("latency_p50", "latency p50 (ms)", latency("p50"), "{:.3f}", "", "lower"),
        ("latency_p99", "latency p99 (ms)", latency("p99"), "{:.3f}", "", "lower"),
        ("accuracy", "accuracy",
         lambda role: _number(data.get(f"acc_{role}")), "{:.4f}", "accuracy_delta", "higher"),
    ]  # fmt: skip
    for key, label, get, fmt, reported, better in specs:
        base, new = both(get)
        kind: Literal["ratio", "delta"] = "delta" if key == "accuracy" else "ratio"
        change = _number(data.get(reported)) if reported else None
        if change is None and base is not None and new is not None:
            if kind == "delta":
                change = round(new - base, 4)
            elif base:
                change = round(new / base, 4)
        rows.append(Row(key, label, base, new, fmt, change, kind, better))
    return rows


def sweep_cells(data: Mapping[str, Any]) -> list[list[str]]:
    """One row of text cells per sweep point: batch, layout, each model's throughput and p99,
    the speedup, each model's verdict (a failed point shows its error)."""
    sweep = data.get("sweep")
    rows: list[list[str]] = []
    for point in (sweep or {}).get("points", []) if isinstance(sweep, dict) else []:
        cells = [str(point.get("batch_size")), point_layout(point)]
        verdicts = []
        for role in ROLES:
            figures = (point.get("models") or {}).get(role) or {}
            if figures.get("error"):
                cells += ["failed", ""]
                verdicts.append("error")
                continue
            cells.append(_format("{:,.1f}", _number(figures.get("throughput_samples_per_s"))))
            cells.append(_format("{:.3f}", _number(figures.get("latency_ms_p99"))))
            if figures:  # a model the request measured
                verdicts.append(str((figures.get("verdict") or {}).get("status", "")))
        cells.append(_format("{:.3f}x", _number(point.get("speedup"))))
        cells.append("/".join(verdicts))
        rows.append(cells)
    return rows


SWEEP_HEADERS = ["batch", "layout", "input samples/s", "input p99 ms", "optimized samples/s",
                 "optimized p99 ms", "speedup", "verdicts"]  # fmt: skip


def point_layout(point: Mapping[str, Any]) -> str:
    return f"{point.get('instances')}×{point.get('cores_per_instance')}"


def best_point_lines(data: Mapping[str, Any]) -> list[str]:
    """``input model: best throughput at batch 8, 2×1 (6,680 samples/s); ...`` per model."""
    sweep = data.get("sweep")
    best = sweep.get("best") if isinstance(sweep, dict) else None
    lines = []
    for role in ROLES:
        mine = (best or {}).get(role) or {}
        parts = []
        if "by_throughput" in mine:
            b = mine["by_throughput"]
            parts.append(f"best throughput at batch {b['batch_size']}, {point_layout(b)} "
                         f"({_format('{:,.1f}', _number(b.get('throughput_samples_per_s')))}"
                         " samples/s)")  # fmt: skip
        if "by_latency" in mine:
            b = mine["by_latency"]
            value = b.get("latency_ms_p99")
            figure = f"p99 {value:.3f} ms" if isinstance(value, int | float) else "mean " + \
                _format("{:.3f}", _number(b.get("latency_ms"))) + " ms"  # fmt: skip
            parts.append(f"best latency at batch {b['batch_size']}, {point_layout(b)} ({figure})")
        if parts:
            lines.append(f"{ROLE_LABELS[role]}: " + "; ".join(parts))
    return lines


def summary_table(finish: FinishEvent) -> str:
    """A plain-text comparison table, or what failed."""
    data = finish.data.model_dump()
    if finish.status != "success":
        return f"FAILED at {data.get('step')}: {data.get('message')}"
    lines = [f"{'':24} {'input model':>15} {'optimized model':>15} {'change':>9}"]
    for row in comparison_rows(data):
        base, new = row.cells()
        lines.append(f"{row.label:24} {base:>15} {new:>15} {row.change_text():>9}")
    interval = data.get("speedup_ci95")
    if isinstance(interval, list) and len(interval) == 2:
        lines.append(f"speedup 95% interval: {interval[0]:.3f} .. {interval[1]:.3f}")
    verdict = data.get("verdict")
    if isinstance(verdict, dict):
        reasons = [r.get("message", r.get("code")) for r in verdict.get("reasons", [])]
        lines.append(f"verdict: {verdict.get('status')}" + "".join(f"; {r}" for r in reasons))
    sweep = sweep_cells(data)
    if sweep:
        widths = [max(len(h), *(len(row[i]) for row in sweep)) for i, h in enumerate(SWEEP_HEADERS)]
        lines.append("sweep:")
        for cells in [SWEEP_HEADERS, *sweep]:
            lines.append("  " + "  ".join(c.rjust(widths[i]) for i, c in enumerate(cells)))
        lines += best_point_lines(data)
    return "\n".join(lines)


def last_finish(lines: list[str]) -> FinishEvent | None:
    """The last ``benchmark_finish`` among JSON lines (other lines are skipped)."""
    finish = None
    for line in lines:
        if line.strip().startswith("{"):
            event = parse_event(line)
            if isinstance(event, FinishEvent):
                finish = event
    return finish


def main(argv: list[str] | None = None) -> int:
    """Print the table of the last finish in a JSON-lines file (or stdin); exit by its status."""
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
