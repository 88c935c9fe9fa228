"""A workload's result, built in one place: every progress event's data and the finish's.

The workload hands each finished step's details here (:meth:`ResultBuilder.step_done`), then
the sweep's points (:meth:`ResultBuilder.sweep_run_done`). From those the builder derives
everything else, the same way every time: the seed's headline fields (``perf_throughput_*``,
``perf_latency_*``, ``acc_*``), the sign-off's ``fingerprint`` and ``verdict``, the comparison
of the two models (``speedup``, its interval, ``accuracy_delta``: computed once, when the main
steps are done) and the ``sweep`` table. :meth:`ResultBuilder.data` validates it all as
:class:`~contracts.events.ResultData`, so no half-typed result leaves the engine. The speedup's
interval is a bootstrap over every call's timing: it runs in a thread, so the worker's event
loop never waits on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from contracts import ModelRole, ResultData, step_key
from service.engine.signoff import SignOff
from service.engine.sweep import SweepPoint, SweepTable


@dataclass
class ResultBuilder:
    """The result of one workload so far; ``labels`` (run_id, attempt, node, preflight...) go
    into every event's data as given."""

    request_id: str
    signoff: SignOff
    number_of_steps: int
    labels: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] | None = None
    execution_details: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    headline: dict[str, Any] = field(default_factory=dict)
    steps_done: int = 0
    sweep: SweepTable | None = None
    _comparison: dict[str, Any] | None = None

    def step_done(self, role: ModelRole, mode: str, details: dict[str, Any]) -> ResultData:
        """One of the request's own steps is done: its details and headline figures; returns
        the progress event's data."""
        self.execution_details.setdefault(step_key(role), {})[mode] = details
        if mode == "performance":
            self.headline[f"perf_throughput_{role}"] = details["throughput_samples_per_s"]
            self.headline[f"perf_latency_{role}"] = details["latency_ms"]
        else:
            self.headline[f"acc_{role}"] = details["accuracy"]
        self.steps_done += 1
        return self.data()

    async def compare(self) -> dict[str, Any]:
        """Optimized against input at the main point (:meth:`SignOff.comparison`), computed
        once, when the request's own steps are all done."""
        if self._comparison is None:
            self._comparison = await asyncio.to_thread(self.signoff.comparison, self.headline)
        return self._comparison

    def start_sweep(self, points: list[SweepPoint], roles: list[ModelRole]) -> SweepTable:
        """The sweep's table, its main row being the request's own steps (so a 1-point sweep
        has its table too); :meth:`compare` comes first."""
        assert self._comparison is not None, "compare comes first"
        table = SweepTable(points, roles)
        main = points[0]
        for role in roles:
            table.add(main, role, self.execution_details[step_key(role)]["performance"])
        table.set_speedup(main, {key: value for key, value in self._comparison.items()
                                 if key.startswith("speedup")})  # fmt: skip
        self.sweep = table
        return table

    async def sweep_run_done(self, point: SweepPoint) -> ResultData:
        """One (point, model) run of the sweep is done (its row is in the table): the point's
        speedup once both models have a row; returns the progress event's data."""
        assert self.sweep is not None, "start_sweep comes first"
        models = self.sweep.figures.get(point.key(), {})
        if set(models) == {"input_model", "optimized_model"}:
            self.sweep.set_speedup(point, await asyncio.to_thread(
                self.signoff.speedup,
                models["input_model"].get("throughput_samples_per_s"),
                models["optimized_model"].get("throughput_samples_per_s"),
                point, point.batch_size,
            ))  # fmt: skip
        self.steps_done += 1
        return self.data()

    def data(self) -> ResultData:
        """Everything so far, validated: a progress event's data, or the finish's once every
        step is done."""
        payload: dict[str, Any] = {
            "id": self.request_id,
            "execution_details": self.execution_details,
            **self.labels,
            **self.headline,
            **self.signoff.summary(self.execution_details),  # fingerprint, verdict
            "progress": f"{self.steps_done}/{self.number_of_steps}",
            "current_step": self.steps_done,
            "number_of_steps": self.number_of_steps,
            **(self._comparison or {}),
        }
        if self.dataset is not None:
            payload["dataset"] = self.dataset
        if self.sweep is not None:
            payload["sweep"] = self.sweep.to_dict()
        return ResultData.model_validate(payload)
