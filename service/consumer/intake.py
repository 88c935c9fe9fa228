"""Turning a delivered body into a validated request, or a precise reason to dead-letter it."""

from __future__ import annotations

import json
import re
from typing import Any

import structlog
from pydantic import ValidationError

from contracts import BenchmarkRequest, is_routable_id
from service.errors import RejectRequest

log = structlog.get_logger()

JSON_CONTENT_TYPES = ("application/json",)
_MAX_PROBLEMS = 10
_MAX_LOCATION_CHARS = 80
_MAX_PROBLEM_CHARS = 200


def decode_request(
    body: bytes,
    *,
    content_type: str | None,
    content_encoding: str | None,
    max_body_bytes: int,
) -> BenchmarkRequest:
    """Check size, content type, encoding, JSON and schema, in that order (size before parsing)."""
    if len(body) > max_body_bytes:
        raise RejectRequest(
            f"body of {len(body)} bytes exceeds the limit of {max_body_bytes} bytes",
            reason="too_large",
            workload_id=_leading_id(body),
        )
    if content_type and content_type.split(";")[0].strip().lower() not in JSON_CONTENT_TYPES:
        raise RejectRequest(
            f"content type {content_type[:64]!r} is not application/json",
            reason="unsupported_content_type",
            workload_id=_json_id(body) if not content_encoding else None,
        )
    if content_encoding and content_encoding.lower() not in ("utf-8", "utf8", "identity"):
        raise RejectRequest(
            f"content encoding {content_encoding[:64]!r} is not supported; send plain UTF-8",
            reason="unsupported_content_encoding",
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectRequest(
            f"body is not UTF-8 (invalid byte at offset {exc.start})", reason="not_utf8"
        ) from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RejectRequest(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            reason="malformed_json",
        ) from None
    except RecursionError:
        raise RejectRequest(
            "body is nested too deeply to be a request", reason="malformed_json"
        ) from None
    if not isinstance(data, dict):
        raise RejectRequest(
            f"body must be a JSON object, not {type(data).__name__}", reason="schema_invalid"
        )
    workload_id = _routable_id(data)
    try:  # strict: JSON types as the schema says them ("4" is not a batch size)
        return BenchmarkRequest.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise RejectRequest(
            f"invalid request: {describe_validation_error(exc)}",
            reason="schema_invalid",
            workload_id=workload_id,
        ) from None
    except RecursionError:
        raise RejectRequest(
            "body is nested too deeply to be a request",
            reason="schema_invalid",
            workload_id=workload_id,
        ) from None


def decide(
    body: bytes,
    *,
    content_type: str | None,
    content_encoding: str | None,
    max_body_bytes: int,
) -> BenchmarkRequest | RejectRequest:
    """Exactly one decision for any delivery: the valid request, or the reason to reject it.

    Never raises: an unexpected error while checking a body (a bug in the worker) is a
    rejection too, logged with its traceback, so one odd message can never stall a worker.
    """
    try:
        return decode_request(
            body,
            content_type=content_type,
            content_encoding=content_encoding,
            max_body_bytes=max_body_bytes,
        )
    except RejectRequest as exc:
        return exc
    except Exception as exc:
        log.exception("intake_failed", error_type=type(exc).__name__)
        return RejectRequest(
            f"the worker could not check this body ({type(exc).__name__}); it was "
            "dead-lettered, and the worker's log has the details",
            reason="intake_error",
        )


_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*"([A-Za-z0-9_-]{1,128})"')


def _leading_id(body: bytes) -> str | None:
    """The id of an oversized body, read without parsing it: only when ``"id"`` is its first
    key (the first 200 bytes are looked at, never the rest)."""
    found = _LEADING_ID.match(body[:200])
    return found.group(1).decode() if found else None


def _json_id(body: bytes) -> str | None:
    """The routable id of a body (within the size limit) sent under another content type."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _routable_id(data)


def _routable_id(data: Any) -> str | None:
    """The body's ``id`` when it can go into a routing key (an error finish can be sent)."""
    value = data.get("id") if isinstance(data, dict) else None
    return value if is_routable_id(value) else None


def describe_validation_error(exc: ValidationError) -> str:
    """Field paths and messages, never the offending values (they could be huge or secret).

    Bounded: at most 10 problems of 200 characters each, however large the body was (a field
    name or a value quoted in a message is cut short).
    """
    errors = exc.errors(include_input=False, include_url=False, include_context=False)
    problems = []
    for error in errors[:_MAX_PROBLEMS]:
        where = ".".join(_shorten(str(part), _MAX_LOCATION_CHARS) for part in error["loc"])
        problems.append(_shorten(f"{where or 'body'}: {error['msg']}", _MAX_PROBLEM_CHARS))
    more = len(errors) - _MAX_PROBLEMS
    if more > 0:
        problems.append(f"and {more} more")
    return "; ".join(problems)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
