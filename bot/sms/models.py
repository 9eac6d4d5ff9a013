"""Requests and responses of SendMessageToGlobe, BatchSendMessageToGlobe and QueryMessage (2018-05-01).

Requests enforce every documented constraint before anything is signed; responses turn the provider's
all-strings JSON (counts as strings, lists as JSON inside strings) into real types.
"""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .encoding import DEFAULT_MAX_CHARS, MessageError, validate_message
from .phone import InvalidNumber, PhoneNumber, parse_number

MAX_BATCH = 1000
SENDER_ID_MAX_ALNUM = 11
SENDER_ID_MAX_DIGITS = 15


# No maximum is documented; carriers keep undelivered messages for at most about 72 hours, and a bound
# keeps absurd values (30 nines) out of storage and the provider's integer.
MAX_VALIDITY_SECONDS = 72 * 3600


class MessageType(StrEnum):
    NOTIFY = "NOTIFY"
    MKT = "MKT"
    OTP = "OTP"


def _api_number(value: Any) -> str:
    if isinstance(value, PhoneNumber):
        return value.api
    if not isinstance(value, str):
        raise ValueError("the recipient must be a phone number string")
    try:
        return parse_number(value if value.startswith("+") else "+" + value).api
    except InvalidNumber as exc:
        raise ValueError(f"recipient {exc.describe(masked=True)}") from None


def check_sender_id(value: str) -> str:
    """`From`: letters and digits only; ≤ 11 characters with a letter, ≤ 15 when all digits."""
    if not value:
        raise ValueError("the sender ID is empty")
    if not (value.isascii() and value.isalnum()):
        bad = next(ch for ch in value if not (ch.isascii() and ch.isalnum()))
        raise ValueError(f"the sender ID may hold only letters and digits; “{bad}” is not allowed")
    if value.isdigit():
        if len(value) > SENDER_ID_MAX_DIGITS:
            raise ValueError(
                f"a numeric sender ID may be at most {SENDER_ID_MAX_DIGITS} digits; this one has {len(value)}"
            )
    elif len(value) > SENDER_ID_MAX_ALNUM:
        raise ValueError(
            f"a sender ID with letters may be at most {SENDER_ID_MAX_ALNUM} characters; "
            f"this one has {len(value)}"
        )
    return value


def check_task_id(value: str) -> str:
    if not 1 <= len(value) <= 255:
        raise ValueError(f"the task ID must be 1 to 255 characters; this one has {len(value)}")
    return value


def _message_checker(max_chars: int):
    def check(value: str) -> str:
        try:
            validate_message(value, max_chars)
        except MessageError as exc:
            raise ValueError(exc.reason) from None
        return value

    return check


