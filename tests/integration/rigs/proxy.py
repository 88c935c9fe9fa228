"""A TCP fault proxy for tests: sits between AMQP clients and the broker and injects faults.

``FaultProxy`` listens on 127.0.0.1 (a free port) and forwards every accepted connection (a
``Link``) to the upstream host and port. It runs in its own thread with its own event loop, so it
keeps forwarding while the test's loop is busy, and it serves a worker subprocess as well as the
test's own clients. Its methods are called from any other thread and return once applied.

Faults:

* ``blackhole``: a network partition. Nothing is forwarded in either direction and no socket is
  closed, not even when a peer closes its end (a partition carries no FIN either). What arrives
  from either side is read and dropped (counted in ``dropped_*``), or kept and delivered on
  ``heal`` with ``buffer=True``. A connection made while the partition holds for new
  connections is accepted, but the proxy does not connect upstream: the client's bytes (the AMQP
  protocol header) are held and nothing comes back, so the client hangs in its handshake as it
  would in a TCP connect whose SYN gets no answer. On ``heal`` the proxy connects upstream and
  delivers the held bytes, as a retransmitted SYN would get through then: a client still waiting
  completes its handshake, one that gave up has closed and the link ends.
  Dropping, the default, is faithful where the partition outlasts a heartbeat timeout (one
  end gives up, and what it had sent is gone with the connection). It is not what TCP does to
  a short partition: TCP retransmits, so data arrives late, never lost, and a dropped chunk may
  end mid-frame, which the peer sees as a framing error after ``heal``. For a short partition
  with traffic in flight use ``buffer=True``.
* ``close``: resets links (SO_LINGER 0: both peers see a RST).
* ``heal``: forwards again. Data dropped stays dropped; where one peer closed its end during the
  partition, the other end is reset, as its next segment would be answered by a RST.
* ``refuse_new``: new connections are accepted and reset at once.

Faults apply to all links or, with ``only=marker``, to links whose first bytes from the client
(``HELLO_BYTES`` of them) contain the marker: AMQP clients send their client properties in
Connection.StartOk, so ``only=b"benchmark-worker consume"`` selects the worker's consumer
connection by its ``connection_name``. With ``new_connections=True`` a marked blackhole also
catches later links as soon as their first bytes show the marker (the chunk with the marker,
the StartOk, is then not forwarded either).

Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from yarl import URL

HELLO_BYTES = 4096
"""How many of the first bytes a client sends the proxy records for ``only=`` and ``links()``."""
KEEP_LIMIT = 1 << 20
"""Per link and direction: the most bytes kept (buffered) in a blackhole; more are dropped."""
CHUNK = 65536
CALL_TIMEOUT_S = 10.0

T = TypeVar("T")


@dataclass(frozen=True)
class Link:
    """A snapshot of one client connection through the proxy; "up" is client to upstream."""

    index: int
    opened_at: float
    client_port: int
    upstream_port: int | None
    """The proxy's local port towards upstream: RabbitMQ's ``peer_port`` of the connection."""
    hello: bytes = field(repr=False)
    """The first ``HELLO_BYTES`` the client sent (AMQP: with its credentials in StartOk)."""
    bytes_up: int
    bytes_down: int
    dropped_up: int
    dropped_down: int
    blackholed: bool
    client_closed_at: float | None
    """When the client closed its end (or the proxy closed it)."""
    upstream_closed_at: float | None
    """When upstream closed its end (or the proxy closed it)."""
    closed_at: float | None

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def connection_name(self) -> str | None:
        """The AMQP ``connection_name`` client property, where the hello holds it."""
        key = b"\x0fconnection_nameS"
        at = self.hello.find(key)
        if at < 0 or len(self.hello) < at + len(key) + 4:
            return None
        start = at + len(key) + 4
        (size,) = struct.unpack(">I", self.hello[start - 4 : start])
        if len(self.hello) < start + size:
            return None
        return self.hello[start : start + size].decode("utf-8", "replace")


@dataclass(frozen=True)
class ProxyStats:
    links_accepted: int
    links_refused: int
    links_open: int
    bytes_up: int
    bytes_down: int
    dropped_up: int
    dropped_down: int


class _Link:
    """A live link, touched only on the proxy's loop."""

    def __init__(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.index = index
        self.opened_at = time.monotonic()
        self.client_reader = reader
        self.client_writer = writer
        peer = writer.get_extra_info("peername")
        self.client_port: int = peer[1] if peer else 0
        self.upstream_reader: asyncio.StreamReader | None = None
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.upstream_port: int | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.hello = bytearray()
        self.bytes_up = self.bytes_down = self.dropped_up = self.dropped_down = 0
        self.blackholed = False
        self.keep = False
        self.kept_up = bytearray()
        self.kept_down = bytearray()
        self.client_closed_at: float | None = None
        self.upstream_closed_at: float | None = None
        self.closed_at: float | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def matches(self, marker: bytes | None) -> bool:
        return marker is None or marker in self.hello

    def snapshot(self) -> Link:
        return Link(
            index=self.index,
            opened_at=self.opened_at,
            client_port=self.client_port,
            upstream_port=self.upstream_port,
            hello=bytes(self.hello),
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            dropped_up=self.dropped_up,
            dropped_down=self.dropped_down,
            blackholed=self.blackholed,
            client_closed_at=self.client_closed_at,
            upstream_closed_at=self.upstream_closed_at,
            closed_at=self.closed_at,
        )


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close abruptly: SO_LINGER 0 makes the kernel send a RST instead of a FIN."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _close(writer: asyncio.StreamWriter | None) -> None:
    """Close normally: what is written is flushed, then a FIN."""
    if writer is not None and not writer.transport.is_closing():
        writer.close()


class FaultProxy:
    """A TCP proxy to ``upstream_host:upstream_port`` that injects network faults.

    Use as ``with FaultProxy() as proxy:`` or ``start()`` / ``stop()``; ``url_for(amqp_url)``
    is the broker URL through the proxy.
    """

    def __init__(self, upstream_host: str = "127.0.0.1", upstream_port: int = 5672) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None
        self._links: list[_Link] = []
        self._refused = 0
        self._refusing = False
        self._hole_all_new = False
        self._hole_all_keep = False
        self._hole_markers: dict[bytes, bool] = {}  # marker -> keep

    # -- life cycle (any thread) -----------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("FaultProxy already started")
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name="fault-proxy", daemon=True
        )
        self._thread.start()
        self._port = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(CALL_TIMEOUT_S)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(CALL_TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(CALL_TIMEOUT_S)
            self._thread = None
            self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaultProxy not started")
        return self._port

    def url_for(self, amqp_url: str) -> str:
        """``amqp_url`` with its host and port replaced by the proxy's."""
        return str(URL(amqp_url).with_host("127.0.0.1").with_port(self.port))

    # -- faults and inspection (any thread; each returns once applied) ---------------------

    def blackhole(
        self, only: bytes | None = None, new_connections: bool = True, *, buffer: bool = False
    ) -> list[Link]:
        """Partition the matching links (all, or those whose hello contains ``only``).

        Nothing is forwarded and no socket is closed. With ``buffer=False`` what arrives is
        dropped; with ``buffer=True`` it is kept (up to ``KEEP_LIMIT`` a direction) and
        delivered on ``heal``, as TCP delivers late what a short partition held up. With
        ``new_connections`` later links are caught too (see the module's docstring). Returns the
        links black-holed now.
        """

        def apply() -> list[Link]:
            if new_connections:
                if only is None:
                    self._hole_all_new = True
                    self._hole_all_keep = buffer
                else:
                    self._hole_markers[only] = buffer
            hit = []
            for link in self._open_links():
                if link.matches(only) and not link.blackholed:
                    link.blackholed = True
                    link.keep = buffer
                    hit.append(link.snapshot())
            return hit

        return self._call(apply)

    def heal(self) -> list[Link]:
        """End every blackhole; returns the links that were black-holed."""

        def apply() -> list[Link]:
            self._hole_all_new = False
            self._hole_markers.clear()
            healed = []
            for link in self._open_links():
                if link.blackholed:
                    link.blackholed = False
                    healed.append(link.snapshot())
                    self._release(link)
            return healed

        return self._call(apply)

    def close(self, only: bytes | None = None) -> list[Link]:
        """Reset the matching open links on both sides; returns them as they were."""

        def apply() -> list[Link]:
            hit = []
            for link in self._open_links():
                if link.matches(only):
                    hit.append(link.snapshot())
                    _reset(link.client_writer)
                    _reset(link.upstream_writer)
                    self._finish(link)
            return hit

        return self._call(apply)

    def refuse_new(self, refuse: bool = True) -> None:
        """While on, new connections are accepted and reset at once."""

        def apply() -> None:
            self._refusing = refuse

        self._call(apply)

    def links(self, matching: bytes | None = None, *, open_only: bool = False) -> list[Link]:
        """Every link so far (in order), or those whose hello contains ``matching``."""
        return self._call(
            lambda: [
                link.snapshot()
                for link in self._links
                if link.matches(matching) and not (open_only and link.closed_at is not None)
            ]
        )

    def stats(self) -> ProxyStats:
        def count() -> ProxyStats:
            links = self._links
            return ProxyStats(
                links_accepted=len(links),
                links_refused=self._refused,
                links_open=sum(link.closed_at is None for link in links),
                bytes_up=sum(link.bytes_up for link in links),
                bytes_down=sum(link.bytes_down for link in links),
                dropped_up=sum(link.dropped_up for link in links),
                dropped_down=sum(link.dropped_down for link in links),
            )

        return self._call(count)

    # -- the proxy's loop --------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or not loop.is_running():
            raise RuntimeError("FaultProxy not running")
        if self._thread is threading.current_thread():
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(CALL_TIMEOUT_S)

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks: list[asyncio.Task[None]] = []
        for link in self._links:
            tasks.extend(link.tasks)
            if link.connecting is not None:
                tasks.append(link.connecting)
            if link.closed_at is None:
                link.client_writer.transport.abort()
                if link.upstream_writer is not None:
                    link.upstream_writer.transport.abort()
                self._finish(link)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports run connection_lost

    def _open_links(self) -> list[_Link]:
        return [link for link in self._links if link.closed_at is None]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self._refused += 1
            _reset(writer)
            return
        link = _Link(len(self._links), reader, writer)
        self._links.append(link)
        self._spawn(link, self._pump(link, upward=True))
        if self._hole_all_new:
            # Accepted, but no connection upstream until heal: the handshake hangs.
            link.blackholed = True
            link.keep = self._hole_all_keep
        else:
            self._connect(link)

    def _spawn(self, link: _Link, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    def _connect(self, link: _Link) -> None:
        if link.connecting is None and link.upstream_writer is None:
            link.connecting = asyncio.get_running_loop().create_task(self._connect_upstream(link))

    async def _connect_upstream(self, link: _Link) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            link.upstream_closed_at = time.monotonic()
            _reset(link.client_writer)
            self._finish(link)
            return
        if link.closed_at is not None:
            _close(writer)
            return
        link.upstream_reader, link.upstream_writer = reader, writer
        link.upstream_port = writer.get_extra_info("sockname")[1]
        if not link.blackholed:
            self._flush(link)
        self._spawn(link, self._pump(link, upward=False))

    def _release(self, link: _Link) -> None:
        """After a blackhole: connect, deliver what was kept, or reset a half-closed link."""
        if link.client_closed_at is not None or link.upstream_closed_at is not None:
            _reset(link.client_writer)
            _reset(link.upstream_writer)
            self._finish(link)
        elif link.upstream_writer is None:
            self._connect(link)
        else:
            self._flush(link)

    def _flush(self, link: _Link) -> None:
        if link.kept_up and link.upstream_writer is not None:
            link.upstream_writer.write(bytes(link.kept_up))
            link.bytes_up += len(link.kept_up)
            link.kept_up.clear()
        if link.kept_down:
            link.client_writer.write(bytes(link.kept_down))
            link.bytes_down += len(link.kept_down)
            link.kept_down.clear()

    def _note_hello(self, link: _Link, data: bytes) -> None:
        if len(link.hello) >= HELLO_BYTES:
            return
        link.hello += data[: HELLO_BYTES - len(link.hello)]
        if link.blackholed:
            return
        for marker, keep in self._hole_markers.items():
            if marker in link.hello:
                link.blackholed = True
                link.keep = keep
                return

    async def _pump(self, link: _Link, *, upward: bool) -> None:
        """Copy one direction of ``link`` (client to broker when ``upward``) until it ends.

        In a blackhole, bytes are kept (``keep``, up to :data:`KEEP_LIMIT`) or dropped; upward,
        bytes that arrive before the upstream connection exists are kept, as in the sender's
        buffer."""
        reader = link.client_reader if upward else link.upstream_reader
        assert reader is not None
        kept = link.kept_up if upward else link.kept_down
        direction = "up" if upward else "down"
        while True:
            try:
                data = await reader.read(CHUNK)
            except OSError:
                data = b""
            if not data:
                break
            if upward:
                self._note_hello(link, data)
            writer = link.upstream_writer if upward else link.client_writer
            if writer is None or link.blackholed:
                if (writer is None or link.keep) and len(kept) + len(data) <= KEEP_LIMIT:
                    kept += data  # in place: the link's own buffer
                else:
                    _add(link, f"dropped_{direction}", len(data))
                continue
            _add(link, f"bytes_{direction}", len(data))
            writer.write(data)
            try:
                await writer.drain()
            except OSError:
                self._side_gone(link, client=not upward)
                return
        self._side_gone(link, client=upward)

    def _side_gone(self, link: _Link, *, client: bool) -> None:
        """One peer closed its end: pass it on, except in a blackhole (no FIN gets through)."""
        if link.closed_at is not None:
            return
        now = time.monotonic()
        if client:
            link.client_closed_at = link.client_closed_at or now
            _close(link.client_writer)
        else:
            link.upstream_closed_at = link.upstream_closed_at or now
            _close(link.upstream_writer)
        if link.upstream_writer is None and link.client_closed_at is not None:
            self._finish(link)  # the client gave up before the proxy connected upstream
        elif link.blackholed and (link.client_closed_at is None or link.upstream_closed_at is None):
            return  # silence towards the other peer until heal or until it gives up too
        else:
            self._finish(link)

    def _finish(self, link: _Link) -> None:
        if link.closed_at is not None:
            return
        now = time.monotonic()
        link.closed_at = now
        if link.client_closed_at is None:
            link.client_closed_at = now
            _close(link.client_writer)
        if link.upstream_closed_at is None:
            link.upstream_closed_at = now
            _close(link.upstream_writer)
        current = asyncio.current_task()
        for task in [*link.tasks, link.connecting]:
            if task is not None and task is not current and not task.done():
                task.cancel()


def _add(link: _Link, counter: str, count: int) -> None:
    setattr(link, counter, getattr(link, counter) + count)
