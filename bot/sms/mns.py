"""Delivery receipts from the provider's message queue (MNS, "Simple Message Queue"), for installs the
provider cannot push to (Socket Mode behind a firewall): outbound HTTPS only.

1. `QueryTokenForMnsQueue` (product Dybaseapi, version 2017-05-25, RPC style, signed like the SMS
   calls) gives temporary credentials for the queue; they are renewed two minutes before they expire.
2. A long poll (`GET /queues/<name>/messages?numOfMessages=16&waitseconds=30`, MNS's own HMAC-SHA1
   signature) returns up to 16 messages, XML; each body is a receipt object, JSON or base64 of JSON.
3. The caller stores the receipts, then deletes the messages (`DELETE …?ReceiptHandle=…`); a message not
   deleted comes back after the queue's visibility timeout: delivery is at least once.

The calls are few (one poll at a time), so they go through httpx's own client; no third-party MNS SDK
(it is synchronous).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from urllib.parse import quote, urlsplit

import httpx

from . import signing
from .config import SmsSettings
from .errors import ConfigurationError, SmsError
from .receipts import Receipt, ReceiptFormatError, decode_queue_body

log = logging.getLogger("bot.sms.mns")

TOKEN_VERSION = "2017-05-25"  # noqa: S105 (an API version, not a secret)
TOKEN_ACTION = "QueryTokenForMnsQueue"  # noqa: S105 (an API name)
MNS_VERSION = "2015-06-06"
RENEW_BEFORE = 120.0  # seconds before the temporary credentials expire
MAX_MESSAGES = 16
MAX_WAIT = 30


@dataclass(frozen=True)
class QueueMessage:
    handle: str  # ReceiptHandle: what deletes this delivery of the message
    receipts: list[Receipt]
    unreadable: bool = (
        False  # a body that is not a receipt (deleted all the same: it would come back forever)
    )


@dataclass
class _Token:
    access_key_id: str
    secret: str
    security_token: str
    renew_at: float


class QueueError(SmsError):
    """The queue or its token service refused or failed a call (nothing was lost: messages stay)."""


class ReceiptQueue:
    """One consumer of the account's receipt queue. `receive()` long-polls; `delete()` after storing."""

    def __init__(self, settings: SmsSettings, *, http: httpx.AsyncClient | None = None) -> None:
        if not settings.receipts_queue or not settings.receipts_queue_endpoint:
            raise ConfigurationError("RECEIPTS_QUEUE and RECEIPTS_QUEUE_ENDPOINT are needed for the queue.")
        self.settings = settings
        self.queue = settings.receipts_queue
        self.mns = settings.receipts_queue_endpoint.rstrip("/")
        self.token_url = settings.receipts_token_endpoint.rstrip("/") + "/"
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=MAX_WAIT + 15.0))
        self._token: _Token | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ token
    async def _credentials(self) -> _Token:
        if self._token is not None and time.time() < self._token.renew_at:
            return self._token
        s = self.settings
        body = signing.form_body({"MessageType": s.receipts_queue_type, "QueueName": self.queue})
        headers = signing.sign(
            method="POST",
            host=urlsplit(self.token_url).netloc,
            action=TOKEN_ACTION,
            version=TOKEN_VERSION,
            access_key_id=s.access_key_id,
            access_key_secret=s.access_key_secret.get_secret_value(),
            body=body,
            content_type=signing.FORM_CONTENT_TYPE,
            security_token=s.security_token.get_secret_value() if s.security_token else None,
            extra_headers={"accept": "application/json"},
        )
        try:
            resp = await self._http.post(self.token_url, headers=headers, content=body)
            data = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise QueueError(f"Could not get the queue's credentials ({type(exc).__name__}).") from None
        dto = data.get("MessageTokenDTO") if isinstance(data, dict) else None
        if resp.status_code != 200 or data.get("Code") != "OK" or not isinstance(dto, dict):
            code = data.get("Code") if isinstance(data, dict) else None
            raise QueueError(f"{TOKEN_ACTION} was refused: {code or resp.status_code}.", code=code)
        expires = _time(dto.get("ExpireTime"))
        now = time.time()
        renew_at = expires - RENEW_BEFORE if expires and expires - RENEW_BEFORE > now else now + 300.0
        self._token = _Token(
            dto["AccessKeyId"], dto["AccessKeySecret"], dto.get("SecurityToken", ""), renew_at
        )
        return self._token

    # ------------------------------------------------------------------ queue
    async def receive(self, wait: int = MAX_WAIT, count: int = MAX_MESSAGES) -> list[QueueMessage]:
        """Up to `count` (≤ 16) messages, waiting up to `wait` (≤ 30) seconds for the first."""
        resource = (
            f"/queues/{quote(self.queue)}/messages?numOfMessages={min(count, MAX_MESSAGES)}"
            f"&waitseconds={min(wait, MAX_WAIT)}"
        )
        resp = await self._call("GET", resource)
        if resp.status_code == 404 and _error_code(resp.content) == "MessageNotExist":
            return []
        if resp.status_code != 200:
            code = _error_code(resp.content)
            if code in ("AccessDenied", "InvalidAccessKeyId", "SecurityTokenExpired"):
                self._token = None  # a new token for the next call
            raise QueueError(f"The queue refused to receive: {code or resp.status_code}.", code=code)
        out = []
        for message in _children(ET.fromstring(resp.content), "Message"):  # noqa: S314
            handle = _text(message, "ReceiptHandle")
            if not handle:
                continue
            try:
                out.append(QueueMessage(handle, decode_queue_body(_text(message, "MessageBody") or "")))
            except ReceiptFormatError:
                out.append(QueueMessage(handle, [], unreadable=True))
        return out

    async def delete(self, handles: list[str]) -> None:
        """Delete received messages (after their receipts are stored)."""
        for handle in handles:
            resource = f"/queues/{quote(self.queue)}/messages?ReceiptHandle={quote(handle, safe='')}"
            resp = await self._call("DELETE", resource)
            if resp.status_code == 404:  # gone already, or handed out again after its visibility timeout:
                continue  # the next delivery of it is stored (a duplicate, ignored) and deleted then
            if resp.status_code not in (200, 204):
                raise QueueError(
                    f"The queue refused a delete: {_error_code(resp.content) or resp.status_code}."
                )

    async def _call(self, method: str, resource: str) -> httpx.Response:
        token = await self._credentials()
        headers = {"x-mns-version": MNS_VERSION, "date": formatdate(usegmt=True)}
        if token.security_token:
            headers["security-token"] = token.security_token
        headers["authorization"] = mns_authorization(
            method, resource, headers, token.access_key_id, token.secret
        )
        try:
            return await self._http.request(method, self.mns + resource, headers=headers)
        except httpx.HTTPError as exc:
            raise QueueError(f"Could not reach the queue ({type(exc).__name__}).") from None


