"""The client's HTTP: httpx's API over aiohttp's connection pool, through `httpx-aiohttp`.

httpx is the client's API (requests, responses, exception types); aiohttp's pool carries the requests,
because httpx's own pool (httpcore) re-scans every connection per request and cannot keep up with 2,000
requests a second (README, "Performance"). What this module adds to the library:

- **A lean POST** (`ProviderTransport.post`) for the client's hot path, on the same pool, without httpx's
  request and response objects, aiohttp's tracing or its cookie jar. Measured on this machine (3,000
  requests, 50 at a time, transport CPU a request): through httpx-aiohttp ≈ 0.21 ms, straight on aiohttp
  ≈ 0.14 ms, ≈ 0.20 ms with an aiohttp trace for the moment a request leaves, ≈ 0.12 ms without the cookie
  jar and with a parsed URL. At 2,000 requests a second one core has 0.5 ms for everything a send does.
- **Did the request leave?** That is the one distinction the client needs from a failure: a request that
  certainly did not leave may be sent again; one that may have left must never be. On the lean path the
  body marks its `Exchange` sent just before its bytes (the headers go with them) are handed to the
  socket: no mark, nothing was written. Exception types cannot tell it reliably (httpx-aiohttp maps a
  connection dropped after our request to `httpx.ConnectTimeout`). On the httpx path, which the client
  does not use, only aiohttp's own exception types tell: a connect error or a connect timeout (which
  includes the wait for a pooled connection) is not sent, anything else may have been.
- **When did it leave?** The same moment goes to the caller's `on_sent` (the batch limiter counts its
  one call a second from when a request actually left, not from when it was granted).
- **Proxies** from the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), resolved once for the
  endpoint by `proxy_for`, as curl and httpx do.
- **A warm-up** that opens connections before a send needs them (a `HEAD` request each, which the
  provider answers without doing anything).
Errors come as httpx exceptions on both paths, named for what aiohttp saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import aiohttp
import certifi
import httpx
import yarl
from aiohttp.abc import AbstractStreamWriter
from httpx_aiohttp import AiohttpTransport


@dataclass(slots=True)
class Exchange:
    """One request as the pool saw it. `sent_at`: the monotonic time its bytes were written, or None if
    they never were (then the request certainly did not reach the server)."""

    on_sent: Callable[[float], None] | None = None
    sent_at: float | None = None

    def mark_sent(self) -> None:
        if self.sent_at is None:
            self.sent_at = time.monotonic()
            if self.on_sent is not None:
                self.on_sent(self.sent_at)


_exchange: ContextVar[Exchange | None] = ContextVar("sms_http_exchange", default=None)


@contextlib.contextmanager
def exchange(on_sent: Callable[[float], None] | None = None) -> Iterator[Exchange]:
    """Track the request made inside this block: `with exchange(on_sent) as ex: await transport...`."""
    current = Exchange(on_sent)
    token = _exchange.set(current)
    try:
        yield current
    finally:
        _exchange.reset(token)


class _Body(aiohttp.BytesPayload):
    """A request body that marks its exchange sent just before aiohttp writes it (with the headers)."""

    def __init__(self, value: bytes, sent: Exchange | None) -> None:
        super().__init__(value, content_type=None)
        self._sent = sent

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        if self._sent is not None:
            self._sent.mark_sent()
        await super().write_with_length(writer, content_length)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)


def proxy_for(url: str) -> httpx.Proxy | None:
    """The proxy the environment asks for to reach `url` (`HTTPS_PROXY` / `HTTP_PROXY`, minus
    `NO_PROXY`), or None. Read when called, not when this module is imported."""
    target = httpx.URL(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(target.scheme)
    if not proxy or urllib.request.proxy_bypass(target.host):
        return None
    return httpx.Proxy(proxy)


class ProviderTransport(AiohttpTransport):
    """An `httpx.AsyncBaseTransport` on one aiohttp pool of at most `max_connections` connections.

    Requests made inside `with exchange(...)` report when they were written. Failures come as httpx
    exceptions, mapped by what the aiohttp error means (see `_map`).
    """

    def __init__(
        self,
        *,
        max_connections: int = 400,
        keepalive_seconds: float = 15.0,
        proxy: httpx.Proxy | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        # The trust store loads off the event loop, on first use (≈ 20 ms): not at import, not on the loop.
        self._trust_loaded = ssl_context is not None
        self._loading: asyncio.Future[None] | None = None
        self._warming: asyncio.Future[list[bool]] | None = None
        self._last_used = -float("inf")  # monotonic time the pool last finished a request
        context = ssl_context or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._proxy_url = str(proxy.url) if proxy else None
        self._proxy_auth = aiohttp.BasicAuth(*proxy.auth) if proxy and proxy.auth else None
        super().__init__(
            verify=context,
            proxy=proxy,
            limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=keepalive_seconds),
            client=self._open,
        )

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        # No cookies: the provider sets none, and a jar costs time on every request.
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def _ready(self) -> None:
        if self._loading is None:  # one load, however many requests wait for it
            self._loading = asyncio.ensure_future(
                asyncio.to_thread(self.ssl_context.load_verify_locations, certifi.where())
            )
        await asyncio.shield(self._loading)
        self._trust_loaded = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._trust_loaded and request.url.scheme == "https":
            await self._ready()
        sent = _exchange.get()
        try:
            response = await super().handle_async_request(request)
        except httpx.TransportError as exc:
            # httpx-aiohttp calls every aiohttp connection error a ConnectTimeout: map by the cause instead
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientError | OSError):
                raise _failed(cause, sent, request) from cause
            if sent is not None:
                sent.mark_sent()
            raise
        except (aiohttp.ClientError, OSError) as exc:  # left unmapped by httpx-aiohttp
            raise _failed(exc, sent, request) from exc
        if sent is not None:
            sent.mark_sent()  # an answer came: it certainly left (the moment is when the answer began)
        self._last_used = time.monotonic()
        return response

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, timeouts: Mapping[str, float | None]
    ) -> Answer:
        """POST `body` to `url` and read the whole answer (decompressed): the client's hot path. Fails
        with the same httpx exceptions as `handle_async_request`."""
        if not self._trust_loaded and url.startswith("https:"):
            await self._ready()
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        try:
            async with self.client.post(
                _url(url),
                headers=headers,
                data=_Body(body, _exchange.get()),
                timeout=_timeout(timeouts.get("connect"), timeouts.get("read"), timeouts.get("pool")),
                allow_redirects=False,
                proxy=self._proxy_url,
                proxy_auth=self._proxy_auth,
            ) as response:
                content = await response.read()
        except (aiohttp.ClientError, OSError) as exc:
            raise _map(exc) from exc
        self._last_used = time.monotonic()
        return Answer(response.status, response.headers, content)

    async def warm(self, url: str, connections: int = 1, seconds: float | None = None) -> int:
        """Open up to `connections` connections to `url`'s server ahead of the requests that will use
        them (a TCP and TLS handshake each), with one `HEAD` request each. Returns how many answered.
        Does nothing while another warm-up runs or when the pool carried a request within half the
        keep-alive time (its connection is still open); failures are left for the requests to report."""
        now = time.monotonic()
        if self._warming is not None or now - self._last_used < (self.limits.keepalive_expiry or 0) / 2:
            return 0
        self._last_used = now

        async def one() -> bool:
            request = httpx.Request(
                "HEAD", url, extensions={"timeout": {"connect": seconds, "read": seconds}}
            )
            try:
                response = await self.handle_async_request(request)
                await response.aclose()
            except httpx.HTTPError:
                return False
            return True

        self._warming = asyncio.gather(*(one() for _ in range(connections)))
        try:
            return sum(await self._warming)
        finally:
            self._warming = None


@dataclass(slots=True, frozen=True)
class Answer:
    """What `ProviderTransport.post` read: the status, the headers (case-insensitive), the body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@functools.lru_cache(maxsize=16)
def _url(url: str) -> yarl.URL:
    return yarl.URL(url)  # parsed once, not on every request


@functools.lru_cache(maxsize=16)
def _timeout(connect: float | None, read: float | None, pool: float | None) -> aiohttp.ClientTimeout:
    # aiohttp's `connect` covers the wait for a pooled connection and the connect itself
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read, connect=pool)


def _map(exc: BaseException, request: httpx.Request | None = None) -> httpx.TransportError:
    """The httpx exception for an aiohttp failure. Whether the request had left is not decided here
    (see `Exchange`); the types only tell a person what happened."""
    text = _describe(exc)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(text, request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(text, request=request)  # a pool wait or a connect that took too long
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(text, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(text, request=request)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(text, request=request)
    return httpx.RemoteProtocolError(text, request=request)


def _failed(exc: BaseException, sent: Exchange | None, request: httpx.Request) -> httpx.TransportError:
    """The httpx path: whether the request left can only be told from the type of aiohttp's error."""
    if sent is not None and not isinstance(
        exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
    ):
        sent.mark_sent()
    return _map(exc, request)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
