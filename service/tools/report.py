"""``benchmark-worker report PATH``: one self-contained HTML page about a finished workload.

PATH is a ``result.json`` or the workload directory holding it. The page has the comparison
table (the same rows as ``submit --wait``), a chart of throughput per instance, throughput over
the timed window, the latency distribution of both models (a CDF from ``latency_quantiles_ms``,
else bars of the reported percentiles), the sweep (table, best points, throughput against batch
size), latency against throughput (sweep points and the server scenario's search), and every
step's figures. No scripts, fonts, styles or images are fetched: the charts are inline SVG.
Fields a worker version does not report are left out, and figures this page does not know are
still listed with the step they belong to.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from contracts import FinishEvent
from service.engine.run_dirs import RESULT_FILE
from service.tools.summary import ROLE_LABELS, ROLES, comparison_rows, step_figures

REPORT_FILE = "report.html"
COLORS = {"input_model": "#3b6ea8", "optimized_model": "#e07b24"}
STRAGGLER_COLOR = "#b8b8b8"
MODES = ("performance", "accuracy")

# Step fields shown in their own place, or too long to list as a figure.
_SHOWN_ELSEWHERE = {
    "per_instance", "command", "commands", "log_paths", "inputs", "outputs", "latency_percentiles",
    "config_path", "benchmark_script", "mode", "model_path", "latency_quantiles_ms",
    "throughput_timeline",
}  # fmt: skip
_PERCENTILE_KEY = re.compile(r"^latency_ms_p(\d+)$")


def load_result(path: Path) -> tuple[FinishEvent, Path]:
    """The finish event in ``path`` (a result.json, or a workload directory), and its file."""
    file = path / RESULT_FILE if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = " (did the workload finish successfully? see its logs)" if path.is_dir() else ""
        raise ValueError(f"no {RESULT_FILE} at {file}{hint}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror}") from None
    try:
        return FinishEvent.model_validate_json(text), file
    except ValidationError as exc:
        raise ValueError(f"{file} is not a benchmark result: {exc.errors()[0]['msg']}") from None


def write_report(path: Path, output: Path | None = None) -> Path:
    """Render the report of ``path`` to ``output`` (default: report.html beside the result)."""
    finish, file = load_result(path)
    target = output or file.with_name(REPORT_FILE)
    target.write_text(render_report(finish, source=str(file)), encoding="utf-8")
    return target


def render_report(finish: FinishEvent, source: str = "") -> str:
    """The whole HTML page for one finish event."""
    data = finish.data.model_dump()
    title = f"Benchmark {data.get('id') or ''}"
    parts = [f"<h1>{_e(title)}</h1>", _meta(data, source)]
    if not finish.ok:
        parts.append(
            f'<p class="failed">Failed at <b>{_e(data.get("step"))}</b>: '
            f"{_e(data.get('message'))}</p>"
        )
    else:
        parts += [
            _verdict(data.get("verdict")),
            "<h2>Input model versus optimized model</h2>",
            _comparison_table(data),
            "<h2>Throughput per instance</h2>",
            _throughput_chart(data),
            _timeline_section(data),
            "<h2>Latency distribution</h2>",
            _latency_cdf_chart(data) or _latency_chart(data),
            _sweep_section(data),
            _capacity_section(data),
            _steps(data),
            _fingerprint(data.get("fingerprint")),
        ]
    body = "\n".join(part for part in parts if part)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:64rem;
padding:0 1rem;color:#222;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem}
h3{font-size:1rem;margin-top:1.5rem}
table{border-collapse:collapse;margin:.5rem 0}
th,td{padding:.25rem .7rem;border-bottom:1px solid #ddd;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left}
td.text{text-align:left}
.meta{color:#555}.failed{color:#a00}.better{color:#17802d}.worse{color:#b3261e}
.verdict{border-left:4px solid #3b6ea8;background:#f3f6fa;padding:.5rem 1rem}
code{font-size:.85em;word-break:break-all}
.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em}
svg{max-width:100%;height:auto}
svg text{font-family:inherit;font-size:12px;fill:#222}
""".strip()


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _meta(data: Mapping[str, Any], source: str) -> str:
    items = []
    node = data.get("node")
    if isinstance(node, Mapping):
        where = f"{node.get('hostname', '?')}, CPUs {node.get('cpus', '?')}"
        if node.get("cpu_model"):
            where += f" ({node['cpu_model']})"
        items.append(f"node {where}")
    if data.get("run_id"):
        items.append(f"run {data['run_id']}")
    versions = {
        str(step.get("tensorflow_version"))
        for role in ROLES
        for mode in MODES
        if (step := step_figures(data, role, mode)).get("tensorflow_version")
    }
    if versions:
        items.append("TensorFlow " + ", ".join(sorted(versions)))
    if source:
        items.append(f"from {source}")
    return f'<p class="meta">{_e(" · ".join(items))}</p>'


