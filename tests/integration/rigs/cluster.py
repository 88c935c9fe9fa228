"""A local three-node RabbitMQ cluster for fault tests, beside the system broker.

``RabbitCluster`` starts extra nodes (``bwtest1@localhost`` ... by default) of the installed
``rabbitmq-server`` as child processes of the test, each with its own AMQP port, Erlang
distribution port, config file, mnesia and log directories under a caller's base directory,
and one Erlang cookie of their own. Nodes 2 and 3 join node 1 with ``join_cluster``. Nothing
of the system broker (``rabbit@localhost``, its cookie, its config files) is read or changed;
the nodes only register with the machine's ``epmd`` like any Erlang node.

Why not ``/usr/sbin/rabbitmq-server``: on Debian that is a wrapper which, for root, re-runs the
real script as the ``rabbitmq`` user with ``HOME=/var/lib/rabbitmq``, that is with the system
broker's cookie. The rig runs the real scripts beside it (``/usr/lib/rabbitmq/bin``) and points
``HOME`` at a directory of its own holding ``.erlang.cookie`` (mode 0400), for the nodes and for
every ``rabbitmqctl`` call alike. ``RABBITMQ_CONF_ENV_FILE`` and ``RABBITMQ_CONFIG_FILE`` point
at the rig's own files, so ``/etc/rabbitmq/rabbitmq-env.conf`` (``NODENAME=rabbit@localhost``)
and ``/etc/rabbitmq/rabbitmq.conf`` (listener on 5672) are never read.

``rabbit_cluster_fixture`` is the generator behind the module-scoped ``rabbit_cluster`` fixture;
a conftest can import either.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

log = logging.getLogger(__name__)

DEFAULT_NODES = ("bwtest1@localhost", "bwtest2@localhost", "bwtest3@localhost")
DEFAULT_FIRST_AMQP_PORT = 5701
DIST_PORT_OFFSET = 20000  # RabbitMQ's own rule: distribution port = AMQP port + 20000
PORT_SEARCH_SPAN = 200
LOOPBACK = "127.0.0.1"
EPMD_PORT = 4369
# Where Debian and Ubuntu keep the real scripts behind the /usr/sbin wrappers.
DEBIAN_SCRIPTS = Path("/usr/lib/rabbitmq/bin")
WRAPPER_NAME = "rabbitmq-script-wrapper"
# Environment of the caller that must not leak into the nodes or their CLI calls.
FOREIGN_ENV_PREFIXES = ("RABBITMQ_", "ERL_")
RABBITMQ_MISSING = (
    "rabbitmq-server and rabbitmqctl not found (looked in: {looked}); the cluster tests start "
    "nodes of their own. Install RabbitMQ ('apt-get install rabbitmq-server') or set "
    "RABBITMQ_SCRIPTS_DIR to the directory of its real rabbitmq-server and rabbitmqctl."
)


class RigError(RuntimeError):
    """The cluster could not be started, driven or stopped as asked."""


class RabbitMissingError(RigError):
    """No usable RabbitMQ installation."""


@dataclass(frozen=True)
class RabbitInstall:
    """The directory of the real ``rabbitmq-server``, ``rabbitmqctl`` and ``rabbitmq-queues``."""

    scripts: Path

    @property
    def server(self) -> Path:
        return self.scripts / "rabbitmq-server"

    @property
    def ctl(self) -> Path:
        return self.scripts / "rabbitmqctl"

    @property
    def queues(self) -> Path:
        return self.scripts / "rabbitmq-queues"


def find_rabbitmq(scripts_dir: str | Path | None = None) -> RabbitInstall:
    """The real RabbitMQ scripts: ``scripts_dir``, ``RABBITMQ_SCRIPTS_DIR``, PATH, Debian's.

    A ``rabbitmq-server`` on PATH that is Debian's wrapper (it switches to the ``rabbitmq`` user
    and its HOME) is replaced by the real script in the wrapper's directory.
    """
    candidates: list[Path] = []
    explicit = scripts_dir or os.environ.get("RABBITMQ_SCRIPTS_DIR")
    if explicit:
        candidates.append(Path(explicit))
    else:
        on_path = shutil.which("rabbitmq-server")
        if on_path:
            resolved = Path(on_path).resolve()
            # The wrapper lives beside links to the real scripts; a real script is its own dir.
            candidates.append(
                resolved.parent if resolved.name == WRAPPER_NAME else Path(on_path).parent
            )
        candidates.append(DEBIAN_SCRIPTS)
    for directory in candidates:
        install = RabbitInstall(directory)
        usable = all(os.access(p, os.X_OK) for p in (install.server, install.ctl))
        if usable and install.server.resolve().name != WRAPPER_NAME:
            return install
    looked = ", ".join(str(directory) for directory in candidates)
    raise RabbitMissingError(RABBITMQ_MISSING.format(looked=looked))


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_free_port(start: int, taken: set[int], span: int = PORT_SEARCH_SPAN) -> int:
    """The first free port from ``start`` on that is not in ``taken`` (which it joins)."""
    for port in range(start, min(start + span, 65536)):
        if port not in taken and port_is_free(port):
            taken.add(port)
            return port
    raise RigError(f"no free port in {start}-{start + span - 1}")


def port_open(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout_s):
            return True
    except OSError:
        return False


def epmd_names(port: int = EPMD_PORT) -> dict[str, int]:
    """Node names (short, without host) registered with this machine's epmd, and their ports.

    Empty when no epmd runs. The NAMES_REQ of the epmd protocol: a 2-byte length, ``n``.
    """
    try:
        with socket.create_connection((LOOPBACK, port), 2.0) as sock:
            sock.sendall(b"\x00\x01n")
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return {}
    names = {}
    for line in b"".join(chunks)[4:].decode(errors="replace").splitlines():
        parts = line.split()  # "name bwtest1 at port 25701"
        if len(parts) == 5 and parts[0] == "name":
            names[parts[1]] = int(parts[4])
    return names


def write_cookie(home: Path) -> str:
    """The Erlang cookie in ``home/.erlang.cookie`` (mode 0400): the existing one, or a new one.

    It must exist before any ``erl`` runs with this HOME: Erlang writes a random cookie of its
    own into a HOME without one.
    """
    home.mkdir(parents=True, exist_ok=True)
    path = home / ".erlang.cookie"
    if path.exists():
        return path.read_text().strip()
    cookie = secrets.token_hex(20).upper()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(cookie)
    return cookie


def session_pids(session: int) -> list[int]:
    """Every live process of the session ``session`` (Linux /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After "pid (comm)": state ppid pgrp session ...; zombies are already dead.
        if int(fields[3]) == session and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def pids_with_environment(entries: Mapping[str, str]) -> list[int]:
    """Every process whose environment holds all of ``entries`` (Linux /proc, as root)."""
    wanted = {f"{key}={value}".encode() for key, value in entries.items()}
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            present = set(environ.read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= present:
            pids.append(int(environ.parent.name))
    return pids


@dataclass
class RabbitNode:
    """One node of the rig: its name, ports, files and, while it runs, its process."""

    name: str
    amqp_port: int
    dist_port: int
    directory: Path
    home: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.amqp_port}/"

    @property
    def mnesia_base(self) -> Path:
        return self.directory / "mnesia"

    @property
    def log_dir(self) -> Path:
        return self.directory / "log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "rabbit.pid"

    @property
    def config_file(self) -> Path:
        return self.directory / "rabbitmq.conf"

    @property
    def env_file(self) -> Path:
        return self.directory / "rabbitmq-env.conf"

    @property
    def plugins_file(self) -> Path:
        return self.directory / "enabled_plugins"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "console.log"

    def alive(self) -> bool:
        """True while the node's process (the script and its Erlang VM) runs."""
        return self.process is not None and self.process.poll() is None

    def pids(self) -> list[int]:
        """Every live process of the node: the script, its VM and the VM's helpers.

        The helpers (``erl_child_setup``, ``inet_gethost``) start sessions of their own, so
        the session of the script is not enough: they are found by the environment every
        process of the node inherits (this node's name and the rig's HOME).
        """
        found = set(session_pids(self.process.pid)) if self.process is not None else set()
        found.update(
            pids_with_environment({"RABBITMQ_NODENAME": self.name, "HOME": str(self.home)})
        )
        return sorted(found)

    def beam_pid(self) -> int | None:
        """The pid of the node's Erlang VM, from the pid file RabbitMQ writes at boot."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pid_file.read_text().strip())
            if pid in self.pids():
                return pid
        return None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the node's console output and of its RabbitMQ log, for error messages."""
        parts = []
        for path in (self.console_log, self.log_dir / f"{self.name}.log"):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path}:\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) or "(no log written)"


