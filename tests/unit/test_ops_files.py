"""ops/ and compose.yaml, checked without a Docker engine: they parse, name files that exist,
and agree with what the worker itself declares and expects."""

from __future__ import annotations

import asyncio
import base64
import configparser
import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from service.config import CONSUMER_TIMEOUT_MARGIN_S, BrokerSettings, Settings, load_settings
from service.consumer.broker import declare_topology
from service.cpulist import parse_cpu_list
from service.fleet.control import declare_control_exchange

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    return json.loads((OPS / "rabbitmq" / "definitions.json").read_text())


def rabbitmq_conf() -> dict[str, str]:
    entries = {}
    for line in (OPS / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            entries[key.strip()] = value.strip()
    return entries


def workers(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("worker")}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


# -- compose.yaml -----------------------------------------------------------------------------


def test_compose_names_only_files_that_exist(compose: dict[str, Any]) -> None:
    """Every build context, Dockerfile and bind-mounted file in compose.yaml exists."""
    named = 0
    for service in compose["services"].values():
        if "build" in service:
            context = REPO / service["build"]["context"]
            assert context.is_dir()
            assert (context / service["build"]["dockerfile"]).is_file()
            named += 1
        for source, _ in bind_mounts(service):
            assert (REPO / source).exists(), source
            named += 1
        for volume in service.get("volumes", []):
            name = volume.split(":")[0]
            if not name.startswith((".", "/")):
                assert name in compose["volumes"], f"volume {name} is not declared"
    assert named >= 4


def test_compose_pins_each_worker_to_its_own_cpus(compose: dict[str, Any]) -> None:
    """Each worker replica has a cpuset, passes the same CPUs as --cpus, and shares none."""
    owned: list[set[int]] = []
    for name, service in workers(compose).items():
        command = service["command"]
        cpus = command[command.index("--cpus") + 1]
        assert service["cpuset"] == cpus, name
        owned.append(set(parse_cpu_list(cpus)))
        assert "check" in service["healthcheck"]["test"]
        assert service["restart"] == "on-failure"
    assert len(owned) >= 2
    assert all(a.isdisjoint(b) for i, a in enumerate(owned) for b in owned[i + 1 :])


def test_compose_broker_has_management_ui_config_and_definitions(compose: dict[str, Any]) -> None:
    """RabbitMQ runs with the management UI, our rabbitmq.conf and the definitions it loads."""
    rabbitmq = compose["services"]["rabbitmq"]
    assert rabbitmq["image"].endswith("-management")
    assert any(port.startswith("15672") for port in rabbitmq["ports"])
    targets = {Path(source).name: target for source, target in bind_mounts(rabbitmq)}
    assert targets["rabbitmq.conf"].startswith("/etc/rabbitmq/")
    assert rabbitmq_conf()["load_definitions"] == targets["definitions.json"]


def test_compose_workers_log_in_as_the_user_the_definitions_create(
    compose: dict[str, Any], definitions: dict[str, Any]
) -> None:
    """The definitions replace the default user, so the workers' URL must match a user there."""
    for service in workers(compose).values():
        url = urlparse(service["environment"]["AMQP_URL"])
        (user,) = [u for u in definitions["users"] if u["name"] == url.username]
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert hashlib.sha256(salt + (url.password or "").encode()).digest() == digest
        assert {"user": user["name"], "vhost": "/"}.items() <= definitions["permissions"][0].items()


# -- RabbitMQ definitions and config ----------------------------------------------------------


class RecordingChannel:
    """Records what the worker declares (a stand-in for a channel, not for broker behaviour)."""

    def __init__(self) -> None:
        self.exchanges: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.bindings: set[tuple[str, str, str]] = set()

    async def declare_exchange(self, name: str, type: Any, **options: Any) -> Any:
        self.exchanges[name] = {
            "type": getattr(type, "value", type),
            "durable": options.get("durable", False),
            "auto_delete": options.get("auto_delete", False),
            "internal": options.get("internal", False),
            "arguments": options.get("arguments") or {},
        }
        return _Named(name)

    async def declare_queue(self, name: str, **options: Any) -> Any:
        self.queues[name] = {
            "durable": options.get("durable", False),
            "auto_delete": options.get("auto_delete", False),
            "arguments": options.get("arguments") or {},
        }
        channel = self

        class Queue(_Named):
            async def bind(self, exchange: _Named, routing_key: str = "") -> None:
                channel.bindings.add((exchange.name, self.name, routing_key))

        return Queue(name)


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def test_definitions_declare_exactly_the_topology_the_worker_declares(
    definitions: dict[str, Any],
) -> None:
    """Exchanges, queues (with arguments) and bindings in definitions.json = the worker's own."""
    recorded = RecordingChannel()
    settings = BrokerSettings()

    async def declare() -> None:
        await declare_topology(recorded, settings)  # type: ignore[arg-type]
        await declare_control_exchange(recorded, settings)  # type: ignore[arg-type]

    asyncio.run(declare())
    exchanges = {
        e["name"]: {k: e[k] for k in ("type", "durable", "auto_delete", "internal", "arguments")}
        for e in definitions["exchanges"]
    }
    queues = {
        q["name"]: {k: q[k] for k in ("durable", "auto_delete", "arguments")}
        for q in definitions["queues"]
    }
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]}
    assert exchanges == recorded.exchanges
    assert queues == recorded.queues
    assert bindings == recorded.bindings
    assert {e["vhost"] for e in definitions["exchanges"] + definitions["queues"]} == {"/"}


