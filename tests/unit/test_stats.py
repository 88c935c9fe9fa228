"""The statistics against known distributions: percentiles, floors, spread, bootstrap coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.figures import stats

Z95 = 1.959964


@pytest.mark.parametrize("n", [1, 2, 7, 64, 100, 661, 1000, 6636, 12345])
@pytest.mark.parametrize("pct", [25, 50, 75, 90, 99, 99.9, 100])
def test_nearest_rank_matches_numpy_inverted_cdf(n: int, pct: float) -> None:
    values = np.sort(np.random.default_rng(n).lognormal(0, 1, n))
    tenths = round(pct * 10)
    exact_rank = -(-tenths * n // 1000)  # ceil(pct/100 * n) in integers

    got = stats.nearest_rank(values.tolist(), pct)

    assert got == values[exact_rank - 1]
    if tenths * n % 1000:  # numpy agrees wherever pct/100 * n is not a whole number; at whole
        # numbers its float product can round up (99.9% of 1000 -> the maximum)
        assert got == np.percentile(values, pct, method="inverted_cdf")


def test_nearest_rank_on_known_data() -> None:
    values = [float(v) for v in range(1, 1001)]  # 1..1000
    assert stats.nearest_rank(values, 50) == 500
    assert stats.nearest_rank(values, 99) == 990
    assert stats.nearest_rank(values, 99.9) == 999  # not the maximum: 99.9 * 1000 is exact
    with pytest.raises(ValueError):
        stats.nearest_rank([], 50)


def _binomial_at_most_one_above(n: int, pct: float) -> float:
    """P[at most one of n samples above the pct percentile], by the direct formula."""
    p = pct / 100
    return p**n + n * (1 - p) * p ** (n - 1)


@pytest.mark.parametrize(("pct", "floor"), [(50, 11), (90, 64), (99, 662), (99.9, 6636)])
def test_floors_match_loadgen_and_the_formula(pct: float, floor: int) -> None:
    """64 for p90 and 662 for p99 are LoadGen's; p99.9 comes from the same rule."""
    assert stats.percentile_floor(pct) == floor
    assert _binomial_at_most_one_above(floor, pct) <= 0.01
    assert _binomial_at_most_one_above(floor - 1, pct) > 0.01


@pytest.mark.parametrize(("pct", "floor"), [(90, 64), (99, 662), (99.9, 6636)])
def test_below_the_floor_a_percentile_is_insufficient_not_the_maximum(
    pct: float, floor: int
) -> None:
    values = sorted(np.random.default_rng(1).exponential(1.0, floor).tolist())

    short = stats.percentile_figure(values[: floor - 1], pct)
    enough = stats.percentile_figure(values, pct)

    assert short.status == "insufficient" and short.value is None
    assert short.samples == floor - 1 and short.min_samples == floor
    assert enough.status == "ok" and enough.value == stats.nearest_rank(values, pct)
    assert enough.to_dict()["min_samples"] == floor


def test_spread_matches_numpy() -> None:
    data = np.random.default_rng(2).normal(10.0, 2.0, 5000)

    figures = stats.spread(data)

    assert figures.samples == 5000
    assert figures.mean == pytest.approx(np.mean(data))
    assert figures.std == pytest.approx(np.std(data, ddof=1))
    assert figures.cv == pytest.approx(np.std(data, ddof=1) / np.mean(data))
    q1, q3 = np.percentile(data, [25, 75], method="inverted_cdf")
    median = np.percentile(data, 50, method="inverted_cdf")
    assert figures.iqr_over_median == pytest.approx((q3 - q1) / median)
    # normal: IQR = 1.349 sigma, so IQR/median ~ 1.349 * 2 / 10
    assert figures.iqr_over_median == pytest.approx(0.2698, rel=0.05)
    assert (figures.minimum, figures.maximum) == (data.min(), data.max())


def test_spread_of_one_value_has_no_std() -> None:
    figures = stats.spread([3.0])
    assert figures.std is None and figures.cv is None and figures.median == 3.0


@pytest.mark.parametrize(("n", "length"), [(1, 1), (7, 2), (1000, 10), (8000, 20)])
def test_block_length_is_cube_root(n: int, length: int) -> None:
    assert stats.block_length(n) == length


def test_bootstrap_is_deterministic_with_its_seed() -> None:
    data = [np.random.default_rng(3).exponential(1.0, 300)]
    first = stats.median_interval(data)
    assert first == stats.median_interval(data)
    assert first != stats.median_interval(data, seed=stats.BOOTSTRAP_SEED + 1)


def test_bootstrap_needs_two_values_per_instance() -> None:
    assert stats.median_interval([[1.0, 2.0, 3.0], [4.0]]) is None
    assert stats.throughput_replicates([], batch_size=1) is None


