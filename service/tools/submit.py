"""``benchmark-worker submit``: publish a request with the contracts' client, follow its events.

On a terminal, ``--wait`` shows live progress per step and then the comparison table; piped
(or with ``--json``) it prints each event as one JSON line. The exit code is the finish's: 0 for
success, 1 for an error finish or no finish within ``--timeout``.
"""

from __future__ import annotations

import sys
import time
from contextlib import AbstractAsyncContextManager
from typing import Any, TextIO

import structlog
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from contracts import AnyEvent, BenchmarkRequest, FinishEvent, ProgressEvent, StartEvent
from contracts.client import BenchmarkClient, PublishFailed
from service.config import Settings
from service.tools.summary import (
    ROLE_LABELS,
    SWEEP_HEADERS,
    best_point_lines,
    comparison_rows,
    point_layout,
    step_figures,
    sweep_cells,
)

log = structlog.get_logger()

EXIT_OK, EXIT_FAILED = 0, 1


def _client(settings: Settings) -> AbstractAsyncContextManager[BenchmarkClient]:
    """A connected client with the worker's names and queue arguments (an async context)."""
    broker = settings.broker
    return BenchmarkClient.connect(
        broker.url.get_secret_value(),
        requests_queue=broker.requests_queue,
        events_exchange=broker.events_exchange,
        control_exchange=broker.control_exchange,
        publish_timeout_s=broker.publish_timeout_s,
        create_missing_queue=True,
        dead_letter_exchange=broker.dead_letter_exchange,
        delivery_limit=broker.delivery_limit,
    )


async def submit(
    request: BenchmarkRequest,
    settings: Settings,
    wait: bool,
    timeout_s: float,
    json_lines: bool = False,
    stdout: TextIO | None = None,
) -> int:
    """Publish ``request`` (confirmed, persistent, mandatory); with ``wait``, follow it.

    The event queue is bound before the request is published, so no event can be missed.
    ``json_lines`` (or a stdout that is not a terminal) prints one JSON line per event instead
    of the progress display. Returns the exit code.
    """
    out = sys.stdout if stdout is None else stdout
    human = not json_lines and out.isatty()
    async with _client(settings) as client:
        if not wait:
            await client.publish(request)
            log.info("request_submitted", workload_id=request.id, queue=client.requests_queue)
            if human:
                Console(file=out).print(
                    f"submitted [bold]{request.id}[/] to {client.requests_queue}"
                )
            return EXIT_OK
        async with await client.submit(request) as stream:
            view: _View = _Terminal(request, client.requests_queue, out) if human else _Lines(out)
            try:
                with view:
                    finish = await stream.wait(timeout_s, on_event=view.show)
            except TimeoutError:
                print(
                    f"no benchmark_finish for {request.id} within {timeout_s:g} s", file=sys.stderr
                )
                return EXIT_FAILED
    view.conclude(finish)
    return EXIT_OK if finish.ok else EXIT_FAILED


class _View:
    """How events are shown: a context manager around the wait."""

    def __enter__(self) -> _View:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, event: AnyEvent) -> None:
        raise NotImplementedError

    def conclude(self, finish: FinishEvent) -> None:
        return None


