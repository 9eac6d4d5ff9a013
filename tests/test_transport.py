"""The SMS client's transport (httpx over aiohttp) against scripted HTTP peers on loopback.

Each peer is a real asyncio server that reads whole requests and answers the way a test scripts it:
keep-alive, chunked, `Connection: close`, silence, a dropped connection, garbage, gzip.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable, Mapping

import httpx
import pytest

from bot.sms.http import Exchange, ProviderTransport, exchange, proxy_for
from tests.conftest import run

Answer = Callable[["Peer", bytes, asyncio.StreamWriter], Awaitable[bool]]  # returns: keep the connection


def ok(body: bytes = b'{"ok": true}', *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: application/json", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Peer:
    """A scripted HTTP/1.1 server: `answer(peer, request, writer)` writes the response."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""
        self._arrivals: list[tuple[int, asyncio.Future[None]]] = []

    async def arrived(self, count: int) -> None:
        """Until `count` requests have reached the peer."""
        if len(self.requests) < count:
            fut = asyncio.get_running_loop().create_future()
            self._arrivals.append((count, fut))
            await fut

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.release.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                for count, fut in self._arrivals:
                    if len(self.requests) >= count and not fut.done():
                        fut.set_result(None)
                if not await self.answer(self, request, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def answer_ok(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    answer = ok(b'{"n": %d}' % len(peer.requests))
    if request.startswith(b"HEAD "):  # the headers alone, as HTTP has it
        answer = answer[: answer.index(b"\r\n\r\n") + 4]
    writer.write(answer)
    return True


async def post(
    transport: ProviderTransport,
    url: str,
    body: bytes = b"a=1",
    on_sent: Callable[[float], None] | None = None,
    via: str = "httpx",
    **timeouts: float,
) -> tuple[int, Mapping[str, str], bytes, Exchange]:
    """One POST as the SMS client makes it, through httpx's transport API or the client's lean `post`:
    the status, headers, body, and what the pool saw."""
    headers = {"content-type": "application/x-www-form-urlencoded"}
    with exchange(on_sent) as seen:
        if via == "post":
            answer = await transport.post(url, headers, body, timeouts)
            return answer.status, answer.headers, answer.body, seen
        request = httpx.Request("POST", url, headers=headers, content=body, extensions={"timeout": timeouts})
        response = await transport.handle_async_request(request)
        content = await response.aread()
    return response.status_code, response.headers, content, seen


async def failing_post(
    transport: ProviderTransport, url: str, via: str = "httpx", **timeouts: float
) -> tuple[Exception, Exchange]:
    """One POST that must fail, through httpx's transport API or the client's lean `post`."""
    with exchange() as seen:
        try:
            if via == "httpx":
                request = httpx.Request("POST", url, content=b"a=1", extensions={"timeout": timeouts})
                response = await transport.handle_async_request(request)
                await response.aread()
            else:
                await transport.post(url, {}, b"a=1", timeouts)
        except httpx.HTTPError as exc:
            return exc, seen
    raise AssertionError("the request did not fail")


async def closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    return port


@pytest.mark.parametrize("via", ["httpx", "post"])
def test_keep_alive_reuses_one_connection_and_frames_the_request(via):
    async def go():
        async with Peer(answer_ok) as peer:
            transport = ProviderTransport()
            answers = [await post(transport, peer.url, b"x=%d" % i, via=via) for i in range(5)]
            await transport.aclose()
            return peer, answers

    peer, answers = run(go())
    assert [a[0] for a in answers] == [200] * 5
    assert [a[2] for a in answers] == [b'{"n": %d}' % i for i in range(1, 6)]
    assert answers[0][1]["content-type"] == "application/json"
    assert peer.connections == 1
    first = peer.requests[0].lower()
    assert first.startswith(b"post / http/1.1\r\n")
    assert b"\r\ncontent-length: 3\r\n" in first
    assert first.endswith(b"\r\n\r\nx=0")


def test_concurrent_requests_open_connections_up_to_the_limit_then_wait():
    async def hold(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        await peer.release.wait()
        writer.write(ok())
        return True

    async def go():
        async with Peer(hold) as peer:
            transport = ProviderTransport(max_connections=2)
            tasks = [asyncio.create_task(post(transport, peer.url)) for _ in range(3)]
            await peer.arrived(2)
            await asyncio.sleep(0.05)  # give a third connection the chance to open, if it would
            third_waits = not tasks[2].done() and len(peer.requests) == 2
            error, seen = await failing_post(transport, peer.url, "post", pool=0.05)
            peer.release.set()
            statuses = [status for status, *_ in await asyncio.gather(*tasks)]
            await transport.aclose()
            return peer, third_waits, error, seen, statuses

    peer, third_waits, error, seen, statuses = run(go())
    assert third_waits
    assert isinstance(error, httpx.TimeoutException)
    assert seen.sent_at is None  # waited for a connection, never written: certainly not sent
    assert statuses == [200, 200, 200]
    assert peer.connections == 2  # the third request waited for a connection instead of opening one


def test_connection_close_answer_is_not_reused():
    async def close_each(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"{}", "Connection: close"))
        return False

    async def go():
        async with Peer(close_each) as peer:
            transport = ProviderTransport()
            statuses = [(await post(transport, peer.url))[0] for _ in range(3)]
            await transport.aclose()
            return peer, statuses

    peer, statuses = run(go())
    assert statuses == [200] * 3
    assert peer.connections == 3


async def drop(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    return False


async def silent(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    await peer.release.wait()
    return False


async def garbage(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"this is not HTTP\r\n\r\n")
    return True


async def bad_gzip(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(ok(b"not gzip at all", "Content-Encoding: gzip"))
    return True


@pytest.mark.parametrize("via", ["httpx", "post"])
@pytest.mark.parametrize(
    ("answer", "timeouts", "error"),
    [
        (drop, {}, httpx.RemoteProtocolError),
        (silent, {"read": 0.2}, httpx.ReadTimeout),
        (garbage, {}, httpx.RemoteProtocolError),
        (bad_gzip, {}, httpx.HTTPError),
    ],
    ids=["dropped", "silent", "garbage", "bad-gzip"],
)
def test_a_request_that_went_out_is_marked_sent_whatever_the_error(answer, timeouts, error, via):
    """httpx-aiohttp maps a dropped connection to `httpx.ConnectTimeout`: the error type cannot tell
    whether the request left. The exchange can, and the client reports these as "outcome unknown"."""

    async def go():
        async with Peer(answer) as peer:
            transport = ProviderTransport()
            failure, seen = await failing_post(transport, peer.url, via, **timeouts)
            await transport.aclose()
            return peer, failure, seen

    peer, failure, seen = run(go())
    assert len(peer.requests) == 1
    assert seen.sent_at is not None, failure
    assert isinstance(failure, error)  # named for what happened, as far as aiohttp tells


@pytest.mark.parametrize("via", ["httpx", "post"])
def test_connection_refused_is_a_connect_error_never_marked_sent(via):
    async def go():
        url = f"http://127.0.0.1:{await closed_port()}/"
        transport = ProviderTransport(max_connections=1)
        results = [await failing_post(transport, url, via, pool=1.0) for _ in range(2)]
        await transport.aclose()
        return results

    results = run(go())  # the second attempt is not stuck behind a leaked slot
    assert [type(error) for error, _ in results] == [httpx.ConnectError] * 2
    assert [seen.sent_at for _, seen in results] == [None, None]


@pytest.mark.parametrize("via", ["httpx", "post"])
def test_unasked_for_gzip_is_decoded(via):
    async def gzipped(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(gzip.compress(b'{"zipped": 1}'), "Content-Encoding: gzip"))
        return True

    async def go():
        async with Peer(gzipped) as peer:
            transport = ProviderTransport()
            answer = await post(transport, peer.url, via=via)
            await transport.aclose()
            return answer

    status, _, body, _ = run(go())
    assert (status, body) == (200, b'{"zipped": 1}')


@pytest.mark.parametrize("via", ["httpx", "post"])
def test_on_sent_reports_when_the_request_was_written_once(via):
    async def go():
        async with Peer(answer_ok) as peer:
            transport = ProviderTransport()
            seen: list[float] = []
            before = time.monotonic()
            *_, exchange_seen = await post(transport, peer.url, b"a=" + b"x" * 100_000, seen.append, via)
            after = time.monotonic()
            await transport.aclose()
            return before, seen, exchange_seen, after

    before, seen, exchange_seen, after = run(go())
    assert len(seen) == 1  # a body written in several chunks still counts once, at the first
    assert before <= seen[0] == exchange_seen.sent_at <= after


def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool():
    async def slow_first(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(peer.requests) == 1:
            await peer.release.wait()
        writer.write(ok())
        return True

    async def go():
        async with Peer(slow_first) as peer:
            transport = ProviderTransport()
            task = asyncio.create_task(post(transport, peer.url))
            await peer.arrived(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            status, *_ = await post(transport, peer.url, read=5.0)  # fails, not hangs, if reused
            await transport.aclose()
            return peer, status

    peer, status = run(go())
    assert status == 200
    assert peer.connections == 2  # the second request did not ride on the half-done exchange


def test_warm_opens_connections_that_the_next_requests_use_and_sends_no_post():
    async def go():
        async with Peer(answer_ok) as peer:
            transport = ProviderTransport(max_connections=3)
            opened = await transport.warm(peer.url, connections=3)
            await asyncio.gather(*(post(transport, peer.url) for _ in range(3)))
            again = await transport.warm(peer.url, connections=2)  # just used: its connections are open
            await transport.aclose()
            return peer, opened, again

    peer, opened, again = run(go())
    assert (opened, again) == (3, 0)
    assert peer.connections == 3  # the requests rode on the warmed connections
    methods = [r.split(b" ", 1)[0] for r in peer.requests]
    assert sorted(methods) == [b"HEAD"] * 3 + [b"POST"] * 3


def test_warm_against_a_closed_port_opens_nothing_and_raises_nothing():
    async def go():
        transport = ProviderTransport()
        opened = await transport.warm(f"http://127.0.0.1:{await closed_port()}/", 2, seconds=1.0)
        await transport.aclose()
        return opened

    assert run(go()) == 0


def test_concurrent_warm_ups_open_one_connection_not_one_each():
    """Every submitted job asks for a warm connection; a burst of 200 single sends must not open 200."""

    async def go():
        async with Peer(answer_ok) as peer:
            transport = ProviderTransport()
            opened = await asyncio.gather(*(transport.warm(peer.url, 1) for _ in range(20)))
            await transport.aclose()
            return peer, opened

    peer, opened = run(go())
    assert sum(opened) == 1
    assert peer.connections == 1


class Proxy:
    """A forward HTTP proxy on loopback: records each request line and relays the bytes."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        self.lines.append(line)
        target = httpx.URL(line.split(b" ")[1].decode())  # absolute form: http://host:port/path
        up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def test_proxy_from_the_environment_carries_requests_unless_no_proxy_says_otherwise(monkeypatch):
    async def go(no_proxy: str):
        monkeypatch.setenv("NO_PROXY", no_proxy)
        async with Peer(answer_ok) as peer, Proxy() as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            transport = ProviderTransport(proxy=proxy_for(peer.url))
            status, *_ = await post(transport, peer.url)
            await transport.aclose()
            return status, proxy.lines, peer.url

    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    status, lines, url = run(go("example.com"))
    assert status == 200
    assert lines == [f"POST {url} HTTP/1.1".encode()]
    status, lines, _ = run(go("127.0.0.1"))
    assert (status, lines) == (200, [])
    monkeypatch.delenv("HTTP_PROXY")
    assert proxy_for("http://127.0.0.1:1/") is None
