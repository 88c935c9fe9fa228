"""The worker's exception hierarchy; each class carries the broker decision it leads to."""

from __future__ import annotations

from contracts.errors import PublishFailed as ContractsPublishFailed


class ServiceError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(ServiceError):
    """Bad configuration: the worker refuses to start (exit code 2)."""


class RejectRequest(ServiceError):
    """The request can never succeed as sent: dead-letter it, never retry.

    ``workload_id`` is set when the body named a routable id, so an error finish can be sent.
    """

    def __init__(
        self, message: str, *, reason: str, workload_id: str | None = None, step: str = "validate"
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.workload_id = workload_id
        self.step = step  # the step named in the error finish


class StepFailed(ServiceError):
    """A benchmark step failed: ack the request and publish an error finish naming the step."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


class PublishFailed(ServiceError, ContractsPublishFailed):
    """An event could not be confirmed by the broker: do not ack; the request is retried.

    The client's :class:`contracts.errors.PublishFailed` too: one name for one failure."""


class DeliveryLost(ServiceError):
    """The broker no longer holds the delivery this worker answers (connection dropped, e.g. a
    partition): publish nothing for it; the broker has handed it to another delivery."""
