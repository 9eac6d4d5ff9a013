"""`SmsClient`: signed calls to Alibaba Cloud SMS (international, 2018-05-01), retried only where safe.

Every call waits for the account's rate limiter, signs with a fresh date and nonce, and classifies what
came back into a response or a typed error (errors.py). Retries happen only when the provider certainly
did not take the request (connect errors, `Throttling*`, 503), with exponential backoff and full jitter,
honouring `x-acs-retry-after`, bounded by attempts and by time. A request whose outcome is unknown
(read timeout, reset after sending, 500, unparsable body) is never retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from . import signing
from .config import SmsSettings
from .errors import (
    AMBIGUOUS_CODES,
    CREDENTIAL_CODES,
    ConfigurationError,
    ConnectError,
    CredentialError,
    InvalidRequestError,
    OutcomeUnknownError,
    ProviderRejectedError,
    ServiceUnavailableError,
    SmsError,
    ThrottledError,
    describe_code,
)
from .http import Exchange, ProviderTransport, exchange, proxy_for
from .limits import AccountLimiter, RateLimiter, account_limiter
from .models import (
    BatchSendRequest,
    BatchSendResponse,
    QueryRequest,
    QueryResponse,
    SendRequest,
    SendResponse,
    first_error,
)
from .phone import mask

log = logging.getLogger("bot.sms")

API_VERSION = "2018-05-01"
SEND = "SendMessageToGlobe"
BATCH_SEND = "BatchSendMessageToGlobe"
QUERY = "QueryMessage"
USER_AGENT = "sms-ops-bot/0.1 (+httpx)"
MAYBE = "the message may or may not have been accepted."

R = TypeVar("R", bound=BaseModel)
Hook = Callable[[], Awaitable[None]]


class SmsClient:
    """One client per process and account; share it. Use as `async with SmsClient(...) as sms:`."""

    def __init__(
        self,
        settings: SmsSettings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: AccountLimiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings or SmsSettings()
        parts = urlsplit(self.settings.endpoint)
        self._url = httpx.URL(f"{parts.scheme}://{parts.netloc}/")
        self._endpoint = str(self._url)
        self._host = parts.netloc
        self._transport = transport or ProviderTransport(
            max_connections=self.settings.max_connections, proxy=proxy_for(self.settings.endpoint)
        )
        self._timeout = httpx.Timeout(
            connect=self.settings.connect_timeout,
            read=self.settings.read_timeout,
            write=self.settings.read_timeout,
            pool=self.settings.connect_timeout,
        ).as_dict()
        self._extensions = {"timeout": self._timeout}
        self._limiter = limiter
        self._sleep = sleep
        self.stats = {"attempts": 0, "throttled": 0, "retries": 0}

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> SmsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def warm_up(self, connections: int = 1) -> int:
        """Open `connections` to the provider before a send needs them, so that its first request does
        not wait for a handshake. Safe to call any time; no API call is made. Returns how many are ready
        (0 with a transport other than the built-in one)."""
        if not isinstance(self._transport, ProviderTransport) or self.settings.missing_credentials():
            return 0  # without credentials nothing will be sent: no reason to reach the provider
        connections = min(connections, self.settings.max_connections)
        return await self._transport.warm(self._endpoint, connections, self.settings.connect_timeout)

    @property
    def limiter(self) -> AccountLimiter:
        if self._limiter is None:
            s = self.settings
            self._limiter = account_limiter(
                f"{s.access_key_id}@{self._host}",
                single_rate=s.single_rate,
                batch_rate=s.batch_rate,
                query_rate=s.query_rate,
                margin=s.rate_margin,
            )
        return self._limiter

    # ------------------------------------------------------------------ operations
    def send_request(self, **fields: Any) -> SendRequest:
        """Build a validated `SendRequest`, with the configured sender ID and message limit as defaults."""
        fields.setdefault("sender_id", self.settings.sender_id)
        fields.setdefault("max_chars", self.settings.max_message_chars)
        return _build(SendRequest, fields)

    def batch_request(self, **fields: Any) -> BatchSendRequest:
        fields.setdefault("sender_id", self.settings.sender_id)
        fields.setdefault("max_chars", self.settings.max_message_chars)
        return _build(BatchSendRequest, fields)

    async def send(
        self,
        request: SendRequest | None = None,
        /,
        *,
        on_dispatch: Hook | None = None,
        on_retry: Hook | None = None,
        **fields: Any,
    ) -> SendResponse:
        """SendMessageToGlobe. Returns the accepted response or raises an `SmsError`.

        `on_dispatch` is awaited before each attempt, after the rate limiter let it through and just
        before the request is written (the moment to record "in flight"); if it raises, nothing is sent
        and the exception propagates. `on_retry` is awaited when an attempt certainly did not reach the
        provider and another will follow after a backoff (the moment to record "waiting, not in flight").
        """
        req = request or self.send_request(**fields)
        body = await self._call(
            SEND,
            req.params(),
            self.limiter.single,
            log_to=req.to,
            on_dispatch=on_dispatch,
            on_retry=on_retry,
        )
        resp = _parse(SendResponse, body)
        self._raise_for_code(resp.response_code, resp.response_description, resp.request_id)
        return resp

    async def batch_send(
        self,
        request: BatchSendRequest | None = None,
        /,
        *,
        on_dispatch: Hook | None = None,
        on_retry: Hook | None = None,
        **fields: Any,
    ) -> BatchSendResponse:
        """BatchSendMessageToGlobe (≤ 1,000 numbers). A non-empty `failed_list` is a partial success.
        `on_dispatch` and `on_retry` as for `send`."""
        req = request or self.batch_request(**fields)
        body = await self._call(
            BATCH_SEND,
            req.params(),
            self.limiter.batch,
            count=len(req.to),
            on_dispatch=on_dispatch,
            on_retry=on_retry,
        )
        resp = _parse(BatchSendResponse, body)
        self._raise_for_code(resp.response_code, resp.response_description, resp.request_id)
        return resp

    async def query(self, message_id: str) -> QueryResponse:
        """QueryMessage: the delivery status of one message."""
        req = _build(QueryRequest, {"message_id": message_id})
        body = await self._call(QUERY, req.params(), self.limiter.query)
        resp = _parse(QueryResponse, body)
        self._raise_for_code(resp.response_code, resp.response_description, resp.request_id)
        return resp

    # ------------------------------------------------------------------ internals
    def _raise_for_code(self, code: str, description: str | None, request_id: str | None) -> None:
        if code == "OK":
            return
        message = describe_code(code, description)
        if code in AMBIGUOUS_CODES or not code:
            raise OutcomeUnknownError(
                message if code else "The provider's answer had no ResponseCode.",
                code=code or None,
                http_status=200,
                request_id=request_id,
            )
        cls = CredentialError if code in CREDENTIAL_CODES else ProviderRejectedError
        raise cls(message, code=code, http_status=200, request_id=request_id)

    async def _call(
        self,
        action: str,
        params: dict[str, str],
        limiter: RateLimiter,
        *,
        log_to: str | None = None,
        count: int | None = None,
        on_dispatch: Hook | None = None,
        on_retry: Hook | None = None,
    ) -> dict[str, Any]:
        s = self.settings
        missing = s.missing_credentials()
        if missing:
            raise ConfigurationError(f"Provider credentials are not set: {', '.join(missing)}.")
        secret = s.access_key_secret.get_secret_value()
        token = s.security_token.get_secret_value() if s.security_token else None

        # Parameters go as a signed form body (the official SDK's V2 form; vector (d) for V3): one wire
        # form for every action, no URL-length limit, and a URL that is parsed once.
        body = signing.form_body(params)
        deadline = time.monotonic() + s.retry_max_seconds
        attempt = 0
        while True:
            attempt += 1
            slot = await limiter.acquire()
            granted = time.monotonic()
            if on_dispatch is not None:
                await on_dispatch()
            headers = signing.sign(
                method="POST",
                host=self._host,
                action=action,
                version=API_VERSION,
                access_key_id=s.access_key_id,
                access_key_secret=secret,
                body=body,
                content_type=signing.FORM_CONTENT_TYPE,
                security_token=token,
                extra_headers={"accept": "application/json"},
            )
            headers["user-agent"] = USER_AGENT
            limiter.prepared(time.monotonic() - granted)
            await limiter.hold(slot)
            t0 = time.monotonic()
            self.stats["attempts"] += 1
            try:
                result = await self._attempt(headers, body, limiter)
            except SmsError as exc:
                elapsed = time.monotonic() - t0
                retry_in = self._retry_delay(exc, attempt, deadline)
                log.info(
                    "sms %s attempt=%d result=%s code=%s status=%s ms=%.0f%s",
                    _what(action, log_to, count),
                    attempt,
                    type(exc).__name__,
                    exc.code,
                    exc.http_status,
                    elapsed * 1000,
                    f" retry_in={retry_in:.2f}s" if retry_in is not None else "",
                )
                if isinstance(exc, ThrottledError):
                    self.stats["throttled"] += 1
                if retry_in is None:
                    raise
                self.stats["retries"] += 1
                if on_retry is not None:
                    await on_retry()
                await self._sleep(retry_in)
                continue
            if log.isEnabledFor(logging.DEBUG):
                ms = (time.monotonic() - t0) * 1000
                log.debug("sms %s attempt=%d ok ms=%.0f", _what(action, log_to, count), attempt, ms)
            return result

    def _retry_delay(self, exc: SmsError, attempt: int, deadline: float) -> float | None:
        if not exc.retryable or attempt >= self.settings.max_attempts:
            return None
        backoff = random.uniform(0, min(8.0, 0.2 * 2 ** (attempt - 1)))  # full jitter
        hint = getattr(exc, "retry_after", None)
        delay = max(backoff, hint or 0.0)
        if time.monotonic() + delay > deadline:
            return None
        return delay

    async def _exchange(self, headers: dict[str, str], body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        if isinstance(self._transport, ProviderTransport):  # the measured hot path (see http.py)
            answer = await self._transport.post(self._endpoint, headers, body, self._timeout)
            return answer.status, answer.headers, answer.body
        request = httpx.Request("POST", self._url, headers=headers, content=body, extensions=self._extensions)
        response = await self._transport.handle_async_request(request)
        return response.status_code, response.headers, await response.aread()

    def _may_have_left(self, exc: httpx.HTTPError, sent: Exchange) -> bool:
        """Our transport knows whether the request was written; another one is judged by its exception:
        only a failure to get a connection certainly sent nothing."""
        if isinstance(self._transport, ProviderTransport):
            return sent.sent_at is not None
        return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)

    async def _attempt(self, headers: dict[str, str], body: bytes, limiter: RateLimiter) -> dict[str, Any]:
        with exchange(limiter.sent) as sent:
            try:
                status, response_headers, raw = await self._exchange(headers, body)
            except httpx.HTTPError as exc:
                if not self._may_have_left(exc, sent):
                    raise ConnectError(
                        f"Could not reach the provider ({_reason(exc)}); nothing was sent."
                    ) from exc
                if isinstance(exc, httpx.TimeoutException):
                    raise OutcomeUnknownError(
                        "No answer from the provider in time after the request was sent; " + MAYBE
                    ) from exc
                raise OutcomeUnknownError(
                    f"The connection failed after the request was sent ({_reason(exc)}); " + MAYBE
                ) from exc
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            if status == 503:
                raise ServiceUnavailableError(
                    "The provider is temporarily unavailable (HTTP 503).",
                    http_status=status,
                    retry_after=_retry_after(response_headers),
                ) from None
            raise OutcomeUnknownError(
                f"The provider's answer could not be read (HTTP {status}); " + MAYBE,
                http_status=status,
            ) from None
        if status == 200:
            return data
        code = data.get("Code") or data.get("code")
        request_id = data.get("RequestId")
        message = describe_code(code, data.get("Message"))
        if code and str(code).startswith("Throttling"):
            raise ThrottledError(
                message,
                code=code,
                http_status=status,
                request_id=request_id,
                retry_after=_retry_after(response_headers),
            )
        if status == 503:
            raise ServiceUnavailableError(
                message,
                code=code,
                http_status=status,
                request_id=request_id,
                retry_after=_retry_after(response_headers),
            )
        if status >= 500:
            raise OutcomeUnknownError(
                _unknown(message, status),
                code=code,
                http_status=status,
                request_id=request_id,
            )
        cls = CredentialError if code in CREDENTIAL_CODES else ProviderRejectedError
        raise cls(message, code=code, http_status=status, request_id=request_id)


def _unknown(message: str, status: int) -> str:
    """`message` with the HTTP status, saying once that the message may or may not have been accepted."""
    base = message.rstrip(".")
    if "may or may not" in base:
        return f"{base} (HTTP {status})."
    return f"{base} (HTTP {status}); {MAYBE}"


def _build(model: type[R], fields: dict[str, Any]) -> R:
    try:
        return model(**fields)
    except ValidationError as exc:
        raise InvalidRequestError(first_error(exc)) from None


def _parse(model: type[R], body: dict[str, Any]) -> R:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise OutcomeUnknownError(
            f"The provider's answer was not in the documented shape ({first_error(exc)}); " + MAYBE,
            code=str(body.get("ResponseCode") or "") or None,
            http_status=200,
            request_id=body.get("RequestId"),
        ) from None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("x-acs-retry-after")
    if value is None:
        value = headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None
    try:
        return float(value) / 1000.0  # milliseconds
    except ValueError:
        return None


def _what(action: str, to: str | None, count: int | None) -> str:
    if to:
        return f"{action} to {mask(to)}"
    return f"{action} ({count} numbers)" if count else action


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
