"""Turning a delivered body into a validated request, or a precise reason to dead-letter it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from contracts import BenchmarkRequest, is_routable_id
from service.errors import RejectRequest

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
        )
    if content_type and content_type.split(";")[0].strip().lower() not in JSON_CONTENT_TYPES:
        raise RejectRequest(
            f"content type {content_type[:64]!r} is not application/json",
            reason="unsupported_content_type",
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
    if not isinstance(data, dict):
        raise RejectRequest(
            f"body must be a JSON object, not {type(data).__name__}", reason="schema_invalid"
        )
    workload_id = data.get("id") if is_routable_id(data.get("id")) else None
    try:
        return BenchmarkRequest.model_validate(data)
    except ValidationError as exc:
        raise RejectRequest(
            f"invalid request: {describe_validation_error(exc)}",
            reason="schema_invalid",
            workload_id=workload_id,
        ) from None


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
