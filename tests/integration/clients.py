"""Fixtures and helpers of the client and submit tests: a worker, a connection, short requests.

The ``amqp`` and ``worker`` fixtures live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

SHORT_RUN = {"duration_s": 1, "warmup": 2, "min_iterations": 10, "max_duration_s": 2}


def short_request(
    sample_dir: Path, optimized: bool = False, accuracy: bool = False
) -> dict[str, Any]:
    """The sample request with a fresh id and the shortest run that still measures."""
    body = json.loads((sample_dir / "request.json").read_text())
    modes = ["benchmark", "accuracy"] if accuracy else ["benchmark"]
    body["id"] = f"client-{uuid.uuid4().hex[:8]}"
    body["input_model"]["mods"] = modes
    if optimized:
        body["optimized_model"]["mods"] = modes
    else:
        body.pop("optimized_model")
    body["benchmark"] = {**body.get("benchmark", {}), **SHORT_RUN}
    return body
