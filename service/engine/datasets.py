"""Where a request's accuracy data is, when the request does not say (as the seed does not).

INC takes the evaluation data from the workload's configuration, so INC-shaped requests ask
for accuracy without naming a dataset. The worker looks, in this order:

1. ``benchmark.dataset``, when the request names one;
2. ``<input model>.eval.npz`` beside the input model (``/models/resnet.pb`` ->
   ``/models/resnet.eval.npz``; a SavedModel directory ``/models/resnet`` ->
   ``/models/resnet.eval.npz``);
3. ``eval.npz`` in the input model's directory;
4. the worker's ``worker.dataset``.

Found paths must resolve inside the allowed roots like any other. None found: an error
finish at ``prepare`` that lists every place looked at and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from contracts import BenchmarkRequest
from service.engine.paths import require_existing, resolve_allowed
from service.errors import StepFailed

STEP = "prepare"
CONVENTION_NAME = "eval.npz"


@dataclass(frozen=True)
class DatasetChoice:
    path: Path | None
    source: str  # "request" | "beside_model" | "worker" | "none"


def needs_dataset(request: BenchmarkRequest) -> bool:
    return any(mode == "accuracy" for _, _, mode in request.steps())


def candidates(model_path: Path) -> list[Path]:
    """The conventional places beside a (resolved) input model, in lookup order."""
    base = model_path.parent / model_path.name.rstrip("/")
    stem = base.name if model_path.is_dir() else base.stem
    return [base.parent / f"{stem}.{CONVENTION_NAME}", base.parent / CONVENTION_NAME]


def choose(
    request: BenchmarkRequest,
    input_model: Path,
    worker_dataset: Path | None,
    roots: tuple[Path, ...],
) -> DatasetChoice:
    """The dataset the request's accuracy steps use (none when no step needs one)."""
    given = request.benchmark.dataset
    if given is not None:
        path = require_existing(resolve_allowed(given, roots, "dataset"), given, "dataset")
        return DatasetChoice(path, "request")
    if not needs_dataset(request):
        return DatasetChoice(None, "none")
    looked = candidates(input_model)
    for path in looked:
        if path.is_file():
            return DatasetChoice(resolve_allowed(str(path), roots, "dataset"), "beside_model")
    if worker_dataset is not None:
        raw = str(worker_dataset)
        return DatasetChoice(
            require_existing(resolve_allowed(raw, roots, "dataset"), raw, "dataset"), "worker"
        )
    shown = ", ".join(str(path) for path in looked)
    raise StepFailed(
        STEP,
        f"the request asks for accuracy and names no benchmark.dataset; the worker looked for "
        f"{shown} (beside the input model) and has no worker.dataset: put an .npz with arrays "
        f"x and y at one of those paths, or set benchmark.dataset",
    )