class RabbitCluster:
    """Three (or more) RabbitMQ nodes on this machine, clustered with ``join_cluster``.

    ``base_dir`` is the caller's (a tmp path): each node gets ``base_dir/<short name>/`` with
    its config, mnesia and log directories; ``base_dir/home`` holds the shared cookie. Nothing
    is removed by ``close()``: the logs stay for the caller to read or delete.
    """

    def __init__(
        self,
        base_dir: str | Path,
        names: Sequence[str] = DEFAULT_NODES,
        *,
        first_amqp_port: int = DEFAULT_FIRST_AMQP_PORT,
        install: RabbitInstall | None = None,
        boot_timeout_s: float = 120.0,
        ctl_timeout_s: float = 90.0,
    ) -> None:
        if len(names) < 1 or len(set(names)) != len(names):
            raise ValueError(f"node names must be distinct and at least one: {names!r}")
        self.base_dir = Path(base_dir).resolve()
        self.names = list(names)
        self.first_amqp_port = first_amqp_port
        self.install = install or find_rabbitmq()
        self.boot_timeout_s = boot_timeout_s
        self.ctl_timeout_s = ctl_timeout_s
        self.home = self.base_dir / "home"
        self.nodes: dict[str, RabbitNode] = {}
        self.timings: dict[str, float] = {}
        self._cli_env: dict[str, str] = {}

    # -- the whole cluster ----------------------------------------------------------------

    def start(self) -> RabbitCluster:
        """Boot every node side by side, join the others to the first, check membership."""
        if self.nodes:
            raise RigError("this cluster was started already")
        began = time.monotonic()
        try:
            self._prepare()
            with ThreadPoolExecutor(len(self.names)) as pool:
                list(pool.map(self._boot, self.names))
            first = self.names[0]
            for name in self.names[1:]:
                self._join(name, first)
            running = self.running_nodes()
            if sorted(running) != sorted(self.names):
                raise RigError(f"cluster formed with {running}, expected {self.names}")
        except BaseException:
            self.close()
            raise
        self._time("cluster start", began)
        return self

    @property
    def urls(self) -> list[str]:
        """AMQP URLs of the nodes, in node order (guest works: the nodes listen on loopback)."""
        return [self.nodes[name].url for name in self.names]

    def url(self, name: str) -> str:
        return self._node(name).url

    def close(self) -> None:
        """Stop every node (cleanly, then by force) and kill whatever of theirs is left."""
        began = time.monotonic()
        live = [name for name, node in self.nodes.items() if node.alive()]
        with ThreadPoolExecutor(max(len(live), 1)) as pool:
            list(pool.map(self._stop_quietly, live))
        for node in self.nodes.values():
            self._reap(node)
        if live:
            self._time("cluster close", began)

    def leftover_processes(self) -> list[int]:
        """Pids still running of the nodes: scripts, VMs, their helpers (none after close)."""
        return sorted({pid for node in self.nodes.values() for pid in node.pids()})

    def __enter__(self) -> RabbitCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- one node ---------------------------------------------------------------------------

    def stop_app(self, name: str) -> None:
        """``rabbitmqctl stop_app``: RabbitMQ stops on the node, its Erlang VM keeps running."""
        began = time.monotonic()
        self.ctl(name, "stop_app")
        self._time(f"stop_app {name}", began)

    def start_app(self, name: str) -> None:
        """``rabbitmqctl start_app`` after ``stop_app``; returns once RabbitMQ runs again."""
        began = time.monotonic()
        self.ctl(name, "start_app")
        self.ctl(name, "await_startup")
        self._time(f"start_app {name}", began)

    def stop_node(self, name: str) -> None:
        """``rabbitmqctl stop``: the whole node shuts down cleanly; waits for its process."""
        node = self._node(name)
        if not node.alive():
            raise RigError(f"{name} is not running")
        began = time.monotonic()
        self.ctl(name, "stop")
        self._wait_exit(node, self.ctl_timeout_s)
        self._time(f"stop_node {name}", began)

    def kill_node(self, name: str) -> None:
        """SIGKILL of the node's Erlang VM (beam.smp): a crash, no clean shutdown."""
        node = self._node(name)
        pid = node.beam_pid()
        if pid is None:
            raise RigError(f"{name} has no running Erlang VM to kill")
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self._wait_exit(node, 30.0)
        self._reap(node)
        self._time(f"kill_node {name}", began)

    def start_node(self, name: str) -> None:
        """Start a node again: a new VM after ``stop_node``/``kill_node``, else ``start_app``.

        The node keeps its mnesia directory, so it rejoins the cluster by itself.
        """
        node = self._node(name)
        if node.alive():
            self.start_app(name)
            return
        self._reap(node)
        self._boot(name, label="start_node")

    # -- questions to the cluster -----------------------------------------------------------

    def ctl(
        self,
        name: str,
        *args: str,
        tool: str = "rabbitmqctl",
        timeout_s: float | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a RabbitMQ CLI tool (``rabbitmqctl``, ``rabbitmq-queues``...) against ``name``."""
        program = self.install.scripts / tool
        command = [str(program), "-n", name, *args]
        try:
            done = subprocess.run(
                command,
                env=self._cli_env,
                cwd=self.base_dir,
                capture_output=True,
                text=True,
                timeout=timeout_s or self.ctl_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RigError(f"{tool} -n {name} {' '.join(args)} timed out") from exc
        if check and done.returncode != 0:
            raise RigError(
                f"{tool} -n {name} {' '.join(args)} exited with {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return done

    def ctl_json(self, name: str, *args: str, tool: str = "rabbitmqctl") -> Any:
        """A CLI command's ``--formatter json`` answer, parsed."""
        done = self.ctl(name, *args, "--formatter", "json", "--quiet", tool=tool)
        return json.loads(done.stdout)

    def running_nodes(self, via: str | None = None) -> list[str]:
        """``running_nodes`` of ``cluster_status`` as one running node (``via``) sees it."""
        status = self.ctl_json(via or self._any_running(), "cluster_status")
        return list(status["running_nodes"])

    def queue_members(self, queue: str, vhost: str = "/", via: str | None = None) -> list[str]:
        """The nodes holding a replica of the quorum queue ``queue``."""
        return list(self._queue_row(queue, vhost, via)["members"])

    def queue_online(self, queue: str, vhost: str = "/", via: str | None = None) -> list[str]:
        """The members of the quorum queue ``queue`` whose replica runs."""
        return list(self._queue_row(queue, vhost, via)["online"])

    def queue_leader(self, queue: str, vhost: str = "/", via: str | None = None) -> str:
        """The node of the quorum queue's leader, as the cluster's metadata records it.

        Right after the leader's node goes down this may still name it until a new leader is
        elected (a few seconds); ``wait_for_leader`` waits for a running one.
        """
        return str(self._queue_row(queue, vhost, via)["leader"])

    def quorum_status(self, queue: str, vhost: str = "/", via: str | None = None) -> list[Any]:
        """``rabbitmq-queues quorum_status``: every member's Raft state (leader, follower...)."""
        args = ("quorum_status", queue, "--vhost", vhost)
        return list(self.ctl_json(via or self._any_running(), *args, tool="rabbitmq-queues"))

    def wait_for_leader(
        self, queue: str, vhost: str = "/", *, not_on: str | None = None, timeout_s: float = 60.0
    ) -> str:
        """The queue's leader once it is on a running node (and not on ``not_on``)."""
        deadline = time.monotonic() + timeout_s
        leader = ""
        while time.monotonic() < deadline:
            with contextlib.suppress(RigError):
                leader = self.queue_leader(queue, vhost)
                if leader != not_on and leader in self._running_names():
                    return leader
            time.sleep(0.5)
        raise RigError(f"queue {queue!r} has no leader on a running node (last: {leader!r})")

    # -- internals --------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        write_cookie(self.home)
        taken: set[int] = set()
        registered = epmd_names()
        for index, name in enumerate(self.names):
            if "@" not in name:
                raise RigError(f"node name {name!r} needs a host part, e.g. {name}@localhost")
            if name.split("@", 1)[0] in registered:
                raise RigError(
                    f"a node named {name} already runs on this machine (epmd knows it): another "
                    "cluster rig, or one left over; stop it or choose other node names"
                )
            amqp_port = pick_free_port(self.first_amqp_port + index, taken)
            dist_port = pick_free_port(amqp_port + DIST_PORT_OFFSET, taken)
            directory = self.base_dir / name.split("@", 1)[0]
            node = RabbitNode(name, amqp_port, dist_port, directory, self.home)
            for path in (node.directory, node.mnesia_base, node.log_dir):
                path.mkdir(parents=True, exist_ok=True)
            node.config_file.write_text(
                "# Written by tests/integration/rigs/cluster.py for this node only.\n"
                f"listeners.tcp.1 = {LOOPBACK}:{amqp_port}\n"
                "loopback_users.guest = true\n"
                "log.file.level = info\n"
            )
            # Read instead of /etc/rabbitmq/rabbitmq-env.conf (which names rabbit@localhost).
            node.env_file.write_text("# Empty on purpose: the rig sets RABBITMQ_* itself.\n")
            node.plugins_file.write_text("[].\n")  # no management plugin: no port 15672
            self.nodes[name] = node
        self._cli_env = {**self._clean_env(), "RABBITMQ_CONF_ENV_FILE": str(self._first_env())}

    def _first_env(self) -> Path:
        return self.nodes[self.names[0]].env_file

    def _clean_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
        env["HOME"] = str(self.home)  # .erlang.cookie of the rig, for nodes and CLI alike
        env.setdefault("LC_ALL", "C.UTF-8")  # the CLI warns under a non-UTF-8 locale
        return env

    def node_environment(self, name: str) -> dict[str, str]:
        """The environment a node's ``rabbitmq-server`` runs with (the rig's RABBITMQ_* only)."""
        node = self._node(name)
        return {
            **self._clean_env(),
            **self.node_variables(node),
        }

    @staticmethod
    def node_variables(node: RabbitNode) -> dict[str, str]:
        """The RABBITMQ_* and ERL_* variables that make one node independent of the others."""
        return {
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(node.env_file),
            "RABBITMQ_CONFIG_FILE": str(node.config_file),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(node.directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(node.plugins_file),
            "RABBITMQ_MNESIA_BASE": str(node.mnesia_base),
            "RABBITMQ_LOG_BASE": str(node.log_dir),
            "RABBITMQ_PID_FILE": str(node.pid_file),
            # Keep the distribution port on loopback, as the system broker does; the user flag
            # -rig_node only puts the node's name on the VM's command line, for ps.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                f"-kernel inet_dist_use_interface {{127,0,0,1}} -rig_node {node.name}"
            ),
            # Only used if no epmd runs yet and this node has to start one.
            "ERL_EPMD_ADDRESS": LOOPBACK,
        }

    def _launch(self, node: RabbitNode) -> None:
        with contextlib.suppress(FileNotFoundError):
            node.pid_file.unlink()  # a stale one would name a dead VM
        with node.console_log.open("ab") as console:
            node.process = subprocess.Popen(
                [str(self.install.server)],
                env=self.node_environment(node.name),
                cwd=node.directory,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own session and group, apart from the test's
            )

    def _boot(self, name: str, label: str = "boot") -> None:
        node = self._node(name)
        began = time.monotonic()
        self._launch(node)
        deadline = began + self.boot_timeout_s
        while not port_open(node.amqp_port):
            if not node.alive():
                assert node.process is not None
                raise RigError(
                    f"{name} exited with {node.process.returncode} while starting\n"
                    f"{node.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RigError(
                    f"{name} did not listen on {node.amqp_port} in time\n{node.log_tail()}"
                )
            time.sleep(0.2)
        self.ctl(name, "await_startup")
        self._time(f"{label} {name}", began)

    def _join(self, name: str, first: str) -> None:
        began = time.monotonic()
        self.ctl(name, "stop_app")
        self.ctl(name, "join_cluster", first)
        self.ctl(name, "start_app")
        self.ctl(name, "await_startup")
        self._time(f"join {name}", began)

    def _stop_quietly(self, name: str) -> None:
        node = self.nodes[name]
        with contextlib.suppress(RigError):
            self.ctl(name, "stop", timeout_s=60.0)
        with contextlib.suppress(RigError):
            self._wait_exit(node, 30.0)

    def _wait_exit(self, node: RabbitNode, timeout_s: float) -> None:
        if node.process is None:
            return
        try:
            node.process.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise RigError(f"{node.name} still runs {timeout_s:.0f} s after being stopped") from exc

    def _reap(self, node: RabbitNode) -> None:
        """Kill whatever is left of the node's session and collect its exit status."""
        for pid in node.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.process.wait(10.0)
        deadline = time.monotonic() + 10.0
        while node.pids() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _node(self, name: str) -> RabbitNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise RigError(f"no node {name!r} in this cluster ({self.names})") from None

    def _running_names(self) -> list[str]:
        return [name for name in self.names if self.nodes[name].alive()]

    def _any_running(self) -> str:
        running = self._running_names()
        if not running:
            raise RigError("no node of the cluster is running")
        return running[0]

    def _queue_row(self, queue: str, vhost: str, via: str | None) -> Mapping[str, Any]:
        names = [via] if via else self._running_names()
        problem = "no node running"
        for name in names:
            try:
                rows = self.ctl_json(
                    name, "list_queues", "--vhost", vhost, "name", "type", "leader", "members",
                    "online",
                )  # fmt: skip
            except RigError as exc:
                problem = str(exc)
                continue
            for row in rows:
                if row["name"] == queue:
                    if row["type"] != "quorum":
                        raise RigError(f"queue {queue!r} is {row['type']}, not a quorum queue")
                    return dict(row)
            raise RigError(f"no queue {queue!r} in vhost {vhost!r}")
        raise RigError(f"cannot list queues: {problem}")

    def _time(self, what: str, began: float) -> None:
        elapsed = time.monotonic() - began
        self.timings[what] = elapsed
        log.info("rabbit cluster: %s took %.1f s", what, elapsed)

    def timing_report(self) -> str:
        """Every timed step, one a line."""
        return "\n".join(f"{what}: {seconds:.1f} s" for what, seconds in self.timings.items())


def rabbit_cluster_fixture(
    tmp_path_factory: pytest.TempPathFactory, names: Sequence[str] = DEFAULT_NODES
) -> Iterator[RabbitCluster]:
    """A started cluster under a fresh tmp directory; every node stopped afterwards.

    Fails (not skips) when RabbitMQ is missing or the cluster cannot start, and when a process
    of a node outlives the teardown.
    """
    # pytest.fail outside the except blocks: no chained traceback around the message.
    problem = ""
    try:
        install = find_rabbitmq()
    except RabbitMissingError as exc:
        problem = str(exc)
    if problem:
        pytest.fail(problem, pytrace=False)
    cluster = RabbitCluster(tmp_path_factory.mktemp("rabbit-cluster"), names, install=install)
    try:
        cluster.start()
    except RigError as exc:
        problem = f"the RabbitMQ test cluster did not start: {exc}"
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield cluster
    finally:
        cluster.close()
        (cluster.base_dir / "timings.json").write_text(json.dumps(cluster.timings, indent=2))
        left = cluster.leftover_processes()
        if left:
            pytest.fail(f"processes of the test cluster outlived it: {left}", pytrace=False)


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitCluster]:
    """Three clustered RabbitMQ nodes (``bwtest1..3@localhost``) for one test module."""
    yield from rabbit_cluster_fixture(tmp_path_factory)