ApiNumber = Annotated[str, BeforeValidator(_api_number)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    sender_id: str | None = Field(default=None, alias="From")
    task_id: str | None = Field(default=None, alias="TaskId")
    validity_period: int | None = Field(default=None, alias="ValidityPeriod")
    max_chars: int = Field(default=DEFAULT_MAX_CHARS, exclude=True, repr=False)

    @field_validator("sender_id")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        return None if v is None else check_sender_id(v)

    @field_validator("task_id")
    @classmethod
    def _task(cls, v: str | None) -> str | None:
        return None if v is None else check_task_id(v)

    @field_validator("validity_period", mode="before")
    @classmethod
    def _validity(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, int | str) or not str(v).strip().isdigit():
            raise ValueError("the validity period must be a whole number of seconds")
        if int(v) <= 0:
            raise ValueError("the validity period must be a positive number of seconds")
        if int(v) > MAX_VALIDITY_SECONDS:
            raise ValueError(
                f"the validity period can be at most {MAX_VALIDITY_SECONDS:,} seconds (72 hours)"
            )
        return int(v)

    def _common(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.sender_id is not None:
            params["From"] = self.sender_id
        if self.task_id is not None:
            params["TaskId"] = self.task_id
        if self.validity_period is not None:
            params["ValidityPeriod"] = str(self.validity_period)
        return params


class SendRequest(_Request):
    """SendMessageToGlobe: one message to one number."""

    to: ApiNumber = Field(alias="To")
    message: str = Field(alias="Message")
    type: MessageType | None = Field(default=None, alias="Type")

    @model_validator(mode="after")
    def _message(self) -> SendRequest:
        try:
            _message_checker(self.max_chars)(self.message)
        except ValueError as exc:
            raise ValueError(f"message: {exc}") from None
        return self

    def params(self) -> dict[str, str]:
        params = {"To": self.to, "Message": self.message, **self._common()}
        if self.type is not None:
            params["Type"] = self.type.value
        return params


class BatchSendRequest(_Request):
    """BatchSendMessageToGlobe: 1 to 1,000 numbers, one message each, in the same order."""

    to: list[ApiNumber] = Field(alias="To")
    messages: list[str] = Field(alias="Message")
    type: MessageType = Field(default=MessageType.NOTIFY, alias="Type")

    @field_validator("type")
    @classmethod
    def _type(cls, v: MessageType) -> MessageType:
        if v == MessageType.OTP:
            raise ValueError("the batch API takes only NOTIFY or MKT messages (OTP is for single sends)")
        return v

    @model_validator(mode="after")
    def _lists(self) -> BatchSendRequest:
        if not self.to:
            raise ValueError("the batch has no recipients")
        if len(self.to) > MAX_BATCH:
            raise ValueError(f"a batch may hold at most {MAX_BATCH:,} numbers; this one has {len(self.to):,}")
        if len(self.messages) != len(self.to):
            raise ValueError(
                f"the batch has {len(self.to):,} numbers but {len(self.messages):,} messages; "
                "they must be the same length"
            )
        check = _message_checker(self.max_chars)
        for i, text in enumerate(self.messages):
            try:
                check(text)
            except ValueError as exc:
                raise ValueError(f"message {i + 1}: {exc}") from None
        return self

    def params(self) -> dict[str, str]:
        # JSON arrays encoded as strings, as the official SDK's users send them (json.dumps defaults).
        return {
            "To": json.dumps(self.to),
            "Message": json.dumps(self.messages),
            "Type": self.type.value,
            **self._common(),
        }


class QueryRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    message_id: str = Field(alias="MessageId", min_length=1, max_length=255)

    def params(self) -> dict[str, str]:
        return {"MessageId": self.message_id}


# ---------------------------------------------------------------- responses


def _json_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        parsed = json.loads(value)
        if not isinstance(parsed, list):
            raise ValueError("expected a JSON array")
        return [str(v) for v in parsed]
    raise ValueError("expected a JSON array in a string")


def _int_or_none(value: Any) -> Any:
    return None if value in (None, "") else value


def _date_or_none(value: Any) -> Any:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            return parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return datetime.fromisoformat(value)
    return value


JsonList = Annotated[list[str], BeforeValidator(_json_list)]
OptInt = Annotated[int | None, BeforeValidator(_int_or_none)]
OptDate = Annotated[datetime | None, BeforeValidator(_date_or_none)]


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    request_id: str | None = Field(default=None, alias="RequestId")
    response_code: str = Field(default="", alias="ResponseCode")
    response_description: str | None = Field(default=None, alias="ResponseDescription")

    @property
    def ok(self) -> bool:
        return self.response_code == "OK"


class NumberDetail(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    carrier: str | None = Field(default=None, alias="Carrier")
    country: str | None = Field(default=None, alias="Country")
    region: str | None = Field(default=None, alias="Region")


class SendResponse(_Response):
    message_id: str | None = Field(default=None, alias="MessageId")
    segments: OptInt = Field(default=None, alias="Segments")
    sender_id: str | None = Field(default=None, alias="From")
    to: str | None = Field(default=None, alias="To")
    number_detail: NumberDetail | None = Field(default=None, alias="NumberDetail")


class BatchSendResponse(_Response):
    sender_id: str | None = Field(default=None, alias="From")
    success_count: OptInt = Field(default=None, alias="SuccessCount")
    failed_list: JsonList = Field(default_factory=list, alias="FailedList")
    message_id_list: JsonList = Field(default_factory=list, alias="MessageIdList")


class QueryStatus(StrEnum):
    SENT = "1"
    FAILED = "2"
    SENDING = "3"


class QueryResponse(_Response):
    message_id: str | None = Field(default=None, alias="MessageId")
    to: str | None = Field(default=None, alias="To")
    message: str | None = Field(default=None, alias="Message")
    status: QueryStatus | None = Field(default=None, validation_alias=AliasChoices("Status", "status"))
    error_code: str | None = Field(default=None, alias="ErrorCode")
    error_description: str | None = Field(default=None, alias="ErrorDescription")
    send_date: OptDate = Field(default=None, alias="SendDate")
    receive_date: OptDate = Field(default=None, alias="ReceiveDate")
    number_detail: NumberDetail | None = Field(default=None, alias="NumberDetail")


def first_error(exc: ValidationError) -> str:
    """The first validation problem as one plain sentence (no pydantic boilerplate)."""
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err.get("loc", ()) if not isinstance(p, int))
    field = _FIELD_NAMES.get(loc, loc)
    if err.get("type") == "missing":
        return f"{field or 'a field'} is required"
    if field and field not in msg:
        return f"{field}: {msg}"
    return msg


_FIELD_NAMES = {
    "to": "recipient",
    "message": "message",
    "messages": "messages",
    "sender_id": "sender ID",
    "task_id": "task ID",
    "validity_period": "validity period",
    "type": "type",
    "message_id": "message ID",
    "To": "recipient",
    "Message": "message",
    "From": "sender ID",
    "TaskId": "task ID",
    "ValidityPeriod": "validity period",
    "Type": "type",
    "MessageId": "message ID",
}
