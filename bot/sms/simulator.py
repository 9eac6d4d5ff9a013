"""A local stand-in for Alibaba Cloud SMS: the tests' fake provider, the benchmarks' peer, the dry-run mode.

It checks what the real gateway checks (V3 signature following `SignedHeaders`, query decoded with
form semantics, body hash, 15-minute clock window, nonce reuse), enforces the account limits
(2,000/s single, 1/s batch, 300/s query, sliding one-second windows, `Throttling.User` with HTTP 400),
answers with the documented bodies (all strings, lists as JSON inside strings), and can inject faults.

Run alone: `python -m bot.sms.simulator --port 8090 --latency 0.05`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import contextlib
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape as xml_escape

import phonenumbers
from aiohttp import web
from phonenumbers import carrier
from pydantic import SecretStr

from . import signing
from .config import SmsSettings
from .encoding import analyse
from .phone import region_name

S = TypeVar("S", bound=SmsSettings)

ACTIONS = {
    "SendMessageToGlobe": "single",
    "BatchSendMessageToGlobe": "batch",
    "QueryMessage": "query",
    "QueryTokenForMnsQueue": "token",  # Dybaseapi 2017-05-25: the receipt queue's credentials
}
VERSIONS = {"token": "2017-05-25"}  # the others: 2018-05-01


@dataclass
class Fault:
    """One injected fault for the next request of `action` (any action when None).

    kind: throttle | unavailable (503) | internal (500) | garbage (200, not JSON) | html502 |
          timeout (answer after `delay` s) | reset (drop the connection after reading the request) |
          code (200 with ResponseCode `code`) | gateway (HTTP `status` with Code `code`)
    """

    kind: str
    action: str | None = None
    code: str | None = None
    status: int = 400
    delay: float = 0.0
    retry_after_ms: int | None = None
    times: int = 1


@dataclass
class Received:
    action: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float
    answered: str = ""


# Dry run (SMS_DRY_RUN=true, or the CLI's --dry-run): numbers ending in these digits are refused / left
# with an unknown outcome by the simulator, so a newcomer can see every kind of outcome.
# Accepted ones ending in these get a receipt saying not delivered / expired; the others are delivered.
DRY_RUN_FAIL_SUFFIX = "0000"
DRY_RUN_UNKNOWN_SUFFIX = "0001"
DRY_RUN_UNDELIVERED_SUFFIX = "0002"
DRY_RUN_EXPIRED_SUFFIX = "0003"


def dry_run_provider() -> FakeProvider:
    """The simulator a dry run sends to (start it with `await provider.start("127.0.0.1", 0)`; set
    `receipts_url` to have its receipts pushed)."""
    return FakeProvider(
        fail_suffixes=(DRY_RUN_FAIL_SUFFIX,),
        unknown_suffixes=(DRY_RUN_UNKNOWN_SUFFIX,),
        undelivered_suffixes=(DRY_RUN_UNDELIVERED_SUFFIX,),
        expired_suffixes=(DRY_RUN_EXPIRED_SUFFIX,),
        receipt_delay=1.0,
        record=False,
    )


@dataclass
class FakeProvider:
    access_key_id: str = "testid"
    access_key_secret: str = "testsecret"  # noqa: S105 (the test credential of the shared doc)
    latency: float = 0.0
    single_rate: int = 2000
    batch_rate: int = 1
    query_rate: int = 300
    clock_window: float = 900.0
    # Numbers (API form) the provider refuses: single send answers MOBILE_NUMBER_ILLEGAL, batch lists them
    # in FailedList. Numbers ending in one of `fail_suffixes` are refused too (the dry-run test numbers).
    reject_numbers: set[str] = field(default_factory=set)
    fail_suffixes: tuple[str, ...] = ()
    # Numbers ending in one of these are accepted, but the answer is lost (HTTP 500): the message goes
    # out and its receipt comes, as when a real answer is lost on the way back.
    unknown_suffixes: tuple[str, ...] = ()
    record: bool = True
    control: bool = False
    # Delivery receipts, pushed like the real service's: a JSON array POSTed to `receipts_url`,
    # `receipt_delay` seconds after acceptance, up to `push_batch` merged per push; a failed push is tried
    # again twice (after `repush_delay`, then 5× that), then given up. `duplicate_every`: every Nth
    # receipt is pushed twice; `shuffle`: a push's receipts come in reverse order. Numbers ending in
    # `undelivered_suffixes` / `expired_suffixes` are not delivered / expire; `silent_suffixes` get no
    # push at all (QueryMessage still knows them). QueryMessage answers "sending" until the receipt is due.
    receipts_url: str = ""
    receipt_delay: float = 0.0
    push_batch: int = 500
    repush_delay: float = 60.0
    duplicate_every: int = 0
    shuffle: bool = False
    undelivered_suffixes: tuple[str, ...] = ()
    expired_suffixes: tuple[str, ...] = ()
    silent_suffixes: tuple[str, ...] = ()
    # The receipt queue (MNS) at /queues/<queue_name>/messages, when set: receipts go there too (bodies
    # alternately JSON and base64 of JSON), handed out for `queue_visibility` seconds until deleted.
    queue_name: str = ""
    queue_visibility: float = 30.0

    def __post_init__(self) -> None:
        self.received: list[Received] = []
        self.faults: deque[Fault] = deque()
        # span_us: microseconds from the first to the last API request that arrived (benchmarks' ratios)
        self.counts: dict[str, int] = {
            "requests": 0,
            "accepted": 0,
            "throttled": 0,
            "rejected": 0,
            "span_us": 0,
            "receipts_pushed": 0,
            "push_failures": 0,
        }
        self._first_arrival: float | None = None
        self._windows: dict[str, deque[float]] = {k: deque() for k in ("single", "batch", "query", "token")}
        self._queue: list[dict[str, Any]] = []  # messages: body, handle, visible_at, dequeued
        self._queue_changed: asyncio.Event | None = None
        self._queue_empty: asyncio.Event | None = None
        self._mns_tokens: dict[str, tuple[str, str]] = {}  # temporary AccessKeyId -> (secret, token)
        self._nonces: dict[str, float] = {}
        self._ids = itertools.count(100_000_001)
        self._messages: dict[str, dict[str, Any]] = {}
        self._due: deque[tuple[float, str]] = deque()  # (monotonic time its receipt is due, message id)
        self._pusher: asyncio.Task[None] | None = None
        self._receipt_count = 0
        self.push_ms: list[float] = []  # how long the receiver took to answer each push (benchmarks)
        self._hold: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ------------------------------------------------------------------ control (thread-safe)
    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def hold(self) -> None:
        """Hold every answer until `release()` (requests are still received and recorded)."""
        self._call(self._set_hold, True)

    def release(self) -> None:
        self._call(self._set_hold, False)

    def _set_hold(self, on: bool) -> None:
        if on:
            self._hold = asyncio.Event()
        elif self._hold is not None:
            self._hold.set()
            self._hold = None

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if (
            loop is not None
            and loop.is_running()
            and threading.current_thread() is not getattr(self, "_thread", None)
        ):
            done = threading.Event()

            def run() -> None:
                fn(*args)
                done.set()

            loop.call_soon_threadsafe(run)
            done.wait(5)
        else:
            fn(*args)

    def sent(self, action: str = "SendMessageToGlobe") -> list[Received]:
        return [r for r in self.received if r.action == action]

    def numbers_sent(self) -> list[str]:
        return numbers_accepted(self.received)

    # ------------------------------------------------------------------ server
    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/", self._handle)
        app.router.add_get("/_stats", self._stats)
        app.router.add_get("/queues/{name}/messages", self._mns_receive)
        app.router.add_delete("/queues/{name}/messages", self._mns_delete)
        if self.control:
            app.router.add_post("/_control/reset", self._ctl_reset)
            app.router.add_post("/_control/configure", self._ctl_configure)
            app.router.add_post("/_control/inject", self._ctl_inject)
            app.router.add_post("/_control/hold", self._ctl_hold)
            app.router.add_get("/_control/received", self._ctl_received)
        return app

    # ------------------------------------------------------------------ control API (tests, benchmarks)
    CONFIG_FIELDS = (
        "latency",
        "single_rate",
        "batch_rate",
        "query_rate",
        "clock_window",
        "reject_numbers",
        "fail_suffixes",
        "unknown_suffixes",
        "record",
        "receipts_url",
        "receipt_delay",
        "push_batch",
        "repush_delay",
        "duplicate_every",
        "shuffle",
        "undelivered_suffixes",
        "expired_suffixes",
        "silent_suffixes",
        "queue_name",
        "queue_visibility",
    )

    def reset(self, **config: Any) -> None:
        self.configure(**config)
        self.received.clear()
        self.faults.clear()
        self._due.clear()
        self.push_ms.clear()
        self._queue.clear()
        self.counts.update({k: 0 for k in self.counts})
        self._first_arrival = None
        for window in self._windows.values():
            window.clear()
        self._set_hold(False)

    def configure(self, **config: Any) -> None:
        """Change settings (CONFIG_FIELDS) and nothing else: what was received and injected stays."""
        for name in self.CONFIG_FIELDS:
            if name in config:
                value = config[name]
                if name == "reject_numbers":
                    value = set(value)
                elif name.endswith("_suffixes"):
                    value = tuple(value)
                setattr(self, name, value)

    async def _ctl_configure(self, request: web.Request) -> web.Response:
        self.configure(**(await request.json()))
        return web.json_response({"ok": True})

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        defaults = FakeProvider()
        config = {name: getattr(defaults, name) for name in self.CONFIG_FIELDS}
        config.update(await request.json())
        self.reset(**config)
        return web.json_response({"ok": True})

    async def _ctl_inject(self, request: web.Request) -> web.Response:
        self.inject(*(Fault(**f) for f in await request.json()))
        return web.json_response({"ok": True})

    async def _ctl_hold(self, request: web.Request) -> web.Response:
        self._set_hold(bool((await request.json()).get("on")))
        return web.json_response({"ok": True})

    async def _ctl_received(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"counts": self.counts, "received": [r.__dict__ for r in self.received], "push_ms": self.push_ms}
        )

    def settings_for(self, settings: S, url: str) -> S:
        """`settings` pointed at this simulator, listening at `url`, with its credentials."""
        return settings.model_copy(
            update={
                "endpoint": url,
                "access_key_id": self.access_key_id,
                "access_key_secret": SecretStr(self.access_key_secret),
                "security_token": None,
            }
        )

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.url = f"http://{host}:{sock.getsockname()[1]}"
        return self.url

    async def stop(self) -> None:
        if self._hold is not None:
            self._hold.set()
        if self._pusher is not None:
            for task in [*self._pushes, self._pusher]:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        if self._runner is not None:
            await self._runner.cleanup()

    def start_in_thread(self) -> str:
        """Serve from a thread of its own (its own event loop); returns the base URL."""
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-provider", daemon=True)
        self._thread.start()
        started.wait(10)
        return self.url

    def stop_thread(self) -> None:
        if self._loop is not None:
            if self._hold is not None:
                self._loop.call_soon_threadsafe(self._hold.set)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.counts)

    # ------------------------------------------------------------------ request handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        self.counts["requests"] += 1
        if self._first_arrival is None:
            self._first_arrival = arrived
        self.counts["span_us"] = round((arrived - self._first_arrival) * 1e6)
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        action = headers.get("x-acs-action", "")
        params = dict(parse_qsl(request.query_string, keep_blank_values=True))
        if body and headers.get("content-type", "").startswith(signing.FORM_CONTENT_TYPE):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        rec = Received(action, params, headers, arrived)
        if self.record:
            self.received.append(rec)

        problem = self._check_signature(request, headers, body)
        if problem is not None:
            rec.answered = problem[1]
            self.counts["rejected"] += 1
            return _gateway_error(problem[0], problem[1], problem[2])
        kind = ACTIONS.get(action)
        if kind is None:
            rec.answered = "InvalidApi.NotFound"
            return _gateway_error(404, "InvalidApi.NotFound", f"Specified api is not found ({action}).")
        if headers.get("x-acs-version") != VERSIONS.get(kind, "2018-05-01"):
            rec.answered = "InvalidApi.NotFound"
            return _gateway_error(404, "InvalidApi.NotFound", "Specified api version is not found.")

        fault = self._take_fault(action)
        if fault is not None and fault.kind == "throttle":
            self.counts["throttled"] += 1
            rec.answered = "Throttling.User"
            extra = (
                {"x-acs-retry-after": str(fault.retry_after_ms)} if fault.retry_after_ms is not None else None
            )
            return _gateway_error(
                400, "Throttling.User", "Request was denied due to user flow control.", extra
            )
        if not self._admit(kind, arrived):
            self.counts["throttled"] += 1
            rec.answered = "Throttling.User"
            return _gateway_error(400, "Throttling.User", "Request was denied due to user flow control.")

        if self.latency:
            await asyncio.sleep(self.latency)
        if self._hold is not None:
            await self._hold.wait()
        if fault is not None:
            response = await self._apply_fault(fault, request, rec)
            if response is not None:
                return response
        if kind == "single":
            answer = self._single(params)
        elif kind == "batch":
            answer = self._batch(params)
        elif kind == "token":
            answer = self._mns_token(params)
        else:
            answer = self._query(params)
        rec.answered = answer.get("ResponseCode") or answer.get("Code", "")
        if rec.answered == "OK" and kind != "token":
            self.counts["accepted"] += 1
        status = answer.pop("_status", 200)
        return web.json_response(answer, status=status)

    def _take_fault(self, action: str) -> Fault | None:
        for fault in self.faults:
            if fault.action in (None, action):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    async def _apply_fault(
        self, fault: Fault, request: web.Request, rec: Received
    ) -> web.StreamResponse | None:
        rec.answered = fault.kind
        if fault.kind == "unavailable":
            extra = (
                {"x-acs-retry-after": str(fault.retry_after_ms)} if fault.retry_after_ms is not None else None
            )
            return _gateway_error(
                503, "ServiceUnavailable", "The request has failed due to a temporary failure.", extra
            )
        if fault.kind == "internal":
            return _gateway_error(
                500, "InternalError", "The request processing has failed due to some unknown error."
            )
        if fault.kind == "garbage":
            return web.Response(status=200, text="<html>gateway oops</html>", content_type="text/html")
        if fault.kind == "html502":
            return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")
        if fault.kind == "timeout":
            await asyncio.sleep(fault.delay or 30)
            return None
        if fault.kind == "reset":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # the handler ends without an answer
        if fault.kind == "code":
            rec.answered = fault.code or "INVALID_PARAMETERS"
            return web.json_response(
                {
                    "RequestId": str(uuid.uuid4()).upper(),
                    "ResponseCode": fault.code,
                    "ResponseDescription": f"simulated {fault.code}",
                }
            )
        if fault.kind == "gateway":
            rec.answered = fault.code or "InvalidParameter"
            return _gateway_error(fault.status, fault.code or "InvalidParameter", "simulated gateway error")
        raise ValueError(f"unknown fault kind {fault.kind!r}")

    def _admit(self, kind: str, now: float) -> bool:
        limit = {
            "single": self.single_rate,
            "batch": self.batch_rate,
            "query": self.query_rate,
            "token": 100,
        }[kind]
        window = self._windows[kind]
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _check_signature(
        self, request: web.Request, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, str] | None:
        auth = headers.get("authorization")
        if not auth:
            return 400, "MissingAuthorization", "Authorization header is missing."
        try:
            fields = signing.parse_authorization(auth)
        except ValueError as exc:
            return 400, "IncompleteSignature", str(exc)
        if fields["Credential"] != self.access_key_id:
            return 404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."
        signed = fields["SignedHeaders"].split(";")
        required = {
            "host",
            "x-acs-action",
            "x-acs-version",
            "x-acs-date",
            "x-acs-signature-nonce",
            "x-acs-content-sha256",
        }
        required |= {h for h in headers if h.startswith("x-acs-")}
        if body:
            required.add("content-type")
        if not required <= set(signed) or signed != sorted(signed):
            return (
                400,
                "IncompleteSignature",
                "SignedHeaders must list host, content-type and every x-acs-* header.",
            )
        if any(h not in headers for h in signed):
            return 400, "IncompleteSignature", "A signed header is missing from the request."
        if hashlib.sha256(body).hexdigest() != headers["x-acs-content-sha256"]:
            return 400, "SignatureDoesNotMatch", "x-acs-content-sha256 does not match the body."
        try:
            sent_at = calendar.timegm(time.strptime(headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ"))
        except ValueError:
            return 400, "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted."
        if abs(time.time() - sent_at) > self.clock_window:
            return 400, "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired."
        nonce = headers["x-acs-signature-nonce"]
        now = time.time()
        if nonce in self._nonces and now - self._nonces[nonce] < self.clock_window:
            return 400, "SignatureNonceUsed", "Specified signature nonce was used already."
        if len(self._nonces) > 100_000:
            self._nonces = {n: t for n, t in self._nonces.items() if now - t < self.clock_window}
        query_pairs = parse_qsl(request.query_string, keep_blank_values=True)  # '+' -> space
        canonical = signing.canonical_request(
            request.method,
            signing.canonical_query(query_pairs),
            headers,
            signed,
            headers["x-acs-content-sha256"],
        )
        expected = signing.signature(self.access_key_secret, canonical)
        if not hmac.compare_digest(expected, fields["Signature"]):
            return 400, "SignatureDoesNotMatch", "Specified signature is not matched with our calculation."
        self._nonces[nonce] = now
        return None

    # ------------------------------------------------------------------ answers
    def _refused(self, number: str) -> bool:
        return (
            number in self.reject_numbers
            or number.startswith("86")
            or any(number.endswith(s) for s in self.fail_suffixes)
        )

    def _single(self, params: dict[str, str]) -> dict[str, Any]:
        to, message = params.get("To", ""), params.get("Message", "")
        if not to or not message:
            return {"_status": 400, "Code": "MissingParameter", "Message": "To and Message are required."}
        request_id = str(uuid.uuid4()).upper()
        if any(to.endswith(s) for s in self.unknown_suffixes):
            self._accept_message(to, message, params.get("TaskId"))  # it went out; the answer is lost
            return {
                "_status": 500,
                "Code": "InternalError",
                "Message": "simulated unknown outcome",
                "RequestId": request_id,
            }
        if self._refused(to) or not to.isdigit():
            code = "COUNTRY_RESTRICTED" if to.startswith("86") else "MOBILE_NUMBER_ILLEGAL"
            return {"RequestId": request_id, "ResponseCode": code, "ResponseDescription": f"simulated {code}"}
        message_id = self._accept_message(to, message, params.get("TaskId"))
        answer: dict[str, Any] = {
            "ResponseCode": "OK",
            "NumberDetail": _number_detail(to),
            "RequestId": request_id,
            "Segments": str(analyse(message).segments),
            "ResponseDescription": "The SMS Send Request was accepted",
            "To": to,
            "MessageId": message_id,
        }
        if "From" in params:
            answer["From"] = params["From"]
        return answer

    def _batch(self, params: dict[str, str]) -> dict[str, Any]:
        request_id = str(uuid.uuid4()).upper()
        try:
            numbers = json.loads(params.get("To", ""))
            messages = json.loads(params.get("Message", ""))
            if not isinstance(numbers, list) or not isinstance(messages, list):
                raise ValueError
        except ValueError:
            return {
                "RequestId": request_id,
                "ResponseCode": "INVALID_JSON_PARAM",
                "ResponseDescription": "bad JSON",
            }
        if len(numbers) > 1000:
            return {
                "RequestId": request_id,
                "ResponseCode": "MOBILE_COUNT_OVER_LIMIT",
                "ResponseDescription": "over 1000",
            }
        if len(numbers) != len(messages) or not numbers:
            return {
                "RequestId": request_id,
                "ResponseCode": "INVALID_PARAMETERS",
                "ResponseDescription": "To/Message length",
            }
        if params.get("Type") not in (None, "NOTIFY", "MKT"):
            return {
                "RequestId": request_id,
                "ResponseCode": "INVALID_PARAMETERS",
                "ResponseDescription": "Type",
            }
        failed, ids = [], []
        for number, message in zip(numbers, messages, strict=True):
            if self._refused(str(number)):
                failed.append(str(number))
                continue
            ids.append(self._accept_message(str(number), str(message), params.get("TaskId")))
        answer: dict[str, Any] = {
            "ResponseCode": "OK",
            "RequestId": request_id,
            "FailedList": json.dumps(failed),
            "ResponseDescription": "The SMS Send Request was accepted",
            "MessageIdList": json.dumps(ids),
            "SuccessCount": str(len(ids)),
        }
        if "From" in params:
            answer["From"] = params["From"]
        return answer

    def _query(self, params: dict[str, str]) -> dict[str, Any]:
        message_id = params.get("MessageId", "")
        request_id = str(uuid.uuid4()).upper()
        record = self._messages.get(message_id)
        if record is None:
            return {
                "RequestId": request_id,
                "ResponseCode": "DATA_NOT_EXIST",
                "ResponseDescription": "no such message",
            }
        now = formatdate(localtime=False)
        answer = {
            "RequestId": request_id,
            "ResponseCode": "OK",
            "ResponseDescription": "success",
            "MessageId": message_id,
            "To": record["To"],
            "Message": record["Message"],
            "SendDate": now,
            "NumberDetail": _number_detail(record["To"]),
        }
        if time.monotonic() < record["due"]:
            return {**answer, "Status": "3"}  # still with the carrier
        status, code, description = _FATES[record["fate"]]
        query_status = "1" if status == "1" else "2"
        return {
            **answer,
            "Status": query_status,
            "ErrorCode": code,
            "ErrorDescription": description,
            "ReceiveDate": now,
        }

    # ------------------------------------------------------------------ receipts
    def _accept_message(self, to: str, message: str, task_id: str | None) -> str:
        message_id = str(next(self._ids))
        fate = (
            "undelivered"
            if any(to.endswith(s) for s in self.undelivered_suffixes)
            else "expired"
            if any(to.endswith(s) for s in self.expired_suffixes)
            else "delivered"
        )
        due = time.monotonic() + self.receipt_delay
        self._messages[message_id] = {
            "To": to,
            "Message": message,
            "TaskId": task_id,
            "fate": fate,
            "due": due,
        }
        if (self.receipts_url or self.queue_name) and not any(to.endswith(s) for s in self.silent_suffixes):
            self._due.append((due, message_id))
            if self._pusher is None or self._pusher.done():
                self._more = asyncio.Event()
                self._pushes: set[asyncio.Task[None]] = set()
                self._pusher = asyncio.get_running_loop().create_task(self._push_loop())
            self._more.set()
        return message_id

    def receipt(self, message_id: str) -> dict[str, str]:
        """The push receipt of an accepted message (as the real service writes it)."""
        record = self._messages[message_id]
        status, code, description = _FATES[record["fate"]]
        now = formatdate(localtime=False)
        item = {
            "To": record["To"],
            "Status": status,
            "MessageId": message_id,
            "SmsSize": str(analyse(record["Message"]).segments),
            "SendDate": now,
            "ReceiveDate": now,
            "ErrorCode": code,
            "ErrorDescription": description,
        }
        if record.get("TaskId"):
            item["TaskId"] = record["TaskId"]
        return item

    async def _push_loop(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            while True:
                if not self._due:
                    self._more.clear()
                    await self._more.wait()
                    continue
                wait = self._due[0][0] - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                now = time.monotonic()
                batch: list[dict[str, str]] = []
                while self._due and self._due[0][0] <= now and len(batch) < self.push_batch:
                    batch.append(self.receipt(self._due.popleft()[1]))
                    self._receipt_count += 1
                    if self.duplicate_every and self._receipt_count % self.duplicate_every == 0:
                        batch.append(batch[-1])
                if self.shuffle:
                    batch.reverse()
                if batch and self.queue_name:
                    self._enqueue(batch)
                if batch and self.receipts_url:
                    task = asyncio.get_running_loop().create_task(self._push(session, batch))
                    self._pushes.add(task)
                    task.add_done_callback(self._pushes.discard)
                await asyncio.sleep(0)

    async def _push(self, session: Any, batch: list[dict[str, str]]) -> None:
        for attempt in range(3):
            t0 = time.monotonic()
            try:
                async with session.post(self.receipts_url, json=batch) as resp:
                    body = await resp.json(content_type=None)
                    self.push_ms.append((time.monotonic() - t0) * 1000)
                    if resp.status == 200 and isinstance(body.get("code"), int):
                        self.counts["receipts_pushed"] += len(batch)
                        return
            except Exception:  # noqa: S110 (a failed push is counted and tried again, as the real one does)
                pass
            self.counts["push_failures"] += 1
            if attempt < 2:
                await asyncio.sleep(self.repush_delay * (1 if attempt == 0 else 5))

    # ------------------------------------------------------------------ the receipt queue (MNS)
    def _mns_token(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("QueueName") != self.queue_name or not self.queue_name:
            return {
                "RequestId": str(uuid.uuid4()).upper(),
                "Code": "isv.QUEUE_NOT_EXIST",
                "Message": "no queue",
            }
        key_id = "STS." + uuid.uuid4().hex[:16]
        self._mns_tokens[key_id] = (uuid.uuid4().hex, uuid.uuid4().hex)
        in_china = time.time() + 8 * 3600  # the provider writes its times in UTC+8, without a zone
        return {
            "RequestId": str(uuid.uuid4()).upper(),
            "Code": "OK",
            "Message": "OK",
            "MessageTokenDTO": {
                "AccessKeyId": key_id,
                "AccessKeySecret": self._mns_tokens[key_id][0],
                "SecurityToken": self._mns_tokens[key_id][1],
                "CreateTime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(in_china)),
                "ExpireTime": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(in_china + 600)),
            },
        }

    def _enqueue(self, batch: list[dict[str, str]]) -> None:
        for item in batch:
            raw = json.dumps(item)
            body = raw if len(self._queue) % 2 else base64.b64encode(raw.encode()).decode()
            self._queue.append({"body": body, "handle": None, "visible_at": 0.0, "dequeued": 0})
        if self._queue_changed is not None:
            self._queue_changed.set()

    def _mns_refusal(self, request: web.Request) -> web.Response | None:
        from .mns import mns_authorization

        auth = request.headers.get("Authorization", "")
        key_id = auth.removeprefix("MNS ").partition(":")[0]
        secret, token = self._mns_tokens.get(key_id, ("", ""))
        expected = mns_authorization(request.method, request.raw_path, dict(request.headers), key_id, secret)
        if (
            not auth.startswith("MNS ")
            or not secret
            or not hmac.compare_digest(auth, expected)
            or request.headers.get("security-token") != token
            or request.headers.get("x-mns-version") != "2015-06-06"
        ):
            return _mns_error(403, "AccessDenied", "The signature or the token does not match.")
        if request.match_info["name"] != self.queue_name:
            return _mns_error(404, "QueueNotExist", "The queue does not exist.")
        return None

    async def _mns_receive(self, request: web.Request) -> web.Response:
        refused = self._mns_refusal(request)
        if refused is not None:
            return refused
        count = min(int(request.query.get("numOfMessages", "1")), 16)
        deadline = time.monotonic() + min(float(request.query.get("waitseconds", "0")), 30.0)
        while True:
            now = time.monotonic()
            ready = [m for m in self._queue if m["visible_at"] <= now][:count]
            if ready or now >= deadline:
                break
            self._queue_changed = self._queue_changed or asyncio.Event()
            self._queue_changed.clear()
            with contextlib.suppress(TimeoutError):  # also wakes for messages whose visibility ended
                await asyncio.wait_for(self._queue_changed.wait(), min(0.05, deadline - now))
        if not ready:
            return _mns_error(404, "MessageNotExist", "Message not exist.")
        parts = []
        for m in ready:
            m["handle"], m["visible_at"] = uuid.uuid4().hex, now + self.queue_visibility
            m["dequeued"] += 1
            parts.append(
                f"<Message><MessageId>{id(m)}</MessageId><ReceiptHandle>{m['handle']}</ReceiptHandle>"
                f"<MessageBody>{xml_escape(m['body'])}</MessageBody><DequeueCount>{m['dequeued']}</DequeueCount></Message>"
            )
        xml = f'<?xml version="1.0" encoding="UTF-8"?><Messages xmlns="{_MNS_NS}">{"".join(parts)}</Messages>'
        return web.Response(text=xml, content_type="text/xml")

    async def _mns_delete(self, request: web.Request) -> web.Response:
        refused = self._mns_refusal(request)
        if refused is not None:
            return refused
        handle = request.query.get("ReceiptHandle", "")
        for m in self._queue:
            if m["handle"] == handle and m["visible_at"] > time.monotonic():
                self._queue.remove(m)
                self.counts["queue_deleted"] = self.counts.get("queue_deleted", 0) + 1
                if not self._queue and self._queue_empty is not None:
                    self._queue_empty.set()
                return web.Response(status=204)
        return _mns_error(404, "ReceiptHandleError", "The receipt handle is not valid (any more).")

    def queue_size(self) -> int:
        return len(self._queue)

    async def queue_drained(self) -> None:
        """Until every message of the queue has been deleted (in-process use)."""
        if self._queue:
            self._queue_empty = asyncio.Event()
            await self._queue_empty.wait()


_MNS_NS = "http://mns.aliyuncs.com/doc/v1/"


def _mns_error(status: int, code: str, message: str) -> web.Response:
    xml = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error xmlns="{_MNS_NS}"><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>{uuid.uuid4().hex.upper()}</RequestId></Error>"
    )
    return web.Response(status=status, text=xml, content_type="text/xml")


_FATES = {
    "delivered": ("1", "DELIVERED", "success"),
    "undelivered": ("2", "UNDELIV", "The carrier could not deliver the message"),
    "expired": ("6", "EXPIRED", "The message validity period expired"),
}


def numbers_accepted(received: list[Received]) -> list[str]:
    """Every number of every accepted request, in arrival order (batch lists expanded)."""
    out: list[str] = []
    for r in received:
        if r.answered != "OK":
            continue
        if r.action == "SendMessageToGlobe":
            out.append(r.params["To"])
        elif r.action == "BatchSendMessageToGlobe":
            out.extend(json.loads(r.params["To"]))
    return out


_DETAIL_BY_PREFIX: dict[str, tuple[tuple[str, str], ...]] = {}


def _number_detail(number: str) -> dict[str, str]:
    """Carrier, country and region, looked up once per 7-digit prefix (the carrier tables go no deeper
    for the numbers the tests use): a full lookup per request costs as much as the rest of the answer."""
    prefix = number[:7]
    detail = _DETAIL_BY_PREFIX.get(prefix)
    if detail is None:
        if len(_DETAIL_BY_PREFIX) > 4096:
            _DETAIL_BY_PREFIX.clear()
        detail = _DETAIL_BY_PREFIX[prefix] = tuple(_lookup_number_detail(number).items())
    return dict(detail)


def _lookup_number_detail(number: str) -> dict[str, str]:
    try:
        parsed = phonenumbers.parse("+" + number)
    except phonenumbers.NumberParseException:
        return {"Carrier": "", "Country": "", "Region": ""}
    return {
        "Carrier": carrier.name_for_number(parsed, "en") or "",
        "Country": region_name(phonenumbers.region_code_for_number(parsed) or ""),
        "Region": phonenumbers.region_code_for_number(parsed) or "",
    }


def _gateway_error(
    status: int, code: str, message: str, extra_headers: dict[str, str] | None = None
) -> web.Response:
    request_id = str(uuid.uuid4()).upper()
    return web.json_response(
        {
            "RequestId": request_id,
            "HostId": "dysmsapi.ap-southeast-1.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": f"https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi&requestId={request_id}",
        },
        status=status,
        headers=extra_headers,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Alibaba Cloud SMS simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--access-key-id", default="testid")
    parser.add_argument("--access-key-secret", default="testsecret")
    parser.add_argument("--control", action="store_true", help="serve the /_control API (tests, benchmarks)")
    args = parser.parse_args(argv)
    fake = FakeProvider(
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
        latency=args.latency,
        record=args.control,
        control=args.control,
    )

    async def serve() -> None:
        url = await fake.start(args.host, args.port)
        print(f"listening on {url}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


class ProviderProcess:
    """The simulator in a process of its own, driven through its control API (a peer, as the real one is)."""

    def __init__(self, latency: float = 0.0) -> None:
        import subprocess
        import sys

        self.access_key_id, self.access_key_secret = "testid", "testsecret"
        self.defaults: dict[str, Any] = {}  # settings every reset starts from (a test's faster limits)
        self._proc = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "bot.sms.simulator",
                "--port",
                "0",
                "--control",
                "--latency",
                str(latency),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self._proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.url = line.removeprefix("listening on ")

    def _post(self, path: str, payload: Any) -> None:
        import httpx

        httpx.post(self.url + path, json=payload, timeout=10).raise_for_status()

    def reset(self, **config: Any) -> None:
        """Forget everything and start again with `config` over `defaults` (the rest: the simulator's own)."""
        config = {**self.defaults, **config}
        if "reject_numbers" in config:
            config["reject_numbers"] = sorted(config["reject_numbers"])
        self._post("/_control/reset", config)

    def configure(self, **config: Any) -> None:
        """Change some settings only (e.g. a faster batch limit); what was received and injected stays."""
        if "reject_numbers" in config:
            config["reject_numbers"] = sorted(config["reject_numbers"])
        self._post("/_control/configure", config)

    def inject(self, *faults: Fault) -> None:
        self._post("/_control/inject", [f.__dict__ for f in faults])

    def hold(self) -> None:
        self._post("/_control/hold", {"on": True})

    def release(self) -> None:
        self._post("/_control/hold", {"on": False})

    def snapshot(self) -> tuple[dict[str, int], list[Received]]:
        import httpx

        data = httpx.get(self.url + "/_control/received", timeout=10).json()
        self.push_ms = data.get("push_ms", [])
        return data["counts"], [Received(**r) for r in data["received"]]

    @property
    def counts(self) -> dict[str, int]:
        return self.snapshot()[0]

    @property
    def received(self) -> list[Received]:
        return self.snapshot()[1]

    def sent(self, action: str = "SendMessageToGlobe") -> list[Received]:
        return [r for r in self.received if r.action == action]

    def numbers_sent(self) -> list[str]:
        return numbers_accepted(self.received)

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except Exception:
            self._proc.kill()


if __name__ == "__main__":
    main()