def _verdict(verdict: Any) -> str:
    """The worker's verdict: status with reasons and warnings, any other shape as fields."""
    if verdict is None:
        return ""
    if isinstance(verdict, Mapping) and "status" in verdict:
        status = str(verdict["status"])
        css = "better" if status == "valid" else "worse"
        parts = [f'<div class="verdict" id="verdict"><h2>Verdict: <span class="{css}">'
                 f"{_e(status)}</span></h2>"]  # fmt: skip
        for key, title in (("reasons", "Reasons"), ("warnings", "Warnings")):
            items = verdict.get(key) or []
            if items:
                parts.append(
                    f"<p><b>{title}</b></p><ul>{''.join(_verdict_item(i) for i in items)}</ul>"
                )
        thresholds = verdict.get("thresholds")
        if isinstance(thresholds, Mapping):
            parts.append(f"<details><summary>thresholds</summary>{_fields(thresholds)}</details>")
        return "".join(parts) + "</div>"
    if isinstance(verdict, Mapping):
        rows = "".join(
            f"<tr><th>{_e(key)}</th><td class='text'>{_e(_plain(value))}</td></tr>"
            for key, value in verdict.items()
        )
        return f'<div class="verdict" id="verdict"><h2>Verdict</h2><table>{rows}</table></div>'
    return f'<div class="verdict" id="verdict"><h2>Verdict</h2><p>{_e(verdict)}</p></div>'


def _verdict_item(item: Any) -> str:
    if not isinstance(item, Mapping):
        return f"<li>{_e(item)}</li>"
    step = f"{item['step']}: " if item.get("step") else ""
    code = f" <code>{_e(item['code'])}</code>" if item.get("code") else ""
    return f"<li>{_e(step)}{_e(item.get('message', ''))}{code}</li>"


def _fields(mapping: Mapping[str, Any], prefix: str = "") -> str:
    """A key/value table of a nested mapping, flattened to dotted keys."""
    rows = []
    for key, value in _flatten(mapping, prefix):
        rows.append(f"<tr><th>{_e(key)}</th><td class='text'>{_e(_plain(value))}</td></tr>")
    return f"<table class='fields'>{''.join(rows)}</table>"


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out += _flatten(value, name + ".")
        elif value is not None:
            out.append((name, value))
    return out


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple) and all(_number(v) is not None for v in value):
        return "[" + ", ".join(f"{v:.6g}" for v in value) + "]"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _comparison_table(data: Mapping[str, Any]) -> str:
    """The comparison rows; each cell carries its raw value in ``data-value``."""
    head = (
        "<tr><th></th>"
        + "".join(f"<th>{_e(ROLE_LABELS[role])}</th>" for role in ROLES)
        + "<th>change</th></tr>"
    )
    rows = []
    for row in comparison_rows(data):
        cells = []
        for role, text in zip(ROLES, row.cells(), strict=True):
            value = getattr(row, role)
            raw = "" if value is None else repr(value)
            cells.append(f'<td data-role="{role}" data-value="{raw}">{_e(text)}</td>')
        improved = row.improved()
        css = "" if improved is None else ("better" if improved else "worse")
        raw_change = "" if row.change is None else repr(row.change)
        cells.append(
            f'<td data-role="change" data-value="{raw_change}" class="{css}">'
            f"{_e(row.change_text())}</td>"
        )
        rows.append(f'<tr data-key="{row.key}"><th>{_e(row.label)}</th>{"".join(cells)}</tr>')
    interval = data.get("speedup_ci95")
    ci = ""
    if isinstance(interval, list | tuple) and len(interval) == 2:
        low, high = (_number(v) for v in interval)
        if low is not None and high is not None:
            ci = f' <span id="speedup-ci">Speedup 95% interval: [{low:.3f}, {high:.3f}].</span>'
    note = (
        "<p class='meta'>change: optimized/input for throughput (the speedup) and latency; "
        f"optimized − input for accuracy (the accuracy delta).{ci}</p>"
    )
    return f'<table id="comparison">{head}{"".join(rows)}</table>{note}'


def _legend(roles: Iterable[str]) -> str:
    spans = "".join(
        f'<span style="background:{COLORS[role]}"></span>{_e(ROLE_LABELS[role])}' for role in roles
    )
    return f'<p class="legend">{spans}</p>'


