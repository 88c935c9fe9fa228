"""Statistics behind the published figures: percentiles with sample floors, spread, bootstrap.

Pure functions over numbers (numpy, no TensorFlow, no I/O), so they are tested against known
distributions without running a model.

Percentiles use the nearest-rank rule, the one LoadGen, OpenVINO and ONNX Runtime use: the
``ceil(p/100 * n)``-th smallest value (numpy's ``method="inverted_cdf"``, except that the rank
is computed exactly: numpy's float product puts 99.9% of 1000 values at the maximum).

A percentile needs enough samples behind it. The floor follows MLPerf LoadGen's early-stopping
rule (``loadgen/early_stopping.cc``, SingleStream, ``t = 1``, confidence 0.99): the smallest
``n`` such that, if the true fraction of samples at or below the reported value were exactly
``p``, seeing at most one sample above it would have probability ``<= 1 - 0.99``::

    floor(p) = min { n : P[Binomial(n, 1 - p) <= 1] <= 0.01 }
             = min { n : p^n + n (1 - p) p^(n - 1) <= 0.01 }

which gives 11 for p50, 64 for p90, 662 for p99 and 6636 for p99.9.

Bootstrap intervals resample *moving blocks* of consecutive batches within each instance
(block length ``round(n ** (1/3))``, at least 1), never across instances: consecutive batches
are correlated (a noisy neighbour, a frequency change, a page-cache miss lasts longer than one
call), and resampling single batches would then understate the interval. Each instance is a
stratum of its own, because instances are fixed units of the run, not draws from a pool.
Percentile intervals from ``BOOTSTRAP_RESAMPLES`` replicates, with a fixed seed: the same data
always gives the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np

PERCENTILE_METHOD = "nearest-rank"
FLOOR_CONFIDENCE = 0.99
FLOOR_TOLERATED_ABOVE = 1  # LoadGen's t: samples allowed above the reported value
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_CONFIDENCE = 0.95
BOOTSTRAP_SEED = 20240229
BOOTSTRAP_METHOD = (
    "percentile bootstrap, moving blocks of round(n^(1/3)) consecutive batches per instance"
)
_CHUNK_ELEMENTS = 2_000_000  # resampled values held in memory at once (about 32 MB)

Statistic = Callable[[list[np.ndarray]], np.ndarray]


# -- percentiles ------------------------------------------------------------------------------


def nearest_rank(sorted_values: Sequence[float], pct: float) -> float:
    """The ``ceil(pct/100 * n)``-th smallest of already sorted values (``pct`` in (0, 100])."""
    if len(sorted_values) == 0:
        raise ValueError("percentile of no values")
    if not 0 < pct <= 100:
        raise ValueError(f"percentile {pct} is outside (0, 100]")
    rank = math.ceil(Fraction(str(pct)) * len(sorted_values) / 100)  # exact: no 99.9 * n drift
    return float(sorted_values[max(rank, 1) - 1])


def _log_binomial_cdf(n: int, k_max: int, p_event: float) -> float:
    """log P[Binomial(n, p_event) <= k_max]."""
    terms = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p_event) + (n - k) * math.log1p(-p_event)
        for k in range(min(k_max, n) + 1)
    ]  # fmt: skip
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


@lru_cache(maxsize=64)
def percentile_floor(
    pct: float, confidence: float = FLOOR_CONFIDENCE, tolerated: int = FLOOR_TOLERATED_ABOVE
) -> int:
    """Fewest samples for percentile ``pct`` (see the module docstring): 64 for 90, 662 for 99."""
    if not 0 < pct < 100:
        raise ValueError(f"percentile {pct} is outside (0, 100)")
    p_above = 1 - pct / 100
    limit = math.log(1 - confidence)

    def passes(n: int) -> bool:
        return _log_binomial_cdf(n, tolerated, p_above) <= limit

    high = tolerated + 1
    while not passes(high):
        high *= 2
    low = high // 2
    while low < high:  # smallest passing n in (low, high]
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle + 1
    return high


@dataclass(frozen=True)
class PercentileFigure:
    """One percentile: its value, or ``None`` with status ``insufficient`` below the floor."""

    percentile: float
    value: float | None
    status: str  # "ok" | "insufficient"
    samples: int
    min_samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile_figure(sorted_values: Sequence[float], pct: float) -> PercentileFigure:
    """``pct`` of the values, reported only when there are at least ``percentile_floor(pct)``."""
    floor = percentile_floor(pct)
    n = len(sorted_values)
    if n < floor:
        return PercentileFigure(pct, None, "insufficient", n, floor)
    return PercentileFigure(pct, nearest_rank(sorted_values, pct), "ok", n, floor)


# -- spread -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """Location and spread of a sample. ``std`` is the sample standard deviation (n - 1)."""

    samples: int
    mean: float
    std: float | None
    cv: float | None  # std / mean
    minimum: float
    q1: float
    median: float
    q3: float
    maximum: float
    iqr_over_median: float | None  # (q3 - q1) / median, quartiles by nearest rank


def spread(values: Sequence[float] | np.ndarray) -> Spread:
    data = np.sort(np.asarray(values, dtype=float))
    n = len(data)
    if n == 0:
        raise ValueError("spread of no values")
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if n > 1 else None
    q1, median, q3 = (nearest_rank(data, pct) for pct in (25, 50, 75))  # type: ignore[arg-type]
    return Spread(
        samples=n,
        mean=mean,
        std=std,
        cv=std / mean if std is not None and mean > 0 else None,
        minimum=float(data[0]),
        q1=q1,
        median=median,
        q3=q3,
        maximum=float(data[-1]),
        iqr_over_median=(q3 - q1) / median if median > 0 else None,
    )


# -- bootstrap --------------------------------------------------------------------------------


def block_length(n: int) -> int:
    """Moving-block length for ``n`` consecutive values: ``round(n ** (1/3))``, at least 1."""
    return max(1, round(n ** (1 / 3)))


def _block_indices(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """``rows`` resamples of ``range(n)`` made of whole moving blocks, ``(n // b) * b`` long."""
    b = block_length(n)
    blocks = n // b
    starts = rng.integers(0, n - b + 1, size=(rows, blocks))
    return (starts[:, :, None] + np.arange(b)).reshape(rows, blocks * b)


def bootstrap_replicates(
    strata: Sequence[Sequence[float] | np.ndarray],
    statistic: Statistic,
    *,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> np.ndarray | None:
    """``resamples`` values of ``statistic`` over block-resampled strata; None if too little.

    ``statistic`` gets one 2-D array per stratum (rows = replicates) and returns one value per
    row. Every stratum needs at least 2 values.
    """
    arrays = [np.asarray(s, dtype=float) for s in strata]
    if not arrays or any(len(a) < 2 for a in arrays):
        return None
    rng = np.random.default_rng(seed)
    total = sum(len(a) for a in arrays)
    chunk = max(1, _CHUNK_ELEMENTS // total)
    out = np.empty(resamples)
    for first in range(0, resamples, chunk):
        rows = min(chunk, resamples - first)
        resampled = [a[_block_indices(rng, len(a), rows)] for a in arrays]
        out[first : first + rows] = statistic(resampled)
    return out


def interval(
    replicates: np.ndarray, confidence: float = BOOTSTRAP_CONFIDENCE
) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def pooled_median(resampled: list[np.ndarray]) -> np.ndarray:
    """Median of all strata pooled, per replicate row."""
    return np.median(np.concatenate(resampled, axis=1), axis=1)


def rate_sum(batch_size: int) -> Statistic:
    """Statistic over inter-completion intervals: Σ over instances of batch / mean interval."""

    def statistic(resampled: list[np.ndarray]) -> np.ndarray:
        return np.sum([batch_size / r.mean(axis=1) for r in resampled], axis=0)

    return statistic


def median_interval(
    latencies: Sequence[Sequence[float] | np.ndarray], seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """95% interval of the pooled median latency (per-instance latency series as strata)."""
    replicates = bootstrap_replicates(latencies, pooled_median, seed=seed)
    return None if replicates is None else interval(replicates)


def throughput_replicates(
    intervals_s: Sequence[Sequence[float] | np.ndarray],
    batch_size: int,
    seed: int = BOOTSTRAP_SEED,
) -> np.ndarray | None:
    """Replicates of aggregate throughput from each instance's inter-completion intervals.

    An instance's throughput is ``batch_size / mean interval`` (its completions over the time
    they took); the aggregate is the sum over instances, as they ran side by side.
    """
    return bootstrap_replicates(intervals_s, rate_sum(batch_size), seed=seed)


def ratio_interval(
    numerator: np.ndarray, denominator: np.ndarray, confidence: float = BOOTSTRAP_CONFIDENCE
) -> tuple[float, float]:
    """Interval of a ratio of two independent quantities from their replicates (paired by row:
    the replicates are independent draws, so pairing them in order is a valid joint draw)."""
    return interval(numerator / denominator, confidence)
