"""What a lab needs to sign a result off, gathered along one workload's steps.

Before the first step: the machine facts and each model's SHA-256 (hashed in a thread). After
each step: its figures with their verdict and costs, then the run's ``fingerprint`` and
overall ``verdict``. At the end: the speedup's confidence interval. The workload calls these;
the numbers come from :mod:`service.figures.aggregate`, the judgement from
:mod:`service.figures.verdict`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.figures import aggregate, fingerprint, stats, verdict
from service.runner.protocol import RunnerConfig, RunnerResult


@dataclass
class SignOff:
    machine: dict[str, Any]
    models: dict[str, dict[str, Any]]
    batch_size: int
    dataset: dict[str, Any] | None = None
    run_length: dict[str, Any] = field(default_factory=dict)
    # (sweep point or None for the main point, role) -> that step's runner results
    performance_results: dict[tuple[object, str], list[RunnerResult]] = field(default_factory=dict)

    @classmethod
    async def collect(
        cls,
        config: RunnerConfig,
        runner_cpus: Sequence[int],
        run_length_chosen: Sequence[str] = (),
        known_sha256: Mapping[str, str] | None = None,
    ) -> SignOff:
        """Read the machine and hash the models (in threads: models can be big); a model in
        ``known_sha256`` (the worker hashed it for the result store) is not hashed again.

        ``run_length_chosen``: the run-length settings the request set itself; a window too
        short for a percentile is then what was asked for (a warning), not a wrong result.
        """
        machine = await asyncio.to_thread(fingerprint.machine_facts, runner_cpus)
        models = await fingerprint.hash_models(
            {role: model.path for role, model in config.models.items()}, known_sha256
        )
        dataset = None
        if config.dataset is not None:
            dataset = (await fingerprint.hash_models({"dataset": config.dataset}))["dataset"]
        run_length = {
            "iterations": config.iterations,
            "duration_s": config.duration_s,
            "min_iterations": config.min_iterations,
            "max_duration_s": config.max_duration_s,
            "chosen": list(run_length_chosen),
        }
        return cls(machine, models, config.batch_size, dataset, run_length)

    def _model_size(self, role: str) -> int | None:
        return self.models.get(role, {}).get("size_bytes")

    async def performance_figures(
        self,
        role: str,
        results: Sequence[RunnerResult],
        pinning_mismatches: Sequence[str],
        batch_size: int | None = None,
        point: object | None = None,
    ) -> dict[str, Any]:
        """A performance step's figures, costs and verdict (statistics run in a thread).

        ``batch_size`` and ``point``: a sweep point's (its results are kept apart from the
        main point's, whose speedup interval :meth:`comparison` computes)."""
        figures = await asyncio.to_thread(
            aggregate.summarize_performance,
            results,
            batch_size or self.batch_size,
            aggregate.ROLE_SEEDS.get(role, stats.BOOTSTRAP_SEED),
        )
        figures["costs"]["model_size_bytes"] = self._model_size(role)
        figures["run_length"] = self.run_length
        loadgen = results[0].performance.loadgen if results[0].performance else None
        if loadgen is not None:  # single_stream or server: what MLPerf LoadGen said
            figures["scenario"] = loadgen
        figures["verdict"] = verdict.performance_verdict(figures, pinning_mismatches)
        self.performance_results[(point, role)] = list(results)
        return figures

    def speedup(
        self, input_tp: Any, optimized_tp: Any, point: object | None = None, batch_size: int = 0
    ) -> dict[str, Any]:
        """``speedup`` (optimized / input throughput) and its ``speedup_ci95``, of the main
        point or of a sweep ``point`` (with its ``batch_size``): each when it can be had."""
        out: dict[str, Any] = {}
        if input_tp and optimized_tp:
            out["speedup"] = round(optimized_tp / input_tp, 4)
        base = self.performance_results.get((point, "input_model"))
        new = self.performance_results.get((point, "optimized_model"))
        if base and new:
            out["speedup_ci95"] = aggregate.speedup_interval(
                base, new, batch_size or self.batch_size
            )
        return out

    def accuracy_figures(
        self, role: str, result: RunnerResult, pinning_mismatches: Sequence[str]
    ) -> dict[str, Any]:
        figures = aggregate.summarize_accuracy(result)
        figures["costs"]["model_size_bytes"] = self._model_size(role)
        figures["verdict"] = verdict.accuracy_verdict(pinning_mismatches, figures)
        return figures

    def summary(
        self, execution_details: Mapping[str, Mapping[str, Mapping[str, Any]]]
    ) -> dict[str, Any]:
        """Top-level ``fingerprint`` and ``verdict`` for the steps done so far."""
        first = next(
            (details for modes in execution_details.values() for details in modes.values()),
            None,
        )
        print_ = fingerprint.build(
            self.machine,
            self.models,
            None if first is None else fingerprint.runner_facts(first),
            fingerprint.workload_facts(first, self.dataset),
        )
        return {
            "fingerprint": print_,
            "verdict": verdict.overall(execution_details, verdict.machine_warnings(print_)),
        }

    def comparison(self, headline: Mapping[str, Any]) -> dict[str, Any]:
        """Optimized versus input, in one place: ``speedup`` (throughput ratio) with its
        ``speedup_ci95`` when both models were measured for performance, and
        ``accuracy_delta`` when both were measured for accuracy (``headline``: the seed's
        ``perf_throughput_*`` and ``acc_*`` fields)."""
        out = self.speedup(
            headline.get("perf_throughput_input_model"),
            headline.get("perf_throughput_optimized_model"),
        )
        acc_base, acc_new = headline.get("acc_input_model"), headline.get("acc_optimized_model")
        if acc_base is not None and acc_new is not None:
            out["accuracy_delta"] = round(acc_new - acc_base, 4)
        return out