def _nice_max(value: float) -> float:
    """A round axis maximum at or above ``value`` (1, 1.2, 1.5, 2... 10 times a power of ten)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def _ticks(top: float, count: int = 5) -> list[float]:
    return [top * i / count for i in range(count + 1)]


def _fmt_tick(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _throughput_chart(data: Mapping[str, Any]) -> str:
    """Horizontal bars: each instance's throughput, grouped by model; stragglers in grey."""
    bars: list[tuple[str, str, float, bool]] = []
    for role in ROLES:
        for number, instance in enumerate(
            step_figures(data, role, "performance").get("per_instance") or []
        ):
            value = _number(instance.get("throughput_samples_per_s"))
            if value is None:
                continue
            cpus = instance.get("cpus_planned") or instance.get("cpus") or []
            label = f"{ROLE_LABELS[role]} #{instance.get('instance', number)}"
            if cpus:
                label += f" (CPU {_cpu_text(cpus)})"
            bars.append((role, label, value, bool(instance.get("straggler"))))
    if not bars:
        return "<p class='meta'>No per-instance figures in this result.</p>"
    top = _nice_max(max(value for _, _, value, _ in bars))
    label_w, plot_w, bar_h, gap = 220, 440, 20, 6
    height = len(bars) * (bar_h + gap) + 50
    parts = [_svg_open(label_w + plot_w + 90, height, "throughput-chart",
                       "Throughput per instance, samples per second")]  # fmt: skip
    for tick in _ticks(top):
        x = label_w + plot_w * tick / top
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 30}" stroke="#e4e4e4"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{height - 14}" text-anchor="middle">{_fmt_tick(tick)}</text>'
        )
    for index, (role, label, value, straggler) in enumerate(bars):
        y = index * (bar_h + gap) + 4
        width = plot_w * value / top
        color = STRAGGLER_COLOR if straggler else COLORS[role]
        note = " (straggler)" if straggler else ""
        baseline = y + bar_h * 0.7
        parts.append(
            f'<text x="{label_w - 8}" y="{baseline:.1f}" text-anchor="end">{_e(label)}</text>'
        )
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{width:.1f}" height="{bar_h}" fill="{color}" '
            f'data-role="{role}" data-value="{value!r}"><title>{_e(label)}: '
            f"{value:,.1f} samples/s{note}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + width + 6:.1f}" y="{baseline:.1f}">{value:,.1f}{note}</text>'
        )
    parts.append(f'<text x="{label_w + plot_w + 12}" y="{height - 24}">samples/s</text>')
    parts.append("</svg>")
    roles = [role for role in ROLES if any(b[0] == role for b in bars)]
    return _legend(roles) + "".join(parts)  # fmt: skip


def _cpu_text(cpus: Sequence[Any]) -> str:
    return ",".join(str(c) for c in cpus)


