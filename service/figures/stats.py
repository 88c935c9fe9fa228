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

Bootstrap intervals resample *blocks* of consecutive batches within each instance: each
instance's series is cut into non-overlapping blocks of ``b = round(n ** (1/3))`` batches (at
least 1; a tail shorter than a block is left out), and a replicate draws as many blocks as there
are, with replacement. Never across instances, and never single batches: consecutive batches
are correlated (a noisy neighbour, a frequency change, a page-cache miss lasts longer than one
call), and resampling single batches would then understate the interval. Each instance is a
stratum of its own, because instances are fixed units of the run, not draws from a pool.
Percentile intervals from ``BOOTSTRAP_RESAMPLES`` replicates, with a fixed seed: the same data
always gives the same interval. The cost grows with the number of blocks, not of batches
(:func:`median_replicates` says how the median manages that).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    "percentile bootstrap; non-overlapping blocks of round(n^(1/3)) consecutive batches, "
    "resampled within each instance"
)
_CHUNK_ELEMENTS = 2_000_000  # block draws held in memory at once (about 16 MB)


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
    """Block length for ``n`` consecutive values: ``round(n ** (1/3))``, at least 1."""
    return max(1, round(math.pow(n, 1 / 3)))


def _blocks(values: np.ndarray) -> np.ndarray:
    """``values`` cut into ``n // b`` non-overlapping blocks of ``b`` (a shorter tail dropped)."""
    b = block_length(len(values))
    k = len(values) // b
    return values[: k * b].reshape(k, b)


def _choice_counts(rng: np.random.Generator, k: int, rows: int) -> np.ndarray:
    """How often each of ``k`` blocks is drawn in each of ``rows`` resamples of ``k`` draws."""
    drawn = rng.integers(0, k, size=(rows, k)) + (np.arange(rows) * k)[:, None]
    return np.bincount(drawn.ravel(), minlength=rows * k).reshape(rows, k).astype(float)


def _row_chunks(resamples: int, k: int) -> list[tuple[int, int]]:
    rows = max(1, _CHUNK_ELEMENTS // max(1, k))
    return [(first, min(resamples, first + rows)) for first in range(0, resamples, rows)]


def _usable(strata: Sequence[Sequence[float] | np.ndarray]) -> list[np.ndarray] | None:
    arrays = [np.asarray(s, dtype=float) for s in strata]
    if not arrays or any(len(a) < 2 for a in arrays):
        return None
    return arrays


def rate_replicates(
    intervals_s: Sequence[Sequence[float] | np.ndarray],
    batch_size: int,
    *,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> np.ndarray | None:
    """Replicates of Σ over strata of ``batch_size / mean interval`` (None: a stratum < 2).

    Each replicate draws, per stratum, as many blocks as it has, with replacement.
    """
    arrays = _usable(intervals_s)
    if arrays is None:
        return None
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for values in arrays:
        blocks = _blocks(values)
        k, b = blocks.shape
        sums = blocks.sum(axis=1)
        for first, last in _row_chunks(resamples, k):
            counts = _choice_counts(rng, k, last - first)
            total[first:last] += batch_size * k * b / (counts @ sums)
    return total


def median_replicates(
    strata: Sequence[Sequence[float] | np.ndarray],
    *,
    seed: int = BOOTSTRAP_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
    bins: int = 512,
) -> np.ndarray | None:
    """Replicates of the pooled nearest-rank median (None: a stratum has fewer than 2 values).

    Exact resampling would sort ``n`` values per replicate. Instead the values near the pooled
    median (a band of ranks wide enough to hold every replicate's median, widened if not) are
    cut into ``bins`` bins of about equal count; each block's bin histogram is counted once, a
    replicate's histogram is (blocks drawn) @ (block histograms), and its median is read in
    the bin where the cumulative count passes half, from that bin's own sorted values. The
    error is below one bin's spread of values: a small fraction of the interval's width.
    """
    arrays = _usable(strata)
    if arrays is None:
        return None
    pooled = np.sort(np.concatenate(arrays))
    n = len(pooled)
    blocked = [_blocks(values) for values in arrays]
    delta = min(0.5, 20 / math.sqrt(n))
    while True:
        low_rank = max(0, math.floor((0.5 - delta) * n))
        high_rank = min(n - 1, math.ceil((0.5 + delta) * n))
        picks = np.linspace(low_rank, high_rank, bins + 1).round().astype(int)
        edges = np.unique(pooled[picks])
        edges = np.append(edges[:-1], np.nextafter(edges[-1], np.inf))  # top value inside
        if len(edges) == 1:  # one value all over the band
            edges = np.array([pooled[picks[0]], edges[0]])
        replicates = _median_from_bins(blocked, pooled, edges, seed, resamples)
        if replicates is not None or delta >= 0.5:
            return replicates
        delta = min(0.5, 2 * delta)


def _median_from_bins(
    blocked: list[np.ndarray], pooled: np.ndarray, edges: np.ndarray, seed: int, resamples: int
) -> np.ndarray | None:
    """Bin 0: below the band; 1..B: inside; B+1: above. None if a median left the band."""
    width = len(edges) + 1
    rng = np.random.default_rng(seed)
    hist = np.zeros((resamples, width))
    size = 0
    for blocks in blocked:
        k, b = blocks.shape
        size += k * b
        ids = np.searchsorted(edges, blocks, side="right") + (np.arange(k) * width)[:, None]
        per_block = np.bincount(ids.ravel(), minlength=k * width).reshape(k, width).astype(float)
        for first, last in _row_chunks(resamples, k):
            hist[first:last] += _choice_counts(rng, k, last - first) @ per_block
    rank = math.ceil(size / 2)
    cumulative = np.cumsum(hist, axis=1)
    where = np.argmax(cumulative >= rank, axis=1)
    if np.any((where == 0) | (where == width - 1)):
        return None
    before = cumulative[np.arange(resamples), where] - hist[np.arange(resamples), where]
    fraction = (rank - before - 0.5) / hist[np.arange(resamples), where]
    starts = np.searchsorted(pooled, edges[where - 1], side="left")
    stops = np.searchsorted(pooled, edges[where], side="left")
    offsets = np.minimum((fraction * (stops - starts)).astype(int), stops - starts - 1)
    return np.asarray(pooled[starts + offsets])


def interval(
    replicates: np.ndarray, confidence: float = BOOTSTRAP_CONFIDENCE
) -> tuple[float, float]:
    """The central ``confidence`` percentile interval of bootstrap replicates."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return float(low), float(high)


def median_interval(
    latencies: Sequence[Sequence[float] | np.ndarray], seed: int = BOOTSTRAP_SEED
) -> tuple[float, float] | None:
    """95% interval of the pooled median latency (per-instance latency series as strata)."""
    replicates = median_replicates(latencies, seed=seed)
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
    return rate_replicates(intervals_s, batch_size, seed=seed)


def ratio_interval(
    numerator: np.ndarray, denominator: np.ndarray, confidence: float = BOOTSTRAP_CONFIDENCE
) -> tuple[float, float]:
    """Interval of a ratio of two independent quantities from their replicates (paired by row:
    the replicates are independent draws, so pairing them in order is a valid joint draw)."""
    return interval(numerator / denominator, confidence)
