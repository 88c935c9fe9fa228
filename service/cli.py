"""``benchmark-worker``: run | check | cancel | bench | submit | schema | report | sample-models
| plan."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from contracts import BenchmarkRequest, FinishEvent, ProgressEvent, StartEvent, error_finish
from service.config import Settings, load_settings
from service.consumer.intake import describe_validation_error
from service.errors import ConfigError
from service.executor.planner import PlanError, plan_instances
from service.executor.topology import CpuTopology, TopologyError
from service.logs import configure_logging

log = structlog.get_logger()

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmark-worker", description="Benchmark TensorFlow models from a RabbitMQ queue."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    run = verbs.add_parser("run", help="consume requests and publish events until SIGTERM")
    _add_worker_options(run)
    run.add_argument("--amqp-url", help="broker URL (default: $AMQP_URL or localhost)")
    run.add_argument("--worker-id", help="this worker's id on its host (default: from --cpus)")

    check = verbs.add_parser("check", help="exit 0 when the worker on this node is consuming")
    _add_worker_options(check)
    check.add_argument("--worker-id", help="the worker's id, as given to run")

    cancel = verbs.add_parser("cancel", help="cancel a workload, running or still queued")
    cancel.add_argument("workload_id", help="the request's id")
    cancel.add_argument("--reason", help="why (logged by the worker, in the finish)")
    cancel.add_argument("--config", type=Path, help="worker config YAML (exchange names, URL)")
    cancel.add_argument("--amqp-url", help="broker URL (default: $AMQP_URL or localhost)")

    bench = verbs.add_parser("bench", help="run one request locally; events as JSON lines")
    bench.add_argument("request", type=Path, help="request JSON file")
    _add_worker_options(bench)

    submit = verbs.add_parser("submit", help="publish a request; --wait follows its events")
    submit.add_argument("request", type=Path, help="request JSON file")
    submit.add_argument("--wait", action="store_true", help="print events until the finish")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait (--wait)")
    submit.add_argument("--config", type=Path, help="worker config YAML (queue names, URL)")
    submit.add_argument("--amqp-url", help="broker URL (default: $AMQP_URL or localhost)")
    submit.add_argument(
        "--json", action="store_true", help="JSON lines even on a terminal (the default when piped)"
    )

    schema = verbs.add_parser("schema", help="write the JSON Schemas and the AsyncAPI document")
    schema.add_argument("directory", type=Path, help="where to write them (contracts/schemas)")

    report = verbs.add_parser("report", help="an HTML page comparing the two models of a result")
    report.add_argument("path", type=Path, help="a result.json or a workload directory")
    report.add_argument(
        "-o", "--output", type=Path, help="HTML file to write (default: report.html beside it)"
    )

    samples = verbs.add_parser("sample-models", help="write a small real model pair and request")
    samples.add_argument("directory", type=Path)
    samples.add_argument(
        "--train-seconds",
        type=float,
        default=30.0,
        help="cap on training time (it stops after a fixed number of epochs, ~2 s)",
    )

    plan = verbs.add_parser("plan", help="print the CPU plan for N instances × M cores as JSON")
    plan.add_argument("--instances", type=int)
    plan.add_argument("--cores-per-instance", type=int)
    plan.add_argument("--cpus", help="CPUs the worker may use, e.g. 0-3,8")
    return parser


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="worker config YAML")
    parser.add_argument(
        "--allowed-root", type=Path, action="append", dest="allowed_roots",
        help="directory model/dataset/workspace paths must lie in (repeatable)",
    )  # fmt: skip
    parser.add_argument("--workspace", type=Path, help="default workspace directory")
    parser.add_argument("--cpus", help="CPUs this worker may use, e.g. 0-3,8 (default: all)")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    worker = {
        "allowed_roots": tuple(getattr(args, "allowed_roots", None) or ()) or None,
        "workspace": getattr(args, "workspace", None),
        "cpus": getattr(args, "cpus", None),
    }
    return settings.with_overrides(
        worker=worker,
        broker={"url": getattr(args, "amqp_url", None)},
        node={"worker_id": getattr(args, "worker_id", None)},
    )


def _topology(settings: Settings) -> CpuTopology:
    from service.cpulist import parse_cpu_list

    allowed = parse_cpu_list(settings.worker.cpus) if settings.worker.cpus else None
    return CpuTopology.from_system(allowed)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ConfigError, TopologyError, PlanError, ValueError) as exc:
        print(f"benchmark-worker {args.verb}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.verb == "sample-models":
        # imports TensorFlow: never in the worker process
        from service.tools.samples import write_sample_models

        print(write_sample_models(args.directory, train_seconds=args.train_seconds))
        return EXIT_OK
    if args.verb == "schema":
        from service.tools.asyncapi import write_schemas

        for path in write_schemas(args.directory):
            print(path)
        return EXIT_OK
    if args.verb == "report":
        from service.tools.report import write_report

        print(write_report(args.path, args.output))
        return EXIT_OK
    if args.verb == "plan":
        from service.cpulist import parse_cpu_list

        topology = CpuTopology.from_system(parse_cpu_list(args.cpus) if args.cpus else None)
        plan = plan_instances(topology, args.instances, args.cores_per_instance)
        print(json.dumps(plan.to_dict(), indent=2))
        return EXIT_OK
    settings = _settings(args)
    configure_logging(settings.logging.level, settings.logging.json_output)
    if args.verb == "run":
        return asyncio.run(_run(settings))
    if args.verb == "bench":
        return _bench_file(args.request, settings)
    if args.verb == "check":
        from service.fleet.health import run_check
        from service.fleet.member import heartbeat_path

        path = heartbeat_path(settings, _topology(settings).cpu_ids)
        return run_check(path, settings.health.stale_after_s)
    if args.verb == "cancel":
        from service.tools.submit import send_cancel

        return asyncio.run(send_cancel(settings, args.workload_id, args.reason))
    if args.verb == "submit":
        from service.tools.submit import submit

        request = read_request(args.request)
        return asyncio.run(submit(request, settings, args.wait, args.timeout, args.json))
    raise AssertionError(args.verb)


def read_request(path: Path) -> BenchmarkRequest:
    """A request file, validated; errors name the file and the fields."""
    from pydantic import ValidationError

    try:
        return BenchmarkRequest.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"cannot read request file {path}: {exc.strerror}") from None
    except ValidationError as exc:
        raise ValueError(
            f"{path} is not a valid request: {describe_validation_error(exc)}"
        ) from None


async def _run(settings: Settings) -> int:
    from service.consumer.worker import Worker

    worker = Worker(settings, _topology(settings))
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    await worker.run()
    return worker.exit_code  # non-zero when the broker dropped its consumer for good


def _print_event(event: StartEvent | ProgressEvent | FinishEvent) -> None:
    sys.stdout.write(event.to_body().decode() + "\n")
    sys.stdout.flush()


def _bench_file(path: Path, settings: Settings) -> int:
    """``bench``: an unreadable file is a usage error (2); a request the worker would reject
    is an error finish at step ``validate`` (exit 1), as over the broker."""
    from service.consumer.intake import decode_request
    from service.errors import RejectRequest

    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read request file {path}: {exc.strerror}") from None
    try:
        request = decode_request(
            body,
            content_type=None,
            content_encoding=None,
            max_body_bytes=settings.worker.max_body_bytes,
        )
    except RejectRequest as exc:
        _print_event(error_finish(exc.workload_id, f"{path}: {exc}", "validate"))
        return EXIT_FAILED
    return asyncio.run(_bench(request, settings))


async def _bench(request: BenchmarkRequest, settings: Settings) -> int:
    from service.engine.workload import run_workload

    async def emit(event: StartEvent | ProgressEvent) -> None:
        _print_event(event)

    from service.executor.launch import make_pool

    run_id = uuid.uuid4().hex[:12]
    topology = _topology(settings)
    pool = make_pool(settings, len(topology.cpu_ids))  # one TensorFlow start per CPU set
    try:
        finish = await run_workload(request, settings, topology, emit, run_id, pool=pool)
    finally:
        if pool is not None:
            await pool.close()
    _print_event(finish)
    fields: dict[str, Any] = finish.data.model_dump(
        exclude={"execution_details"}, exclude_none=True
    )
    log.info("request_completed", status=finish.status, **fields)
    return EXIT_OK if finish.ok else EXIT_FAILED
