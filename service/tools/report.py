"""``benchmark-worker report PATH``: one self-contained HTML page about a finished workload.

PATH is a ``result.json`` or the workload directory holding it. The page has the comparison
table (the same rows as ``submit --wait``), a chart of throughput per instance, a chart of the
latency distribution of both models, and every step's figures. No scripts, fonts, styles or
images are fetched: the charts are inline SVG. Fields a worker version does not report are
left out, and figures this page does not know are still listed with the step they belong to.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

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
    "config_path", "benchmark_script", "mode", "model_path",
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
            "<h2>Latency distribution</h2>",
            _latency_chart(data),
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