class _Lines(_View):
    """Piped: each event as one JSON line, flushed at once (``jq``, ``tee`` and scripts)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def show(self, event: AnyEvent) -> None:
        self._out.write(event.to_body().decode() + "\n")
        self._out.flush()


class _Terminal(_View):
    """A terminal: a progress bar named after the running step, then the comparison table."""

    def __init__(self, request: BenchmarkRequest, queue: str, out: TextIO) -> None:
        self._steps = [f"{role} · {mode}" for role, _, mode in request.steps()]
        self._console = Console(file=out, highlight=False)
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            console=self._console,
        )
        self._task: TaskID | None = None
        self._queue = queue
        self._request_id = request.id
        self._step_started = time.monotonic()
        self._seen_points: set[tuple[object, str, str]] = set()

    def __enter__(self) -> _Terminal:
        self._console.print(f"submitted [bold]{self._request_id}[/] to {self._queue}")
        self._progress.start()
        self._task = self._progress.add_task("waiting for a worker", total=len(self._steps))
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def show(self, event: AnyEvent) -> None:
        assert self._task is not None
        if isinstance(event, StartEvent):
            node = event.data.node
            where = f" on {node.hostname} (CPUs {node.cpus})" if node else ""
            self._console.print(f"started{where}")
            self._step_started = time.monotonic()
            self._progress.update(self._task, description=self._steps[0])
        elif isinstance(event, ProgressEvent):
            done = event.data.current_step
            now = time.monotonic()
            self._progress.update(self._task, total=event.data.number_of_steps)
            data = event.data.model_dump()
            name = self._steps[done - 1] if done <= len(self._steps) else f"step {done}"
            figure = _step_headline(data, done, self._steps)
            if done > len(self._steps):  # a sweep point: name the one that is new
                name, figure = self._new_sweep_point(data)
            self._console.print(
                f"[green]✓[/] {name}  {figure}  [dim]{now - self._step_started:.1f} s[/]"
            )
            self._step_started = now
            following = self._steps[done] if done < len(self._steps) else "finishing"
            self._progress.update(self._task, completed=done, description=following)
        elif isinstance(event, FinishEvent):
            self._progress.update(self._task, description="done" if event.ok else "failed")

    def conclude(self, finish: FinishEvent) -> None:
        data = finish.data.model_dump()
        if not finish.ok:
            self._console.print(
                f"[bold red]✗ failed at {data.get('step')}:[/] {data.get('message')}"
            )
            return
        self._console.print(comparison_table(data))
        for line in comparison_notes(data):
            self._console.print(line)
        rows = sweep_cells(data)
        if rows:
            table = Table(title="sweep", title_justify="left")
            for header in SWEEP_HEADERS:
                table.add_column(header, justify="right")
            for row in rows:
                table.add_row(*row)
            self._console.print(table)
            for line in best_point_lines(data):
                self._console.print(line)

    def _new_sweep_point(self, data: dict[str, Any]) -> tuple[str, str]:
        """The (point, model) of the sweep this progress event is the first to carry."""
        for point in (data.get("sweep") or {}).get("points", []):
            if point.get("main"):  # measured by the ordinary steps, shown already
                continue
            for role, figures in (point.get("models") or {}).items():
                key = (point.get("batch_size"), point_layout(point), role)
                if key in self._seen_points:
                    continue
                self._seen_points.add(key)
                name = f"sweep batch {key[0]}, {key[1]} · {role}"
                if figures.get("error"):
                    return name, f"failed: {figures['error']}"
                tp, p99 = figures.get("throughput_samples_per_s"), figures.get("latency_ms_p99")
                text = f"{tp:,.1f} samples/s" if isinstance(tp, int | float) else ""
                return name, text + (f", p99 {p99:.3f} ms" if isinstance(p99, int | float) else "")
        return "sweep", ""


def _step_headline(data: dict[str, Any], done: int, steps: list[str]) -> str:
    """The figure a finished step measured: throughput and p50, or accuracy."""
    if done > len(steps):
        return ""
    role, mode = steps[done - 1].split(" · ")
    figures = step_figures(data, role, mode)
    if mode == "performance":
        throughput, p50 = figures.get("throughput_samples_per_s"), figures.get("latency_ms_p50")
        text = f"{throughput:,.1f} samples/s" if isinstance(throughput, int | float) else ""
        return text + (f", p50 {p50:.3f} ms" if isinstance(p50, int | float) else "")
    accuracy = figures.get("accuracy", data.get(f"acc_{role}"))
    return f"accuracy {accuracy:.4f}" if isinstance(accuracy, int | float) else ""


def comparison_table(data: dict[str, Any]) -> Table:
    """The rich table of :func:`service.tools.summary.comparison_rows`: input versus optimized."""
    table = Table(title=f"{data.get('id')}: input versus optimized", title_justify="left")
    table.add_column("")
    table.add_column(ROLE_LABELS["input_model"], justify="right")
    table.add_column(ROLE_LABELS["optimized_model"], justify="right")
    table.add_column("change", justify="right")
    for row in comparison_rows(data):
        improved = row.improved()
        style = "" if improved is None else ("green" if improved else "red")
        table.add_row(row.label, *row.cells(), Text(row.change_text(), style=style))
    return table


def comparison_notes(data: dict[str, Any]) -> list[str]:
    """Lines under the table: speedup (with its interval) and accuracy delta, then the verdict."""
    rows = {row.key: row for row in comparison_rows(data)}
    speedup = f"speedup {rows['throughput'].change_text()} (optimized/input throughput"
    interval = data.get("speedup_ci95")
    if isinstance(interval, list) and len(interval) == 2:
        speedup += f"; 95% interval {interval[0]:.3f} to {interval[1]:.3f}"
    lines = [f"{speedup})", f"accuracy delta {rows['accuracy'].change_text()} (optimized - input)"]
    verdict = data.get("verdict")
    if isinstance(verdict, dict) and "status" in verdict:
        style = "green" if verdict["status"] == "valid" else "bold red"
        lines.append(f"verdict: [{style}]{escape(str(verdict['status']))}[/]")
        for kind in ("reasons", "warnings"):
            for item in verdict.get(kind) or []:
                if isinstance(item, dict):
                    where = f"{item['step']}: " if item.get("step") else ""
                    lines.append(f"  {kind[:-1]}: {escape(where + str(item.get('message', '')))}")
    return lines


async def send_cancel(settings: Settings, workload_id: str, reason: str | None) -> int:
    """``benchmark-worker cancel ID``: the client's cancel (the one cancel sender); exit 0 when
    at least one worker's control queue got it, else 1."""
    try:
        async with _client(settings) as client:
            await client.cancel(workload_id, reason)
    except PublishFailed as exc:
        print(
            f"no worker is listening on {settings.broker.control_exchange}: cancel of "
            f"{workload_id} reached nobody (a worker started later will run the request): {exc}",
            file=sys.stderr,
        )
        return 1
    log.info("cancel_sent", workload_id=workload_id, exchange=settings.broker.control_exchange)
    return 0
