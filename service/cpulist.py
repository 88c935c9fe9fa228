"""Linux cpu-list strings (``"0-3,8"``), as in ``taskset -c`` and ``/proc/*/status``.

No TensorFlow here: the worker and the runner both use it.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse_cpu_list(text: str) -> list[int]:
    """Parse ``"0-3,8"`` into ``[0, 1, 2, 3, 8]`` (sorted, without duplicates).

    Raises ``ValueError`` naming the bad part.
    """
    cpus: set[int] = set()
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty cpu list")
    for part in stripped.split(","):
        cpus.update(_parse_part(part.strip(), text))
    return sorted(cpus)


def _parse_part(part: str, text: str) -> range:
    low_text, dash, high_text = part.partition("-")
    try:
        low = int(low_text)
        high = int(high_text) if dash else low
    except ValueError:
        raise ValueError(f"bad cpu list {text!r}: {part!r} is not N or N-M") from None
    if low < 0 or high < low:
        raise ValueError(f"bad cpu list {text!r}: {part!r} is not a valid range")
    return range(low, high + 1)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """Format cpus as a compact list: ``[0, 1, 2, 3, 8]`` -> ``"0-3,8"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    index = 0
    while index < len(ordered):
        end = index
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        low, high = ordered[index], ordered[end]
        parts.append(str(low) if low == high else f"{low}-{high}")
        index = end + 1
    return ",".join(parts)
