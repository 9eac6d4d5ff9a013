"""Delivery receipts: what the provider says happened to a message after it accepted it.

Three sources give the same `Receipt`: the HTTP push (a JSON array, `parse_push`), the message queue
(the same objects, PascalCase `SmsReport` or snake_case `GlobeSmsReport`, `parse_report`), and
QueryMessage (`from_query`). What no primary source settles is decided here, in one place:
- a push `Status` of `1` is delivered, `2` undelivered, `6` expired; anything else is skipped;
- a QueryMessage answer is delivered when its `ErrorCode` is `DELIVERED`, undelivered when its `Status`
  is `2` (expired when the code says so), and still waiting otherwise (`1` sent, `3` sending);
- `To` may come masked (`8521234****`): it matches a number with the same digits where it has digits.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from .models import QueryResponse, QueryStatus


class Delivery(StrEnum):
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    EXPIRED = "expired"


PUSH_STATUS = {"1": Delivery.DELIVERED, "2": Delivery.UNDELIVERED, "6": Delivery.EXPIRED}


@dataclass(frozen=True, slots=True)
class Receipt:
    """One report about one message. `delivery` is None while the provider is still waiting for the
    carrier (QueryMessage only; receipts are always final)."""

    message_id: str | None
    to: str | None  # digits as the provider wrote them, possibly masked with '*'
    delivery: Delivery | None
    task_id: str | None = None
    code: str | None = None
    description: str | None = None
    done_at: float | None = None  # when the handset (or the carrier) reported, epoch seconds
    segments: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "to": self.to,
            "delivery": str(self.delivery) if self.delivery else "waiting",
            "task_id": self.task_id,
            "code": self.code,
            "description": self.description,
            "done_at": self.done_at,
            "segments": self.segments,
            "words": describe(self),
        }


class ReceiptFormatError(ValueError):
    """The body is not a receipt push (not JSON, not a list of objects)."""


def parse_push(body: bytes) -> list[Receipt]:
    """An HTTP push body: a JSON array of receipt objects (one object is accepted too). Items without a
    known status or without any id are skipped; a body that is not such JSON raises ReceiptFormatError."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReceiptFormatError(f"not JSON ({exc.__class__.__name__})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ReceiptFormatError("expected a JSON array of receipt objects")
    return [r for r in (parse_report(item) for item in data) if r is not None]


def parse_report(item: dict[str, Any]) -> Receipt | None:
    """One receipt object, PascalCase (push, `SmsReport`) or snake_case (`GlobeSmsReport`)."""

    def get(*names: str) -> str | None:
        for name in names:
            value = item.get(name)
            if value not in (None, ""):
                return str(value).strip()
        return None

    delivery = PUSH_STATUS.get(get("Status", "status") or "")
    message_id = get("MessageId", "message_id")
    task_id = get("TaskId", "task_id")
    if delivery is None or not (message_id or task_id):
        return None
    size = get("SmsSize", "sms_size")
    return Receipt(
        message_id=message_id,
        to=_digits(get("To", "to")),
        delivery=delivery,
        task_id=task_id,
        code=get("ErrorCode", "error_code"),
        description=get("ErrorDescription", "error_description"),
        done_at=parse_date(get("ReceiveDate", "receive_date")),
        segments=int(size) if size and size.isdigit() else None,
    )


def decode_queue_body(body: str) -> list[Receipt]:
    """A message-queue message body: JSON, or base64 of JSON (the SDK decodes base64 by default)."""
    text = body.strip()
    if not text.startswith(("{", "[")):
        try:
            text = base64.b64decode(text, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise ReceiptFormatError("neither JSON nor base64 of JSON") from None
    return parse_push(text.encode())


def from_query(resp: QueryResponse) -> Receipt:
    code = (resp.error_code or "").strip() or None
    if code and code.upper() == "DELIVERED":
        delivery: Delivery | None = Delivery.DELIVERED
    elif resp.status == QueryStatus.FAILED:
        delivery = Delivery.EXPIRED if code and "EXPIRE" in code.upper() else Delivery.UNDELIVERED
    else:
        delivery = None
    done = resp.receive_date if delivery else None
    return Receipt(
        message_id=resp.message_id,
        to=_digits(resp.to),
        delivery=delivery,
        code=code,
        description=resp.error_description,
        done_at=done.timestamp() if isinstance(done, datetime) else None,
    )


def parse_date(value: str | None) -> float | None:
    """`Thu, 25 Nov 2021 10:25:00 +0800` or `2017-06-01 10:00:00` (no zone: UTC+8, the provider's)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return datetime.fromisoformat(value + "+08:00").timestamp()
    except ValueError:
        return None


def number_matches(to: str | None, e164: str) -> bool:
    """Whether a receipt's `To` (digits, maybe masked with '*') can be the number `e164`."""
    if not to:
        return True
    digits = e164.lstrip("+")
    if "*" not in to:
        return to == digits
    return len(to) == len(digits) and all(a in ("*", b) for a, b in zip(to, digits, strict=True))


def is_masked(to: str | None) -> bool:
    return bool(to) and "*" in (to or "")


def _digits(value: str | None) -> str | None:
    if not value:
        return None
    kept = "".join(ch for ch in value if ch.isdigit() or ch == "*")
    return kept.lstrip("0") if kept.startswith("00") else kept or None


# The carriers' codes seen in receipts, in plain words (anything else is shown as the provider wrote it).
_WORDS = {
    "EXPIRED": "the message expired before the phone could be reached (switched off or out of coverage)",
    "UNDELIV": "the carrier could not deliver it",
    "REJECTD": "the carrier rejected it",
    "DELETED": "the carrier deleted it before delivery",
    "UNKNOWN": "the carrier did not say what happened",
    "BLACKLIST": "the number is on the carrier's block list",
    "MOBILE_NUMBER_ILLEGAL": "the number is not a valid mobile number",
}


def describe(r: Receipt) -> str:
    """The outcome in words, for a thread or a terminal."""
    if r.delivery == Delivery.DELIVERED:
        return "delivered"
    if r.delivery is None:
        return "waiting for the carrier's report"
    code = (r.code or "").strip()
    words = _WORDS.get(code.upper()) or next((w for k, w in _WORDS.items() if k in code.upper()), None)
    if r.delivery == Delivery.EXPIRED:
        words = words or _WORDS["EXPIRED"]
    if words is None:
        detail = r.description if r.description and r.description.lower() != "success" else None
        words = f"the carrier reported {code or 'a failure'}" + (f" ({detail})" if detail else "")
        return words
    return f"{words} ({code})" if code else words