def brute_force_medians(strata: list[np.ndarray], seed: int, resamples: int) -> np.ndarray:
    """Every replicate built in full from the same block draws, and its median sorted out."""
    rng = np.random.default_rng(seed)
    blocked = [stats._blocks(s) for s in strata]
    draws = [stats._choice_counts(rng, len(b), resamples).astype(int) for b in blocked]
    medians = []
    for row in range(resamples):
        values = np.concatenate(
            [np.repeat(b, d[row], axis=0).ravel() for b, d in zip(blocked, draws, strict=True)]
        )
        medians.append(stats.nearest_rank(np.sort(values), 50))
    return np.array(medians)


@pytest.mark.parametrize(("sizes", "seed"), [((2000,), 1), ((700, 1300, 55), 2), ((30,), 3)])
def test_binned_median_replicates_match_brute_force(sizes: tuple[int, ...], seed: int) -> None:
    """The fast path gives each replicate's median within one bin's spread of the exact one."""
    rng = np.random.default_rng(seed)
    strata = [rng.lognormal(0.0, 0.5, n) for n in sizes]

    fast = stats.median_replicates(strata, seed=seed, resamples=200)
    exact = brute_force_medians(strata, seed, 200)

    assert fast is not None
    pooled = np.sort(np.concatenate(strata))
    bin_spread = np.max(np.diff(pooled[len(pooled) // 4 : 3 * len(pooled) // 4])) * 8
    assert np.max(np.abs(fast - exact)) <= bin_spread
    assert np.mean(fast == exact) > 0.3  # often exact: bins hold few values here
    assert stats.interval(fast) == pytest.approx(stats.interval(exact), rel=0.01)


def test_constant_latencies_have_a_zero_width_interval() -> None:
    assert stats.median_interval([np.full(500, 1.5), np.full(300, 1.5)]) == (1.5, 1.5)


def test_median_interval_covers_the_true_median_about_95_percent() -> None:
    """Lognormal latencies from two instances: the interval covers exp(mu) in ~95% of runs,
    and its width is what theory says for a median (not a wide interval that always covers)."""
    mu, sigma, per_instance, trials = math.log(2.0), 0.3, 200, 120
    rng = np.random.default_rng(4)
    covered, widths = 0, []
    for trial in range(trials):
        strata = [rng.lognormal(mu, sigma, per_instance) for _ in range(2)]
        replicates = stats.median_replicates(strata, seed=trial, resamples=400)
        assert replicates is not None
        low, high = stats.interval(replicates)
        covered += low <= 2.0 <= high
        widths.append(high - low)
    n = 2 * per_instance
    density_at_median = 1 / (2.0 * sigma * math.sqrt(2 * math.pi))
    theory = 2 * Z95 / (2 * math.sqrt(n) * density_at_median)
    assert 0.88 <= covered / trials <= 0.99
    assert 0.7 <= np.mean(widths) / theory <= 1.4


def test_throughput_interval_covers_the_true_rate() -> None:
    """Two instances with gamma inter-completion times; true rate = sum of batch / mean."""
    batch, means_s, trials = 4, (0.002, 0.003), 120
    truth = sum(batch / m for m in means_s)
    rng = np.random.default_rng(5)
    covered = 0
    for trial in range(trials):
        strata = [rng.gamma(4.0, m / 4.0, 500) for m in means_s]
        replicates = stats.rate_replicates(strata, batch, seed=trial, resamples=400)
        assert replicates is not None
        low, high = stats.interval(replicates)
        covered += low <= truth <= high
    assert 0.88 <= covered / trials <= 0.99


def _ar1(rng: np.random.Generator, n: int, phi: float, mean: float, scale: float) -> np.ndarray:
    noise = rng.normal(0, scale, n)
    out = np.empty(n)
    out[0] = noise[0] / math.sqrt(1 - phi**2)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + noise[i]
    return mean + out


def _coverage_on_correlated_intervals(trials: int = 200) -> float:
    rng = np.random.default_rng(6)
    mean_s = 0.004
    covered = 0
    for trial in range(trials):
        series = _ar1(rng, 1000, 0.5, mean_s, 0.0004)
        replicates = stats.rate_replicates([series], 1, seed=trial, resamples=400)
        assert replicates is not None
        low, high = stats.interval(replicates)
        covered += low <= 1 / mean_s <= high
    return covered / trials


def test_blocks_keep_coverage_when_consecutive_batches_are_correlated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AR(1) intervals (phi 0.5): blocks cover; single-batch resampling falls short."""
    with_blocks = _coverage_on_correlated_intervals()
    monkeypatch.setattr(stats, "block_length", lambda n: 1)
    single_batches = _coverage_on_correlated_intervals()

    assert with_blocks >= 0.87
    assert single_batches < 0.85
    assert with_blocks > single_batches


def test_speedup_interval_covers_the_true_ratio() -> None:
    trials, truth = 100, 0.004 / 0.0025
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(trials):
        base = stats.throughput_replicates([rng.gamma(4.0, 0.004 / 4, 400)], 1, seed=2 * trial)
        new = stats.throughput_replicates([rng.gamma(4.0, 0.0025 / 4, 400)], 1, seed=2 * trial + 1)
        assert base is not None and new is not None
        low, high = stats.ratio_interval(new, base)
        covered += low <= truth <= high
    assert 0.88 <= covered / trials <= 0.99
