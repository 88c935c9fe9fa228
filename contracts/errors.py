"""Errors a publisher or subscriber may catch; no dependency beyond the standard library."""

from __future__ import annotations


class PublishFailed(RuntimeError):
    """The broker did not take a message: unroutable, refused, or not confirmed in time."""


class QueueMissing(LookupError):
    """The requests queue does not exist: no worker has declared it yet."""
