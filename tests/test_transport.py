"""The SMS client's HTTP/1.1 transport against scripted HTTP peers on loopback.

Each peer is a real asyncio server that reads whole requests and answers the way a test scripts it:
keep-alive, chunked, `Connection: close`, silence, a dropped connection, garbage, gzip.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from bot.sms.transport import Http1Transport
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
    writer.write(ok(b'{"n": %d}' % len(peer.requests)))
    return True


def post(transport: Http1Transport, url: str, body: bytes = b"a=1", **timeouts: float):
    return transport.post_raw(url, {"content-type": "application/x-www-form-urlencoded"}, body, timeouts)


def exchanges(answer: Answer, n: int, **options: float) -> tuple[Peer, list]:
    """`n` requests in a row through one transport against a peer answering with `answer`."""

    async def go():
        async with Peer(answer) as peer:
            transport = Http1Transport(**options)
            answers = [await post(transport, peer.url, b"x=%d" % i) for i in range(n)]
            await transport.aclose()
            return peer, answers

    return run(go())


def failed_exchange(answer: Answer, error: type[Exception], **timeouts: float) -> tuple[Peer, int, float]:
    """One request that must fail with `error`: the peer, connections still open after, seconds taken."""

    async def go():
        async with Peer(answer) as peer:
            transport = Http1Transport()
            t0 = time.monotonic()
            with pytest.raises(error):
                await post(transport, peer.url, **timeouts)
            waited = time.monotonic() - t0
            open_after = transport.open_connections
            await transport.aclose()
            return peer, open_after, waited

    return run(go())


def test_keep_alive_reuses_one_connection_and_frames_the_request():
    peer, answers = exchanges(answer_ok, 5)
    assert [a[0] for a in answers] == [200] * 5
    assert [a[2] for a in answers] == [b'{"n": %d}' % i for i in range(1, 6)]
    assert answers[0][1] == {"content-type": "application/json"}
    assert peer.connections == 1
    first = peer.requests[0]
    assert first.startswith(b"POST / HTTP/1.1\r\n")
    assert b"\r\ncontent-length: 3\r\n" in first
    assert b"\r\nhost: 127.0.0.1:" in first
    assert first.endswith(b"\r\n\r\nx=0")


def test_concurrent_requests_open_connections_up_to_the_limit_then_wait():
    async def hold(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        await peer.release.wait()
        writer.write(ok())
        return True

    async def go():
        async with Peer(hold) as peer:
            transport = Http1Transport(max_connections=2)
            tasks = [asyncio.create_task(post(transport, peer.url)) for _ in range(3)]
            await peer.arrived(2)
            third_waits = not tasks[2].done() and len(peer.requests) == 2
            with pytest.raises(httpx.PoolTimeout):
                await post(transport, peer.url, pool=0.05)
            peer.release.set()
            statuses = [status for status, _, _ in await asyncio.gather(*tasks)]
            await transport.aclose()
            return peer, third_waits, statuses, transport.open_connections

    peer, third_waits, statuses, still_open = run(go())
    assert third_waits
    assert statuses == [200, 200, 200]
    assert peer.connections == 2  # the third request waited for a connection instead of opening one
    assert still_open == 0


def test_chunked_answer_is_assembled():
    async def chunked(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
            b'5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'
        )
        return True

    peer, answers = exchanges(chunked, 2)
    assert [a[2] for a in answers] == [b'{"a": 1}'] * 2
    assert peer.connections == 1


def test_connection_close_answer_is_not_reused():
    async def close_each(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"{}", "Connection: close"))
        return False

    peer, answers = exchanges(close_each, 3)
    assert [a[0] for a in answers] == [200] * 3
    assert peer.connections == 3


def test_idle_connections_past_keepalive_are_not_reused():
    peer, _ = exchanges(answer_ok, 3, keepalive_seconds=0)
    assert peer.connections == 3


async def drop(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    return False


async def silent(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    await peer.release.wait()
    return False


async def garbage(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"this is not HTTP\r\n\r\n")
    return True


@pytest.mark.parametrize(
    ("answer", "error", "timeouts"),
    [
        (drop, httpx.RemoteProtocolError, {}),  # the peer took the request and hung up
        (silent, httpx.ReadTimeout, {"read": 0.2}),
        (garbage, httpx.RemoteProtocolError, {}),
    ],
    ids=["dropped", "silent", "garbage"],
)
def test_a_request_that_went_out_fails_as_unknown_once_and_drops_its_connection(answer, error, timeouts):
    """Errors after the write are the ones the client reports as "outcome unknown" and never resends."""
    peer, open_after, waited = failed_exchange(answer, error, **timeouts)
    assert len(peer.requests) == 1
    assert open_after == 0
    assert waited >= timeouts.get("read", 0)


def test_unasked_for_gzip_is_decoded():
    async def gzipped(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(gzip.compress(b'{"zipped": 1}'), "Content-Encoding: gzip"))
        return True

    async def go():
        async with Peer(gzipped) as peer:
            transport = Http1Transport()
            via_raw = await post(transport, peer.url)
            async with httpx.AsyncClient(transport=transport) as client:
                via_httpx = await client.post(peer.url, content=b"a=1")
            return via_raw, via_httpx

    (status, _, body), response = run(go())
    assert (status, body) == (200, b'{"zipped": 1}')
    assert response.json() == {"zipped": 1}


def test_an_answer_that_cannot_be_decompressed_is_a_protocol_error():
    async def bad_gzip(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(ok(b"not gzip at all", "Content-Encoding: gzip"))
        return True

    peer, _, _ = failed_exchange(bad_gzip, httpx.RemoteProtocolError)  # the client: outcome unknown
    assert len(peer.requests) == 1


def test_connection_refused_is_a_connect_error_and_frees_the_slot():
    async def go():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        transport = Http1Transport(max_connections=1)
        errors = []
        for _ in range(2):  # the second attempt must not be stuck behind a leaked slot
            try:
                await post(transport, f"http://127.0.0.1:{port}/", pool=1.0)
            except httpx.ConnectError as exc:
                errors.append(exc)
        return errors, transport.open_connections

    errors, open_after = run(go())
    assert len(errors) == 2
    assert open_after == 0


def test_header_injection_is_refused_before_anything_is_sent():
    async def go():
        async with Peer(answer_ok) as peer:
            transport = Http1Transport()
            with pytest.raises(ValueError, match="invalid HTTP header"):
                await transport.post_raw(peer.url, {"x-a": "1\r\nx-b: 2"}, b"", {})
            return peer

    peer = run(go())
    assert peer.connections == 0


def test_on_sent_reports_when_the_request_was_written():
    async def go():
        async with Peer(answer_ok) as peer:
            transport = Http1Transport()
            seen: list[float] = []
            before = time.monotonic()
            await transport.post_raw(peer.url, {}, b"a=1", {}, seen.append)
            after = time.monotonic()
            await transport.aclose()
            return before, seen, after

    before, seen, after = run(go())
    assert len(seen) == 1
    assert before <= seen[0] <= after


def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool():
    async def slow_first(peer: Peer, request: bytes, writer: asyncio.StreamWriter) -> bool:
        if len(peer.requests) == 1:
            await peer.release.wait()
        writer.write(ok())
        return True

    async def go():
        async with Peer(slow_first) as peer:
            transport = Http1Transport()
            task = asyncio.create_task(post(transport, peer.url))
            await peer.arrived(1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            status, _, _ = await post(transport, peer.url, read=5.0)  # fails, not hangs, if reused
            await transport.aclose()
            return peer, status

    peer, status = run(go())
    assert status == 200
    assert peer.connections == 2  # the second request did not ride on the half-done exchange


def test_works_as_an_httpx_transport():
    async def go():
        async with Peer(answer_ok) as peer, httpx.AsyncClient(transport=Http1Transport()) as client:
            got = await client.get(peer.url + "path?q=1")
            posted = await client.post(peer.url, data={"a": "b c"})
            return peer, got, posted

    peer, got, posted = run(go())
    assert got.status_code == 200 and got.json() == {"n": 1}
    assert posted.json() == {"n": 2}
    assert peer.requests[0].startswith(b"GET /path?q=1 HTTP/1.1\r\n")
    assert b"content-length" not in peer.requests[0].lower()
    assert peer.requests[1].endswith(b"\r\n\r\na=b+c")


def test_warm_opens_connections_that_the_next_requests_use():
    async def go():
        async with Peer(answer_ok) as peer:
            transport = Http1Transport(max_connections=3)
            opened = await transport.warm(peer.url, connections=5)
            again = await transport.warm(peer.url, connections=2)  # enough are idle already
            await asyncio.gather(*(post(transport, peer.url) for _ in range(3)))
            await transport.aclose()
            return peer, opened, again

    peer, opened, again = run(go())
    assert (opened, again) == (3, 0)  # bounded by max_connections
    assert peer.connections == 3  # the requests rode on the warmed connections
    assert len(peer.requests) == 3  # warming sends nothing


def test_warm_against_a_closed_port_opens_nothing_and_raises_nothing():
    async def go():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        transport = Http1Transport()
        return await transport.warm(f"http://127.0.0.1:{port}/", 2), transport.open_connections

    assert run(go()) == (0, 0)


def test_concurrent_warm_ups_open_one_connection_not_one_each():
    """Every submitted job asks for a warm connection; a burst of 200 single sends must not open 200."""

    async def go():
        async with Peer(answer_ok) as peer:
            transport = Http1Transport()
            opened = await asyncio.gather(*(transport.warm(peer.url, 1) for _ in range(20)))
            busy = asyncio.create_task(post(transport, peer.url))
            await peer.arrived(1)
            again = await transport.warm(peer.url, 1)  # the one connection is in use: it still counts
            await busy
            await transport.aclose()
            return peer, sum(opened), again

    peer, opened, again = run(go())
    assert (opened, again) == (1, 0)
    assert peer.connections == 1