def mns_authorization(
    method: str, resource: str, headers: dict[str, str], access_key_id: str, secret: str
) -> str:
    """`MNS <id>:<base64 HMAC-SHA1>` over method, Content-MD5, Content-Type, Date, the sorted x-mns-*
    headers and the resource (path and query)."""
    lower = {k.lower(): v for k, v in headers.items()}
    mns_headers = "".join(f"{k}:{lower[k]}\n" for k in sorted(k for k in lower if k.startswith("x-mns-")))
    text = "\n".join(
        [method, lower.get("content-md5", ""), lower.get("content-type", ""), lower.get("date", "")]
    )
    digest = hmac.new(secret.encode(), f"{text}\n{mns_headers}{resource}".encode(), hashlib.sha1).digest()
    return f"MNS {access_key_id}:{base64.b64encode(digest).decode()}"


def _children(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root if e.tag.rsplit("}", 1)[-1] == name]


def _text(element: ET.Element, name: str) -> str | None:
    found = _children(element, name)
    return found[0].text if found else None


def _error_code(body: bytes) -> str | None:
    try:
        return _text(ET.fromstring(body), "Code")  # noqa: S314
    except ET.ParseError:
        return None


def _time(value: object) -> float | None:
    """ExpireTime: an ISO or `YYYY-MM-DD HH:MM:SS` time (no zone: UTC+8, the provider's), or epoch ms."""
    if isinstance(value, int | float):
        return value / 1000 if value > 1e11 else float(value)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("T", " ").replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            return json.loads(text) / 1000
        except (ValueError, TypeError):
            return None
    if parsed.tzinfo is None:
        parsed = datetime.fromisoformat(text + "+08:00")
    return parsed.timestamp()
