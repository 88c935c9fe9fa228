"""Finding a RabbitMQ broker for the demo and the tests, the same way both times.

Order: ``AMQP_URL``; a broker already listening on localhost:5672; a throw-away container via
testcontainers where a Docker engine answers; a local ``rabbitmq-server`` started detached;
otherwise an error that says how to get one. ``python -m service.tools.devbroker`` prints the URL.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

from service.errors import ServiceError

LOCAL_URL = "amqp://guest:guest@localhost:5672/"
HOW_TO_GET_ONE = (
    "no RabbitMQ broker found. Set AMQP_URL to a broker's URL, or start one on localhost:5672 "
    "(Debian/Ubuntu: 'apt-get install rabbitmq-server && rabbitmq-server -detached'; with "
    "Docker: 'docker run -d -p 5672:5672 rabbitmq:3-management')"
)


class NoBrokerError(ServiceError, RuntimeError):
    pass


@dataclass
class BrokerHandle:
    url: str
    how: str
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()


def speaks_amqp(url: str, timeout_s: float = 2.0) -> bool:
    """True when something at the URL's host and port answers the AMQP 0-9-1 header."""
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "localhost", parsed.port or 5672), timeout_s
        ) as sock:
            sock.settimeout(timeout_s)
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return sock.recv(1) == b"\x01"  # the frame type of connection.start
    except OSError:
        return False


def find_broker(start_timeout_s: float = 90.0) -> BrokerHandle:
    env_url = os.environ.get("AMQP_URL")
    if env_url:
        if not speaks_amqp(env_url):
            raise NoBrokerError(f"AMQP_URL is set but nothing answers AMQP at {_safe(env_url)}")
        return BrokerHandle(env_url, "AMQP_URL")
    if speaks_amqp(LOCAL_URL):
        return BrokerHandle(LOCAL_URL, "localhost:5672")
    if _docker_engine_answers():
        return _start_container()
    if shutil.which("rabbitmq-server"):
        return _start_local_server(start_timeout_s)
    raise NoBrokerError(HOW_TO_GET_ONE)


def _safe(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 5672}"


def _docker_engine_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _start_container() -> BrokerHandle:
    from testcontainers.rabbitmq import RabbitMqContainer

    container = RabbitMqContainer("rabbitmq:3.13-management")
    container.start()
    host = container.get_container_host_ip()
    port = container.get_exposed_port(container.port)
    url = f"amqp://{container.username}:{container.password}@{host}:{port}/"
    return BrokerHandle(url, "testcontainers", container.stop)


def _start_local_server(timeout_s: float) -> BrokerHandle:
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, check=False)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if speaks_amqp(LOCAL_URL):
            return BrokerHandle(LOCAL_URL, "started local rabbitmq-server")
        time.sleep(1.0)
    raise NoBrokerError(f"started rabbitmq-server but it did not answer within {timeout_s:g} s")


if __name__ == "__main__":
    try:
        handle = find_broker()
    except NoBrokerError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print(handle.url)
    print(f"broker: {handle.how}", file=sys.stderr)
