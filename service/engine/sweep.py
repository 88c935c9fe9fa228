"""A sweep: more performance points in one request, every batch size with every layout.

The points and their order are pure (:func:`sweep_points`, :func:`run_order`); the workload
runs each (point, model) pair as a performance step and hands the figures here
(:class:`SweepTable`), which builds the finish's ``sweep`` section: one row per point with both
models' figures, the speedup at each point, and the best point per model by throughput and by
latency. The request's main point (its own batch_size and layout) is measured by the ordinary
steps and joins the table as the row marked ``main``.

Order: points in the order given (batch sizes outer, layouts inner), and within each point the
two models alternate which goes first (A B, B A, A B, ...): drift on a shared machine over the
sweep (a neighbour starting, a throttle) then falls on both models alike instead of always on
the one measured second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts import BenchmarkRequest, ModelRole

# Figures of a step kept in its sweep row (the full figures of the main point stay in
# execution_details).
ROW_FIGURES = (
    "throughput_samples_per_s",
    "throughput_ci95",
    "latency_ms",
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "window_s",
    "stop_reason",
)


@dataclass(frozen=True)
class SweepPoint:
    batch_size: int
    instances: int
    cores_per_instance: int
    main: bool = False

    @property
    def label(self) -> str:
        """``b8_2x1``: batch 8, 2 instances of 1 core (file names, logs)."""
        return f"b{self.batch_size}_{self.instances}x{self.cores_per_instance}"

    def key(self) -> tuple[int, int, int]:
        return (self.batch_size, self.instances, self.cores_per_instance)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "instances": self.instances,
            "cores_per_instance": self.cores_per_instance,
            "main": self.main,
        }


def sweep_points(request: BenchmarkRequest, main: tuple[int, int, int]) -> list[SweepPoint]:
    """Every point of the request's sweep, the main point ``(batch, instances, cores)`` first
    and marked; an empty list without a sweep."""
    sweep = request.benchmark.sweep
    if sweep is None:
        return []
    batch_sizes = sweep.sizes() or (main[0],)
    layouts = sweep.shapes() or [main[1:]]
    points = [SweepPoint(*main, main=True)]
    for batch_size in batch_sizes:
        for instances, cores in layouts:
            if (batch_size, instances, cores) != main:
                points.append(SweepPoint(batch_size, instances, cores))
    return points


def run_order(
    points: Sequence[SweepPoint], roles: Sequence[ModelRole]
) -> list[tuple[SweepPoint, ModelRole]]:
    """The (point, model) runs of the sweep beyond the main point, models alternating first."""
    order: list[tuple[SweepPoint, ModelRole]] = []
    for number, point in enumerate(p for p in points if not p.main):
        first_to_last = list(roles) if number % 2 == 0 else list(reversed(roles))
        order.extend((point, role) for role in first_to_last)
    return order


@dataclass
class SweepTable:
    """The sweep's rows as they are measured; :meth:`to_dict` is the finish's ``sweep``."""

    points: list[SweepPoint]
    roles: list[ModelRole]
    figures: dict[tuple[int, int, int], dict[str, dict[str, Any]]] = field(default_factory=dict)
    speedups: dict[tuple[int, int, int], dict[str, Any]] = field(default_factory=dict)

    def add(self, point: SweepPoint, role: ModelRole, figures: Mapping[str, Any]) -> None:
        row = {name: figures.get(name) for name in ROW_FIGURES if name in figures}
        row["verdict"] = figures.get("verdict")
        self.figures.setdefault(point.key(), {})[role] = row

    def failed(self, point: SweepPoint, role: ModelRole, message: str) -> None:
        """A point that produced no figures: the row says why, the sweep goes on."""
        self.figures.setdefault(point.key(), {})[role] = {"error": message}

    def set_speedup(self, point: SweepPoint, speedup: Mapping[str, Any]) -> None:
        """``speedup`` and ``speedup_ci95`` of a point (:meth:`SignOff.speedup`)."""
        self.speedups[point.key()] = dict(speedup)

    def done(self) -> int:
        """(point, model) pairs with a row so far."""
        return sum(len(models) for models in self.figures.values())

    def to_dict(self) -> dict[str, Any]:
        rows = []
        for point in self.points:
            models = self.figures.get(point.key())
            if models is None:
                continue
            rows.append({**point.to_dict(), "models": models, **self.speedups.get(point.key(), {})})
        return {
            "points": rows,
            "best": {role: best_points(rows, role) for role in self.roles},
            "order": "points in order, models alternating first (A B, B A, ...)",
        }


def best_points(rows: Sequence[Mapping[str, Any]], role: str) -> dict[str, Any]:
    """The row with the highest throughput, and the one with the lowest p99 latency (the mean
    where a window was too short for a p99), of one model."""
    measured = [
        (row, row["models"][role])
        for row in rows
        if role in row["models"] and row["models"][role].get("throughput_samples_per_s")
    ]
    out: dict[str, Any] = {}
    if not measured:
        return out
    row, figures = max(measured, key=lambda pair: pair[1]["throughput_samples_per_s"])
    out["by_throughput"] = {
        **_where(row),
        "throughput_samples_per_s": figures["throughput_samples_per_s"],
    }
    row, figures = min(measured, key=lambda pair: _latency(pair[1]))
    out["by_latency"] = {
        **_where(row),
        "latency_ms_p99": figures.get("latency_ms_p99"),
        "latency_ms": figures.get("latency_ms"),
    }
    return out


def _latency(figures: Mapping[str, Any]) -> float:
    value = figures.get("latency_ms_p99")
    return float(value if value is not None else figures.get("latency_ms") or float("inf"))


def _where(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in ("batch_size", "instances", "cores_per_instance")}