def test_consumer_timeout_is_above_the_workers_time_limit() -> None:
    """rabbitmq.conf's consumer_timeout exceeds the sample config's time limit plus the margin."""
    consumer_timeout_ms = int(rabbitmq_conf()["consumer_timeout"])
    settings = load_settings(OPS / "worker.yaml", environ={})
    assert consumer_timeout_ms >= (settings.worker.timeout_s + CONSUMER_TIMEOUT_MARGIN_S) * 1000
    assert settings.broker.consumer_timeout_s == consumer_timeout_ms / 1000
    assert consumer_timeout_ms > Settings().worker.timeout_s * 1000


# -- the sample worker config -----------------------------------------------------------------


def test_sample_config_has_every_key_each_with_a_comment() -> None:
    """ops/worker.yaml loads, holds every setting of every section, and comments each one."""
    text = (OPS / "worker.yaml").read_text()
    data = yaml.safe_load(text)
    load_settings(OPS / "worker.yaml", environ={})
    for section, field in Settings.model_fields.items():
        model = field.annotation
        expected = set(model.model_fields)  # type: ignore[union-attr]
        missing, extra = expected - set(data[section]), set(data[section]) - expected
        assert not missing and not extra, (
            f"ops/worker.yaml section {section}: add {sorted(missing)} (each with a comment "
            f"above it), remove {sorted(extra)}"
        )
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s+\w+:", line):
            assert lines[number - 1].lstrip().startswith("#"), f"no comment above: {line}"


# -- Dockerfile and systemd -------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_with_cpu_tensorflow_and_a_healthcheck() -> None:
    """The image is python slim, runs as an unprivileged user and checks itself."""
    text = (OPS / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all("-slim" in base for base in bases)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*benchmark-worker\", \"check", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / source).exists(), source
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "tensorflow-cpu" in pyproject
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!service/" in ignored and "!contracts/" in ignored


def test_systemd_unit_pins_cpus_and_restarts_on_failure() -> None:
    """The template unit pins to its instance's CPUs, passes them as --cpus and restarts."""
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(OPS / "systemd" / "benchmark-worker@.service")
    service = unit["Service"]
    assert service["CPUAffinity"] == "%i"
    argv = shlex.split(service["ExecStart"])
    assert argv[1:3] == ["run", "--config"] and argv[argv.index("--cpus") + 1] == "%i"
    assert service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "0")
    assert service["KillMode"] == "mixed"  # SIGTERM to the worker only: it drains itself
    check = configparser.ConfigParser(interpolation=None, strict=False)
    check.read(OPS / "systemd" / "benchmark-worker-check@.service")
    assert "benchmark-worker check" in check["Service"]["ExecStart"]
    assert (OPS / "systemd" / "benchmark-worker-check@.timer").is_file()
