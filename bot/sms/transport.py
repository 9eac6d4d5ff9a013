"""A lean HTTP/1.1 transport: pooled keep-alive connections on asyncio, responses parsed by httptools.

Why (measured, README "Performance"): at 2,000 requests/s the whole per-request budget on one core is
0.5 ms. httpx's own pool (httpcore) re-scans every connection per request and costs ≈ 10 ms a request at
100 connections; an aiohttp `ClientSession` costs ≈ 0.35 ms of it (timers, signals, cookie and header
machinery this client never uses); this transport ≈ 0.1 ms. It does only what the SMS client needs:
requests with a body of known length, one at a time per connection (no pipelining), HTTP or HTTPS, no
proxies, no redirects. Parsing (chunked bodies, keep-alive rules, malformed answers) is left to
httptools, the llhttp binding uvicorn uses.

The client speaks httpx (requests, responses, exception types), so any `httpx.AsyncBaseTransport`, e.g.
`httpx.AsyncHTTPTransport` or `httpx.MockTransport`, can replace it. Errors keep the one distinction that
matters here: did the request leave this machine? Pool waits and connect failures (`httpx.PoolTimeout`,
`httpx.ConnectTimeout`, `httpx.ConnectError`) mean it certainly did not; anything after the request was
written (`httpx.ReadTimeout`, `httpx.RemoteProtocolError`) means its outcome is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import NamedTuple

import httptools
import httpx

_KEPT_HEADERS = frozenset({b"content-type", b"x-acs-retry-after", b"retry-after", b"x-acs-request-id"})

RawHeaders = list[tuple[bytes, bytes]]


class _Target(NamedTuple):
    key: tuple[str, str, int]  # scheme, host, port: connections are pooled per key
    host_header: str
    path: str


@lru_cache(maxsize=64)
def _target(url: str) -> _Target:
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parsed.scheme!r}")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    host_header = parsed.netloc.decode("ascii")
    path = parsed.raw_path.decode("ascii") or "/"
    return _Target((parsed.scheme, parsed.host, port), host_header, path)


def _request_bytes(method: str, target: _Target, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1"]
    has_host = False
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}")
        lower = name.lower()
        if lower == "host":
            has_host = True
        elif lower in ("content-length", "transfer-encoding", "connection"):
            continue  # framing is ours
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.append(f"host: {target.host_header}")
    if body or method not in ("GET", "HEAD"):
        lines.append(f"content-length: {len(body)}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self, pool: Http1Transport, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, RawHeaders, bytes]] | None = None
        self.headers: RawHeaders = []
        self.body: list[bytes] = []
        self.closed = False
        self.idle = False  # sitting in the pool
        self.reusable = True
        self.last_used = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes nobody asked for: the connection can no longer be trusted
            self._break()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed answer: {exc}"))
            self._break()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(httpx.RemoteProtocolError("the server closed the connection before answering"))
        self.pool._lost(self)

    # ---------------------------------------------------------------- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        self._cancel_timer()
        if not self.parser.should_keep_alive():
            self.reusable = False
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))

    # ---------------------------------------------------------------- use
    @property
    def usable(self) -> bool:
        return (
            not self.closed
            and self.reusable
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def send(
        self, data: bytes, read_timeout: float | None, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[tuple[int, RawHeaders, bytes]]:
        assert self.transport is not None
        self.headers, self.body = [], []
        self.waiter = loop.create_future()
        if read_timeout is not None:
            self._timer = loop.call_later(read_timeout, self._timed_out)
        self.transport.write(data)
        return self.waiter

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(httpx.ReadTimeout("no answer in time after the request was sent"))
        self._break()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _break(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class Http1Transport(httpx.AsyncBaseTransport):
    """Request extension `on_sent`: a callable given the monotonic time the request was written."""

    def __init__(
        self,
        *,
        max_connections: int = 400,
        keepalive_seconds: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._limit = max_connections
        self._keepalive = keepalive_seconds
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], deque[_Connection]] = {}
        self._open = 0  # connections counted against the limit: idle, in use or connecting
        self._per_host: dict[tuple[str, str, int], int] = {}  # the same, per (scheme, host, port)
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def open_connections(self) -> int:
        return self._open

    # ---------------------------------------------------------------- httpx interface
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        status, headers, content = await self._round_trip(
            request.method,
            str(request.url),
            {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers.raw},
            await request.aread(),
            request.extensions.get("timeout", {}),
            request.extensions.get("on_sent"),
        )
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def post_raw(
        self,
        url: str,
        headers: dict[str, str],
        body: bytes,
        timeouts: Mapping[str, float | None],
        on_sent: Callable[[float], None] | None = None,
        *,
        method: str = "POST",
    ) -> tuple[int, dict[str, str], bytes]:
        """The same request without building httpx objects (the SMS client's hot path). Returns the
        status, the few response headers callers read (lower-cased), and the body."""
        status, raw, content = await self._round_trip(method, url, headers, body, timeouts, on_sent)
        kept = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw if k.lower() in _KEPT_HEADERS
        }
        return status, kept, content

    async def warm(self, url: str, connections: int = 1, connect_timeout: float | None = None) -> int:
        """Make sure `connections` connections to `url`'s host exist (idle, in use or opening), opening
        the missing ones ahead of the requests (a TCP and TLS handshake each, which would otherwise delay
        the first requests of a send). Returns how many were opened; connect errors are left for the
        requests themselves to report."""
        key = _target(url).key
        opened = 0
        for _ in range(max(0, connections - self._per_host.get(key, 0))):  # in use or idle both count
            if self._open >= self._limit:
                break
            try:
                conn = await self._connect(key, connect_timeout)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                break
            self._release(conn)
            opened += 1
        return opened

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.idle = False
                self._count(conn.key, -1)
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()

    # ---------------------------------------------------------------- one exchange
    async def _round_trip(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeouts: Mapping[str, float | None],
        on_sent: Callable[[float], None] | None,
    ) -> tuple[int, RawHeaders, bytes]:
        target = _target(url)
        data = _request_bytes(method, target, headers, body)
        loop = asyncio.get_running_loop()
        conn = await self._acquire(target.key, timeouts.get("pool"), timeouts.get("connect"))
        try:
            waiter = conn.send(data, timeouts.get("read"), loop)
            if on_sent is not None:
                on_sent(time.monotonic())
            status, raw, content = await waiter
        except BaseException:
            conn._break()  # a half-done exchange: the connection cannot carry another request
            self._release(conn)
            raise
        self._release(conn)
        encoding = next((v.lower() for k, v in raw if k.lower() == b"content-encoding"), None)
        if encoding in (b"gzip", b"deflate"):  # not asked for, but a proxy may do it anyway
            try:
                content = zlib.decompressobj(wbits=47).decompress(content)
            except zlib.error as exc:  # after the request went out: for the client, an unknown outcome
                raise httpx.RemoteProtocolError(f"the answer could not be decompressed: {exc}") from exc
            raw = [(k, v) for k, v in raw if k.lower() != b"content-encoding"]
        return status, raw, content

    # ---------------------------------------------------------------- the pool
    async def _acquire(
        self, key: tuple[str, str, int], pool_timeout: float | None, connect_timeout: float | None
    ) -> _Connection:
        deadline = None if pool_timeout is None else time.monotonic() + pool_timeout
        while True:
            conn = self._take_idle(key)
            if conn is not None:
                return conn
            if self._open < self._limit or self._evict_idle():
                return await self._connect(key, connect_timeout)
            await self._wait_for_slot(deadline)

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()  # the most recently used: the least likely to have been closed
            conn.idle = False
            if conn.usable and now - conn.last_used < self._keepalive:
                return conn
            self._discard(conn)
        return None

    def _evict_idle(self) -> bool:
        """At the limit: close the oldest idle connection (to another host) to make room."""
        for conns in self._idle.values():
            if conns:
                conn = conns.popleft()
                conn.idle = False
                self._discard(conn, wake=False)
                return True
        return False

    async def _connect(self, key: tuple[str, str, int], connect_timeout: float | None) -> _Connection:
        scheme, host, port = key
        self._count(key, +1)
        loop = asyncio.get_running_loop()
        try:
            context = self._ssl_context() if scheme == "https" else None
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context else None,
                )
        except TimeoutError as exc:
            self._slot_freed(key)
            raise httpx.ConnectTimeout(f"could not connect to {host}:{port} in time") from exc
        except (OSError, ssl.SSLError) as exc:
            self._slot_freed(key)
            raise httpx.ConnectError(f"could not connect to {host}:{port}: {exc}") from exc
        except BaseException:
            self._slot_freed(key)
            raise
        return conn

    async def _wait_for_slot(self, deadline: float | None) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout_at(None if deadline is None else _loop_time(deadline)):
                await waiter
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, but leaving: pass the turn on
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("no free connection in time") from exc
            raise

    def _release(self, conn: _Connection) -> None:
        if conn.usable:
            conn.idle = True
            conn.last_used = time.monotonic()
            self._idle.setdefault(conn.key, deque()).append(conn)
            self._wake_one()
        else:
            self._discard(conn)

    def _lost(self, conn: _Connection) -> None:
        """A connection closed by the peer while it sat in the pool."""
        if conn.idle:
            conn.idle = False
            with contextlib.suppress(ValueError):
                self._idle[conn.key].remove(conn)
            self._slot_freed(conn.key)

    def _discard(self, conn: _Connection, *, wake: bool = True) -> None:
        if conn.transport is not None and not conn.transport.is_closing():
            conn.transport.close()
        self._count(conn.key, -1)
        if wake:
            self._wake_one()

    def _slot_freed(self, key: tuple[str, str, int]) -> None:
        self._count(key, -1)
        self._wake_one()

    def _count(self, key: tuple[str, str, int], delta: int) -> None:
        self._open += delta
        left = self._per_host.get(key, 0) + delta
        if left > 0:
            self._per_host[key] = left
        else:
            self._per_host.pop(key, None)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # loads the trust store (≈ 50 ms): once
        return self._ssl


def _loop_time(deadline: float) -> float:
    """A `time.monotonic()` deadline on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())
