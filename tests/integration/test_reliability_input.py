"""Hostile input over the real broker: bad bodies and paths that escape the allowed roots."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from contracts import FinishEvent, StartEvent
from tests.integration.bus import dead_letter_messages, dead_letters, wait_for_consumer
from tests.integration.reliability import (
    configure,
    launch_worker,
    publish_json,
    short_request,
    subscribe,
)

pytestmark = [pytest.mark.broker]

MAX_BODY_BYTES = 4096
MAX_MESSAGE_CHARS = 2000


@pytest.fixture
async def worker(worker_config: Path, names: dict[str, str], amqp):
    configure(worker_config, worker={"max_body_bytes": MAX_BODY_BYTES})
    process = launch_worker(worker_config)
    try:
        await wait_for_consumer(amqp, names["requests_queue"])
        yield process
    finally:
        assert process.terminate() == 0, process.stderr_path.read_text()[-2000:]


def _bad_bodies(sample_dir: Path) -> list[tuple[str, bytes, dict[str, Any], str | None]]:
    """(case, body, message properties, id expected in an error finish or None)."""
    routable = f"bad-{uuid.uuid4().hex[:8]}"
    huge = f"huge-{uuid.uuid4().hex[:8]}"
    good_shape = short_request(sample_dir)
    schema_invalid = {"id": routable, "input_model": {"path": "x.pb"}}
    unbounded = {
        "id": huge,
        "input_model": {"precision": "fp32", "path": "x.pb", "mods": ["M" * 1500]},
        "Z" * 1500: 1,
    }
    oversized = {**good_shape, "id": f"big-{routable}", "padding": "P" * MAX_BODY_BYTES}
    plain = {**good_shape, "id": f"plain-{routable}"}
    unroutable = {**good_shape, "id": "a.b.#"}
    nested_mode = {"id": f"mode-{routable}", "input_model": {"path": "/m.pb",
                   "precision": "fp32", "mods": [["benchmark"]]}}  # fmt: skip
    object_path = {"id": f"path-{routable}", "input_model": {"path": {"x": 1}, "precision": "fp32"}}
    return [
        ("malformed_json", b'{"id": "broken", ', {}, None),
        ("not_utf8", b'{"id": "\xff\xfe"}', {}, None),
        ("content_type", json.dumps(plain).encode(), {"content_type": "text/plain"}, plain["id"]),
        ("encoding", json.dumps(good_shape).encode(), {"content_encoding": "gzip"}, None),
        ("too_large", json.dumps(oversized).encode(), {}, oversized["id"]),
        ("not_an_object", b"[1, 2, 3]", {}, None),
        ("unroutable_id", json.dumps(unroutable).encode(), {}, None),
        ("schema_invalid", json.dumps(schema_invalid).encode(), {}, routable),
        ("unbounded_echo", json.dumps(unbounded).encode(), {}, huge),
        # 95 bytes that used to raise TypeError past the consumer and stall it
        ("nested_mode", json.dumps(nested_mode).encode(), {}, nested_mode["id"]),
        ("object_path", json.dumps(object_path).encode(), {}, object_path["id"]),
        ("deep_nesting", b'{"id": "deep", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}", {}, None),
    ]


def routable_case(bad: list[tuple[str, bytes, dict[str, Any], str | None]]) -> str:
    return next(case_id for case, *_, case_id in bad if case == "schema_invalid" and case_id)


@pytest.mark.tensorflow
async def test_bad_bodies_are_dead_lettered_unchanged_and_the_worker_carries_on(
    amqp, amqp_url: str, worker, names: dict[str, str], sample_dir: Path
) -> None:
    """Every bad body lands unchanged in the dead letters; an id-bearing one gets a bounded
    error finish naming the field; nothing else is published; a good request then succeeds."""
    bad = _bad_bodies(sample_dir)
    good = short_request(sample_dir)
    async with subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events:
        for _, body, properties, _ in bad:
            await publish_json(amqp_url, names["requests_queue"], body, **properties)
        await publish_json(amqp_url, names["requests_queue"], good)
        await events.until(lambda e: isinstance(e, FinishEvent) and e.workload_id == good["id"])
        await events.settle(quiet_s=0.5)

    finishes = {e.workload_id: e for e in events.events if isinstance(e, FinishEvent)}
    expected_errors = {case_id for *_, case_id in bad if case_id is not None}
    assert set(finishes) == expected_errors | {good["id"]}
    assert finishes[good["id"]].status == "success"
    for case_id in expected_errors:
        finish = finishes[case_id]
        assert finish.status == "error" and finish.data.step == "validate"
        assert len(finish.data.message) < MAX_MESSAGE_CHARS, finish.data.message
        assert "M" * 300 not in finish.data.message and "Z" * 300 not in finish.data.message
    assert "input_model.precision" in finishes[routable_case(bad)].data.message
    assert not any(isinstance(e, StartEvent) for e in events.events if e.workload_id != good["id"])

    dead = await dead_letter_messages(await amqp.channel(), names["dead_letter_queue"], len(bad))
    assert sorted(body for body, _ in dead) == sorted(body for _, body, _, _ in bad)
    reasons = sorted(headers["x-reject-reason"] for _, headers in dead)
    expected_reasons = sorted(
        ["malformed_json", "not_utf8", "unsupported_content_type",
         "unsupported_content_encoding", "too_large", "malformed_json",
         "schema_invalid", "schema_invalid", "schema_invalid", "schema_invalid",
         "schema_invalid", "schema_invalid"]
    )  # fmt: skip
    assert reasons == expected_reasons
    started = next(line for line in worker.log_lines() if line.get("event") == "worker_started")
    for _, headers in dead:  # the reason travels with the body, the worker is named
        assert headers["x-rejected-by"] == started["node_id"]
        assert headers["x-original-queue"] == names["requests_queue"]
        assert 0 < len(headers["x-reject-message"]) <= 1000
        assert "P" * 100 not in headers["x-reject-message"]
    encoding = next(h for b, h in dead if h["x-reject-reason"] == "unsupported_content_encoding")
    assert "gzip" in encoding["x-reject-message"]

    rejected = [line for line in worker.log_lines() if line.get("event") == "request_rejected"]
    assert sorted(line["reason"] for line in rejected) == expected_reasons
    too_large = next(line for line in rejected if line["reason"] == "too_large")
    assert too_large["body_bytes"] > MAX_BODY_BYTES
    for line in rejected:
        assert len(json.dumps(line)) < MAX_MESSAGE_CHARS + 500, line
    log_text = worker.stderr_path.read_text()
    assert "P" * 100 not in log_text and "M" * 300 not in log_text and "Z" * 300 not in log_text


async def test_paths_escaping_the_allowed_roots_are_refused_before_anything_is_opened(
    amqp_url: str, worker, names: dict[str, str], tmp_path: Path, sample_dir: Path
) -> None:
    """Symlinked files and directories, ``..`` and look-alike prefixes that resolve outside the
    roots end in an error finish naming the path and the rule; no runner starts and the
    target (a FIFO, which any open would block on) is never opened."""
    workspace = tmp_path / "workspace"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "secret.pb"
    os.mkfifo(target)
    (workspace / "escape.pb").symlink_to(target)
    (workspace / "linked").symlink_to(outside, target_is_directory=True)
    look_alike = tmp_path / "workspace-evil"
    look_alike.mkdir()
    (look_alike / "model.pb").write_bytes(b"not a model")

    cases: dict[str, dict[str, Any]] = {}
    for label, path in [
        ("file symlink", workspace / "escape.pb"),
        ("directory symlink", workspace / "linked" / "secret.pb"),
        ("dot-dot", workspace / ".." / "outside" / "secret.pb"),
        ("look-alike prefix", look_alike / "model.pb"),
    ]:
        request = short_request(sample_dir)
        request["input_model"]["path"] = str(path)
        cases[label] = request
    dataset = short_request(sample_dir)
    dataset["input_model"]["mods"] = ["accuracy"]
    dataset["benchmark"]["dataset"] = str(workspace / "escape.pb")
    cases["dataset symlink"] = dataset
    elsewhere = short_request(sample_dir)
    elsewhere["workspace_path"] = str(workspace / "linked")
    cases["workspace symlink"] = elsewhere

    async with subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events:
        for request in cases.values():
            await publish_json(amqp_url, names["requests_queue"], request)
        ids = {request["id"] for request in cases.values()}
        seen: set[str] = set()
        while seen != ids:
            event = await events.until(lambda e: isinstance(e, FinishEvent), timeout_s=60)
            seen.add(event.workload_id)

    assert not any(isinstance(e, StartEvent) for e in events.events)
    finishes = {e.workload_id: e for e in events.events}
    for label, request in cases.items():
        finish = finishes[request["id"]]
        assert finish.status == "error" and finish.data.step == "validate", label
        message = finish.data.message
        assert "outside the worker's allowed roots" in message, (label, message)
        raw = request["benchmark"].get("dataset") if label == "dataset symlink" else None
        raw = raw or request.get("workspace_path") or request["input_model"]["path"]
        assert raw in message, (label, message)
    with pytest.raises(OSError):  # ENXIO: nobody holds the FIFO open for reading
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK))
    assert not (workspace / "workloads").exists()  # refused before any directory was made


@pytest.mark.tensorflow
async def test_a_flood_of_bad_bodies_opens_the_reject_lane_and_valid_requests_still_run_once(
    amqp, amqp_url: str, worker, names: dict[str, str], sample_dir: Path
) -> None:
    """A backlog of bad bodies is dead-lettered through the reject lane; valid requests in the
    middle of it (one benchmark, one quick failure right behind it) are each answered exactly
    once, and every bad body is dead-lettered."""
    benchmark = short_request(sample_dir)
    quick = short_request(sample_dir)
    quick["input_model"]["path"] = str(sample_dir / "missing.pb")  # a quick error finish
    bad = [b'{"id": "flood-%d", ' % n for n in range(120)]
    backlog = [*bad[:60], json.dumps(benchmark).encode(), json.dumps(quick).encode(), *bad[60:]]
    async with subscribe(amqp_url, names["events_exchange"], binding="benchmark.#") as events:
        worker.process.send_signal(signal.SIGSTOP)  # the flood arrives as a backlog
        try:
            for body in backlog:
                await publish_json(amqp_url, names["requests_queue"], body)
        finally:
            worker.process.send_signal(signal.SIGCONT)
        finishes = {}
        while len(finishes) < 2:
            finish = await events.until_finish(timeout_s=120)
            finishes[finish.workload_id] = finish
        dead = await dead_letters(await amqp.channel(), names["dead_letter_queue"], len(bad))
        await events.settle(quiet_s=1)

    assert sorted(e.workload_id for e in events.events if isinstance(e, FinishEvent)) == sorted(
        [benchmark["id"], quick["id"]]
    )
    assert finishes[benchmark["id"]].status == "success"
    assert "not found" in finishes[quick["id"]].data.message
    assert sorted(dead) == sorted(bad)
    lines = worker.log_lines()
    assert "reject_lane_opened" in [line.get("event") for line in lines]
    handed_back = [
        line["workload_id"] for line in lines if line.get("event") == "request_returned_to_queue"
    ]
    assert len(handed_back) == len(set(handed_back)) <= 2  # each at most once, never a loop