def latency_points(step: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(label, ms) of a performance step: mean, then percentiles ascending.

    Uses the ``latency_percentiles`` list when the worker reports one, else the
    ``latency_ms_pNN`` fields (``p999`` is the 99.9th percentile).
    """
    points: dict[float, float] = {}
    for entry in step.get("latency_percentiles") or []:
        if isinstance(entry, Mapping):
            pct, value = _number(entry.get("percentile")), _number(entry.get("value_ms"))
            if pct is not None and value is not None:
                points[pct] = value
    for key, value in step.items():
        match = _PERCENTILE_KEY.match(key)
        number = _number(value)
        if match and number is not None:
            digits = match.group(1)
            pct = float(digits[:2] + ("." + digits[2:] if len(digits) > 2 else ""))
            points.setdefault(pct, number)
    out = []
    mean = _number(step.get("latency_ms_mean", step.get("latency_ms")))
    if mean is not None:
        out.append(("mean", mean))
    out += [(f"p{pct:g}", points[pct]) for pct in sorted(points)]
    return out


def _latency_chart(data: Mapping[str, Any]) -> str:
    """Grouped bars: mean and each percentile, both models side by side."""
    series = {role: dict(latency_points(step_figures(data, role, "performance"))) for role in ROLES}
    series = {role: points for role, points in series.items() if points}
    if not series:
        return "<p class='meta'>No latency figures in this result.</p>"
    labels: list[str] = []
    for points in series.values():
        labels += [label for label in points if label not in labels]
    labels.sort(key=lambda label: -1.0 if label == "mean" else float(label[1:]))
    top = _nice_max(max(v for points in series.values() for v in points.values()))
    left, plot_h, group_w, bar_w = 60, 220, 110, 36
    width = left + group_w * len(labels) + 20
    height = plot_h + 50
    parts = [_svg_open(width, height, "latency-chart", "Latency by percentile, milliseconds")]
    for tick in _ticks(top):
        y = 10 + plot_h - plot_h * tick / top
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(tick)}</text>'
        )
    for index, label in enumerate(labels):
        x0 = left + index * group_w + (group_w - bar_w * len(series)) / 2
        for offset, (role, points) in enumerate(series.items()):
            if label not in points:
                continue
            value = points[label]
            bar_h = plot_h * value / top
            x, y = x0 + offset * bar_w, 10 + plot_h - bar_h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 4}" height="{bar_h:.1f}" '
                f'fill="{COLORS[role]}" data-role="{role}" data-label="{label}" '
                f'data-value="{value!r}"><title>{_e(ROLE_LABELS[role])} {label}: '
                f"{value:.4g} ms</title></rect>"
            )
            parts.append(
                f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{y - 3:.1f}" text-anchor="middle" '
                f'font-size="10">{value:.3g}</text>'
            )
        center = left + index * group_w + group_w / 2
        parts.append(
            f'<text x="{center:.1f}" y="{plot_h + 28}" text-anchor="middle">{label}</text>'
        )
    parts.append(f'<text x="12" y="{10 + plot_h / 2}" transform="rotate(-90 12 {10 + plot_h / 2})" '
                 'text-anchor="middle">ms</text>')  # fmt: skip
    parts.append("</svg>")
    return _legend(series) + "".join(parts)


class _Point(NamedTuple):
    """One plotted point in axis units; ``value_x`` is the shown x when the axis is by position."""

    x: float
    y: float
    tip: str
    hollow: bool = False
    value_x: float | None = None


@dataclass(frozen=True)
class _Series:
    """One model's line (or markers) in a chart."""

    role: str
    label: str
    points: tuple[_Point, ...]
    dash: str = ""
    joined: bool = True
    marker: str = "circle"  # or "square", or "" for none
    whiskers: tuple[tuple[float, float, float], ...] = ()  # (x, low, high) in axis units


@dataclass(frozen=True)
class _Axis:
    """An axis from ``low`` to ``top``, its (value, label) ticks and its title with the unit."""

    title: str
    top: float
    ticks: tuple[tuple[float, str], ...]
    low: float = 0.0


@dataclass(frozen=True)
class _Rule:
    """A horizontal dashed line across the plot (a target)."""

    y: float
    label: str


_DASHES = ("", "7 4", "2 3", "9 3 2 3")
_PLOT_LEFT, _PLOT_TOP, _PLOT_W, _PLOT_H = 74, 14, 560, 250


def _nice_step(span: float, count: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 times a power of ten) giving about ``count`` steps."""
    raw = span / count
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))


def _linear_axis(title: str, values: Iterable[float], from_zero: bool = True) -> _Axis:
    """An axis over ``values`` with round ticks; from 0 unless told otherwise and the values
    sit far from it (their minimum above a quarter of their maximum)."""
    numbers = list(values)
    high = max(numbers, default=0.0)
    if high <= 0:
        return _Axis(title, 1.0, tuple((t / 5, _fmt_tick(t / 5)) for t in range(6)))
    low = min(numbers) if not from_zero and min(numbers) > high / 4 else 0.0
    step = _nice_step(high - low if high > low else high)
    low = math.floor(low / step + 1e-9) * step
    count = max(1, math.ceil((high - low) / step - 1e-9))
    ticks = tuple((low + i * step, _fmt_tick(low + i * step)) for i in range(count + 1))
    return _Axis(title, low + count * step, ticks, low)


def _plot(
    element_id: str,
    label: str,
    series: Sequence[_Series],
    x: _Axis,
    y: _Axis,
    rules: Sequence[_Rule] = (),
) -> str:
    """An x/y chart: grid, ticks, axis titles, each series' line and markers, and a legend."""
    left, top, plot_w, plot_h = _PLOT_LEFT, _PLOT_TOP, _PLOT_W, _PLOT_H
    legend_rows = math.ceil((len(series) + len(rules)) / 2)
    width, bottom = left + plot_w + 40, top + plot_h
    height = bottom + 52 + 20 * legend_rows

    def px(value: float) -> float:
        return left + plot_w * (max(x.low, min(value, x.top)) - x.low) / (x.top - x.low)

    def py(value: float) -> float:
        return bottom - plot_h * (max(y.low, min(value, y.top)) - y.low) / (y.top - y.low)

    parts = [_svg_open(width, height, element_id, label)]
    for value, text in y.ticks:
        parts.append(f'<line x1="{left}" y1="{py(value):.1f}" x2="{left + plot_w}" '
                     f'y2="{py(value):.1f}" stroke="#e4e4e4"/>')  # fmt: skip
        parts.append(f'<text x="{left - 6}" y="{py(value) + 4:.1f}" text-anchor="end">'
                     f"{_e(text)}</text>")  # fmt: skip
    for value, text in x.ticks:
        parts.append(f'<line x1="{px(value):.1f}" y1="{bottom}" x2="{px(value):.1f}" '
                     f'y2="{bottom + 5}" stroke="#555"/>')  # fmt: skip
        parts.append(f'<text x="{px(value):.1f}" y="{bottom + 18}" text-anchor="middle">'
                     f"{_e(text)}</text>")  # fmt: skip
    parts.append(f'<path d="M{left} {top}V{bottom}H{left + plot_w}" fill="none" stroke="#555"/>')
    middle = top + plot_h / 2
    parts.append(f'<text x="14" y="{middle}" transform="rotate(-90 14 {middle})" '
                 f'text-anchor="middle" class="axis-title">{_e(y.title)}</text>')  # fmt: skip
    parts.append(f'<text x="{left + plot_w / 2}" y="{bottom + 38}" text-anchor="middle" '
                 f'class="axis-title">{_e(x.title)}</text>')  # fmt: skip
    for rule in rules:
        parts.append(
            f'<line class="rule" x1="{left}" y1="{py(rule.y):.1f}" x2="{left + plot_w}" '
            f'y2="{py(rule.y):.1f}" stroke="#555" stroke-dasharray="6 4" '
            f'data-value="{rule.y!r}"><title>{_e(rule.label)}</title></line>'
        )
    for one in series:
        parts.append(_plot_series(one, px, py))
    entries = [_legend_entry(one.label, COLORS[one.role], one.dash, one.marker) for one in series]
    entries += [_legend_entry(rule.label, "#555", "6 4", "") for rule in rules]
    for index, entry in enumerate(entries):
        ex, ey = left + (plot_w / 2) * (index % 2), bottom + 60 + 20 * (index // 2)
        parts.append(f'<g class="legend-entry" transform="translate({ex:.0f} {ey})">{entry}</g>')
    parts.append("</svg>")
    return "".join(parts)


def _plot_series(
    series: _Series, px: Callable[[float], float], py: Callable[[float], float]
) -> str:
    color = COLORS[series.role]
    dash = f' stroke-dasharray="{series.dash}"' if series.dash else ""
    parts = [f'<g class="series" data-role="{series.role}" data-series="{_e(series.label)}">']
    if series.joined:
        coords = " ".join(f"{px(p.x):.1f},{py(p.y):.1f}" for p in series.points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" '
                     f'stroke-width="2"{dash}/>')  # fmt: skip
    for wx, low, high in series.whiskers:
        parts.append(f'<line class="ci" x1="{px(wx):.1f}" y1="{py(low):.1f}" x2="{px(wx):.1f}" '
                     f'y2="{py(high):.1f}" stroke="{color}" stroke-width="1"/>')  # fmt: skip
    for point in series.points if series.marker else ():
        fill = "#fff" if point.hollow else color
        css = "point hollow" if point.hollow else "point"
        shown_x = point.x if point.value_x is None else point.value_x
        common = (f'class="{css}" fill="{fill}" stroke="{color}" stroke-width="1.5" '
                  f'data-x="{shown_x!r}" data-y="{point.y!r}"')  # fmt: skip
        tip = f"<title>{_e(point.tip)}</title>"
        cx, cy = px(point.x), py(point.y)
        if series.marker == "square":
            parts.append(f'<rect x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8" '
                         f"{common}>{tip}</rect>")  # fmt: skip
        else:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" {common}>{tip}</circle>')
    parts.append("</g>")
    return "".join(parts)


def _legend_entry(label: str, color: str, dash: str, marker: str) -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    shape = {
        "circle": f'<circle cx="14" cy="0" r="3.5" fill="{color}"/>',
        "square": f'<rect x="10" y="-4" width="8" height="8" fill="{color}"/>',
    }.get(marker, "")
    return (f'<line x1="0" y1="0" x2="28" y2="0" stroke="{color}" stroke-width="2"{dashes}/>'
            f'{shape}<text x="36" y="4">{_e(label)}</text>')  # fmt: skip


def _steps_with(data: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    """Each model's performance step that reports ``key``."""
    steps = {role: step_figures(data, role, "performance") for role in ROLES}
    return {role: step for role, step in steps.items() if step.get(key) is not None}


def latency_quantiles(step: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(percent, ms) of ``latency_quantiles_ms``: evenly spaced quantiles from 0% to 100%.

    Empty unless the field is a list of at least two finite numbers.
    """
    values = step.get("latency_quantiles_ms")
    if not isinstance(values, list) or len(values) < 2:
        return []
    numbers = [_number(v) for v in values]
    if any(n is None for n in numbers):
        return []
    last = len(numbers) - 1
    return [(100.0 * i / last, float(n or 0.0)) for i, n in enumerate(numbers)]


def _latency_cdf_chart(data: Mapping[str, Any]) -> str:
    """Each model's latency CDF from its quantiles; "" when no step reports them (older results)."""
    curves = {role: latency_quantiles(step) for role, step in
              _steps_with(data, "latency_quantiles_ms").items()}  # fmt: skip
    curves = {role: curve for role, curve in curves.items() if curve}
    if not curves:
        return ""
    series = [
        _Series(role, ROLE_LABELS[role], tuple(
            _Point(ms, pct, f"{ROLE_LABELS[role]}: {pct:g}% of calls within {ms:.4g} ms")
            for pct, ms in curve), marker="")
        for role, curve in curves.items()
    ]  # fmt: skip
    ms = [ms for curve in curves.values() for _, ms in curve]
    x = _linear_axis("latency (ms)", ms, from_zero=False)
    y = _Axis("calls at or below (%)", 100.0, tuple(
        (pct, f"{pct:g}%") for pct in (0.0, 25.0, 50.0, 75.0, 90.0, 100.0)))  # fmt: skip
    missing = [ROLE_LABELS[role] for role in ROLES if role not in curves
               and step_figures(data, role, "performance")]  # fmt: skip
    note = (f"<p class='meta'>No latency quantiles for the {' and '.join(missing)}.</p>"
            if missing else "")  # fmt: skip
    chart = _plot("latency-cdf-chart", "Latency CDF per model: share of calls against "
                  "latency in milliseconds", series, x, y)  # fmt: skip
    return chart + note


def throughput_timeline(step: Mapping[str, Any]) -> list[tuple[float, float, float]]:
    """(bucket start s, bucket end s, samples/s) of a step's ``throughput_timeline``."""
    timeline = step.get("throughput_timeline")
    if not isinstance(timeline, Mapping):
        return []
    bucket = _number(timeline.get("bucket_s"))
    values = timeline.get("samples_per_s")
    if bucket is None or bucket <= 0 or not isinstance(values, list):
        return []
    return [
        (index * bucket, (index + 1) * bucket, number)
        for index, value in enumerate(values)
        if (number := _number(value)) is not None
    ]


def _timeline_section(data: Mapping[str, Any]) -> str:
    """Throughput per time bucket over the timed window, one line per model."""
    lines = {role: throughput_timeline(step) for role, step in
             _steps_with(data, "throughput_timeline").items()}  # fmt: skip
    lines = {role: line for role, line in lines.items() if line}
    if not lines:
        return ""
    series = [
        _Series(role, ROLE_LABELS[role], tuple(
            _Point((start + end) / 2, value, f"{ROLE_LABELS[role]}, {start:.2f}–{end:.2f} s: "
                   f"{value:,.1f} samples/s") for start, end, value in line),
            marker="circle" if len(line) <= 60 else "")
        for role, line in lines.items()
    ]  # fmt: skip
    x = _linear_axis("time in the timed window (s)", (line[-1][1] for line in lines.values()))
    y = _linear_axis("throughput (samples/s)", (v for line in lines.values() for *_, v in line))
    chart = _plot("throughput-timeline-chart", "Throughput over the timed window, samples per "
                  "second against seconds", series, x, y)  # fmt: skip
    return "<h2>Throughput over the timed window</h2>" + chart


def sweep_points(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The sweep's points (mappings only); empty without a sweep."""
    sweep = data.get("sweep")
    points = sweep.get("points") if isinstance(sweep, Mapping) else None
    return [p for p in points if isinstance(p, Mapping)] if isinstance(points, list) else []


def _layout(point: Mapping[str, Any]) -> str:
    """``2×1``: instances × cores per instance, ``?`` for a part not reported."""
    parts = [point.get("instances"), point.get("cores_per_instance")]
    return "×".join(str(p) if _number(p) is not None else "?" for p in parts)


def _model_figures(point: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    models = point.get("models")
    figures = models.get(role) if isinstance(models, Mapping) else None
    return figures if isinstance(figures, Mapping) else {}


# (batch size, figure, the model's figures at that point) of one model and layout
_SweepLine = list[tuple[float, float, Mapping[str, Any]]]


def _sweep_lines(data: Mapping[str, Any], key: str) -> dict[tuple[str, str], _SweepLine]:
    """(role, layout) → (batch size, figure ``key``, the model's figures), by batch size."""
    lines: dict[tuple[str, str], _SweepLine] = {}
    points = sweep_points(data)
    for role in ROLES:
        for point in points:
            figures = _model_figures(point, role)
            batch, value = _number(point.get("batch_size")), _number(figures.get(key))
            if batch is not None and value is not None and "error" not in point:
                lines.setdefault((role, _layout(point)), []).append((batch, value, figures))
    return {line: sorted(values, key=lambda v: v[0]) for line, values in lines.items()}


def _series_label(role: str, layout: str, layouts: Sequence[str], suffix: str = "") -> str:
    """``input model 2×1``: the layout only when the sweep has several."""
    return ROLE_LABELS[role] + (f" {layout}" if len(layouts) > 1 else "") + suffix


def _sweep_throughput_chart(data: Mapping[str, Any]) -> str:
    """Throughput against batch size: one line per model (and per layout when several)."""
    lines = _sweep_lines(data, "throughput_samples_per_s")
    if not lines:
        return ""
    sizes = sorted({batch for values in lines.values() for batch, _, _ in values})
    position = {batch: index + 0.5 for index, batch in enumerate(sizes)}
    layouts = list(dict.fromkeys(layout for _, layout in lines))
    series = []
    tops: list[float] = []
    for (role, layout), values in lines.items():
        label = _series_label(role, layout, layouts)
        whiskers = []
        for batch, _, figures in values:
            interval = figures.get("throughput_ci95")
            if isinstance(interval, list) and len(interval) == 2:
                low, high = (_number(v) for v in interval)
                if low is not None and high is not None:
                    whiskers.append((position[batch], low, high))
                    tops.append(high)
        tops += [value for _, value, _ in values]
        series.append(_Series(role, label, tuple(
            _Point(position[batch], value, f"{label}, batch {batch:g}: {value:,.1f} samples/s",
                   value_x=batch)
            for batch, value, _ in values), dash=_DASHES[layouts.index(layout) % len(_DASHES)],
            whiskers=tuple(whiskers)))  # fmt: skip
    x = _Axis("batch size (samples per call)", float(len(sizes)),
              tuple((position[b], f"{b:g}") for b in sizes))  # fmt: skip
    y = _linear_axis("throughput (samples/s)", tops)
    return _plot("sweep-throughput-chart", "Throughput against batch size, samples per second, "
                 "one line per model and layout", series, x, y)  # fmt: skip


def server_search(step: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], float | None, float]:
    """The server scenario's search of a step: its trials, target latency and percentile."""
    scenario = step.get("scenario")
    if not isinstance(scenario, Mapping):
        return [], None, 99.0
    trials = scenario.get("search")
    trials = [t for t in trials if isinstance(t, Mapping)] if isinstance(trials, list) else []
    target = _number(scenario.get("target_latency_ms"))
    percentile = _number(scenario.get("target_percentile"))
    return trials, target, 99.0 if percentile is None else percentile


def _capacity_section(data: Mapping[str, Any]) -> str:
    """Latency percentile against throughput: the sweep's p99 and the server search's trials."""
    series: list[_Series] = []
    firm: list[float] = []  # latencies that decide the scale: not the overloaded trials
    lines = _sweep_lines(data, "throughput_samples_per_s")
    layouts = list(dict.fromkeys(layout for _, layout in lines))
    for (role, layout), values in lines.items():
        label = _series_label(role, layout, layouts, " sweep")
        points = []
        for batch, throughput, figures in values:
            p99 = _number(figures.get("latency_ms_p99"))
            if p99 is not None:
                points.append(_Point(throughput, p99, f"{label}, batch {batch:g}: "
                                     f"{throughput:,.1f} samples/s, p99 {p99:.4g} ms"))  # fmt: skip
                firm.append(p99)
        if points:  # along throughput: the curve a capacity planner reads
            series.append(_Series(role, label, tuple(sorted(points)),
                                  dash=_DASHES[layouts.index(layout) % len(_DASHES)]))  # fmt: skip
    targets: dict[float, float] = {}
    for role in ROLES:
        trials, target, percentile = server_search(step_figures(data, role, "performance"))
        if target is not None:
            targets[target] = percentile
            firm.append(target)
        points = []
        for trial in trials:
            rate = _number(trial.get("achieved_qps"))
            rate = _number(trial.get("target_qps")) if rate is None else rate
            latency = _number(trial.get("latency_ms_at_percentile"))
            if rate is None or latency is None:
                continue
            valid = trial.get("valid") is not False
            firm += [latency] if valid else []
            state = "valid" if valid else "INVALID"
            points.append(_Point(rate, latency, f"{ROLE_LABELS[role]} server at {rate:,.1f} "
                                 f"queries/s: p{percentile:g} {latency:.4g} ms, {state}",
                                 hollow=not valid))  # fmt: skip
        if points:
            series.append(_Series(role, f"{ROLE_LABELS[role]} server search (queries/s)",
                                  tuple(sorted(points)), dash="2 3", marker="square"))  # fmt: skip
    if not series:
        return ""
    ys = [p.y for s in series for p in s.points]
    top = min(max(ys), 3 * max(firm)) if firm else max(ys)
    x = _linear_axis("throughput (samples/s; server search: queries/s)",
                     (p.x for s in series for p in s.points))  # fmt: skip
    pcts = sorted(set(targets.values()))
    y_title = "latency p99 (ms)" if pcts in ([], [99.0]) else "latency percentile (ms)"
    y = _linear_axis(y_title, [max([top, *targets])])
    rules = [_Rule(t, f"target p{pct:g} ≤ {t:g} ms") for t, pct in sorted(targets.items())]
    chart = _plot("latency-throughput-chart", "Latency percentile against throughput, "
                  "milliseconds against samples per second", series, x, y, rules)  # fmt: skip
    note = ("<p class='meta'>Hollow squares: server rates whose latency missed the target "
            "(invalid). Points above the plot are drawn at its top edge.</p>")  # fmt: skip
    return "<h2>Latency against throughput</h2>" + chart + note


def _sweep_section(data: Mapping[str, Any]) -> str:
    """The sweep: its table, the best point of each model, throughput against batch size."""
    if not sweep_points(data):
        return ""
    return ("<h2>Sweep</h2>" + _sweep_best(data) + _sweep_table(data)
            + _sweep_throughput_chart(data))  # fmt: skip


def _fixed(value: Any, fmt: str) -> str:
    number = _number(value)
    return "-" if number is None else fmt.format(number)


def _sweep_table(data: Mapping[str, Any]) -> str:
    """Points × models: throughput, p50, p99 and verdict of each model, and the speedup."""
    head = ("<tr><th>batch</th><th>layout</th>"
            + "".join(f"<th>{_e(ROLE_LABELS[r])} samples/s</th><th>p50 (ms)</th>"
                      f"<th>p99 (ms)</th><th>verdict</th>" for r in ROLES)
            + "<th>speedup</th></tr>")  # fmt: skip
    rows = []
    for point in sweep_points(data):
        main = " (main)" if point.get("main") is True else ""
        cells = [f"<td>{_e(point.get('batch_size', '?'))}</td>",
                 f"<td class='text'>{_e(_layout(point))}{main}</td>"]  # fmt: skip
        if point.get("error"):
            cells.append(f"<td class='text failed' colspan='{4 * len(ROLES) + 1}'>failed: "
                         f"{_e(point['error'])}</td>")  # fmt: skip
        else:
            for role in ROLES:
                cells += _sweep_cells(_model_figures(point, role))
            cells.append(_speedup_cell(point))
        rows.append(f"<tr class='sweep-point'>{''.join(cells)}</tr>")
    return f'<table id="sweep-table">{head}{"".join(rows)}</table>'


def _speedup_cell(point: Mapping[str, Any]) -> str:
    """The point's speedup, its 95% interval (when reported) as the cell's tooltip."""
    interval = point.get("speedup_ci95")
    title = ""
    if isinstance(interval, list) and len(interval) == 2:
        low, high = (_number(v) for v in interval)
        if low is not None and high is not None:
            title = f' title="95% interval [{low:.3f}, {high:.3f}]"'
    return f"<td{title}>{_fixed(point.get('speedup'), '×{:.2f}')}</td>"


def _sweep_cells(figures: Mapping[str, Any]) -> list[str]:
    if figures.get("error"):
        return [f"<td class='text failed' colspan='4'>failed: {_e(figures['error'])}</td>"]
    verdict = figures.get("verdict")
    status = verdict.get("status") if isinstance(verdict, Mapping) else None
    return [f"<td>{_fixed(figures.get('throughput_samples_per_s'), '{:,.1f}')}</td>",
            f"<td>{_fixed(figures.get('latency_ms_p50'), '{:.3f}')}</td>",
            f"<td>{_fixed(figures.get('latency_ms_p99'), '{:.3f}')}</td>",
            f"<td class='text'>{_e(status or '-')}</td>"]  # fmt: skip


# (key in best, what it is, (figure, format) in order of preference): the sweep reports the
# mean latency where a window was too short for a p99
_BEST = (
    ("by_throughput", "highest throughput", (("throughput_samples_per_s", "{:,.1f} samples/s"),)),
    ("by_latency", "lowest latency", (("latency_ms_p99", "p99 {:.3f} ms"),
                                      ("latency_ms", "mean {:.3f} ms"))),
)  # fmt: skip


def _sweep_best(data: Mapping[str, Any]) -> str:
    """Each model's best point: the highest throughput, and the lowest p99 (or mean) latency."""
    sweep = data.get("sweep")
    best = sweep.get("best") if isinstance(sweep, Mapping) else None
    if not isinstance(best, Mapping):
        return ""
    items = []
    for role in ROLES:
        entry = best.get(role)
        if not isinstance(entry, Mapping):
            continue
        found = [text for key, what, figures in _BEST
                 if (text := _best_text(entry.get(key), what, figures))]  # fmt: skip
        if found:
            items.append(f"<li data-role='{role}'><b>{_e(ROLE_LABELS[role])}</b>: "
                         f"{'; '.join(found)}</li>")  # fmt: skip
    return f'<ul id="sweep-best">{"".join(items)}</ul>' if items else ""


def _best_text(point: Any, what: str, figures: Sequence[tuple[str, str]]) -> str:
    """``highest throughput 1,500.0 samples/s at batch 8, 2×1``; "" without a figure."""
    if not isinstance(point, Mapping):
        return ""
    for figure, fmt in figures:
        if _number(point.get(figure)) is not None:
            where = f"batch {point.get('batch_size', '?')}, {_layout(point)}"
            return f"{what} {_fixed(point[figure], fmt)} at {_e(where)}"
    return ""


def _svg_open(width: float, height: float, element_id: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{element_id}" role="img" '
        f'aria-label="{_e(label)}" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">'
    )


def _fingerprint(fingerprint: Any) -> str:
    """The machine and software the result was measured on, when the worker reports it."""
    if not isinstance(fingerprint, Mapping) or not fingerprint:
        return ""
    return f'<h2>Fingerprint</h2><div id="fingerprint">{_fields(fingerprint)}</div>'


def _steps(data: Mapping[str, Any]) -> str:
    """Each step's figures (whatever it reports), its instances and its command."""
    parts = ["<h2>Steps</h2>"]
    for role in ROLES:
        for mode in MODES:
            step = step_figures(data, role, mode)
            if not step:
                continue
            parts.append(f'<h3 id="{role}-{mode}">{_e(ROLE_LABELS[role])} · {_e(mode)}</h3>')
            parts.append(
                f"<p class='meta'>{_e(step.get('model_path'))} ({_e(step.get('precision'))})</p>"
            )
            step_verdict = step.get("verdict")
            if isinstance(step_verdict, Mapping) and "status" in step_verdict:
                items = [*step_verdict.get("reasons", []), *step_verdict.get("warnings", [])]
                parts.append(
                    f"<p>verdict: <b>{_e(step_verdict['status'])}</b></p>"
                    + (f"<ul>{''.join(_verdict_item(i) for i in items)}</ul>" if items else "")
                )
            figures = {
                k: v for k, v in step.items() if k not in _SHOWN_ELSEWHERE and k != "verdict"
            }
            if isinstance(figures.get("scenario"), Mapping):  # its search has its own chart
                figures["scenario"] = {
                    k: v for k, v in figures["scenario"].items() if k != "search"
                }
            parts.append(_fields(figures).replace("class='fields'", "class='figures'", 1))
            parts.append(_instances_table(step.get("per_instance") or []))
            if step.get("command"):
                parts.append(f"<p>command: <code>{_e(step['command'])}</code></p>")
    return "\n".join(parts)


_INSTANCE_COLUMNS = (
    ("instance", "instance"), ("pid", "pid"), ("cpus_planned", "CPUs planned"),
    ("cpus_observed", "CPUs observed"), ("iterations", "iterations"),
    ("throughput_samples_per_s", "samples/s"), ("latency_ms_mean", "latency mean (ms)"),
    ("load_time_s", "load (s)"), ("peak_rss_bytes", "peak RSS (MiB)"), ("straggler", "straggler"),
)  # fmt: skip


def _instances_table(instances: Sequence[Mapping[str, Any]]) -> str:
    if not instances:
        return ""
    head = "".join(f"<th>{_e(title)}</th>" for _, title in _INSTANCE_COLUMNS)
    rows = []
    for instance in instances:
        cells = []
        for key, _ in _INSTANCE_COLUMNS:
            value = instance.get(key)
            number = _number(value)
            if key == "peak_rss_bytes" and number is not None:
                value = f"{number / 2**20:,.0f}"
            elif isinstance(value, list):
                value = _cpu_text(value)
            elif isinstance(value, float):
                value = f"{value:,.4g}" if key != "throughput_samples_per_s" else f"{value:,.1f}"
            elif isinstance(value, bool):
                value = "yes" if value else ""
            cells.append(f"<td>{_e(value)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table class='instances'><tr>{head}</tr>{''.join(rows)}</table>"
