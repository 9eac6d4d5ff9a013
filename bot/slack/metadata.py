"""Typed `private_metadata` of our modals (≤ 3,000 characters; ids and small context only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from bot.sms.phone import PhoneNumber


class SendModalMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    channel_id: str
    response_url: str | None = None

    def dump(self) -> str:
        text = self.model_dump_json(exclude_none=True)
        if len(text) > 3000:  # a response_url is ~100 characters; never expected
            text = self.model_copy(update={"response_url": None}).model_dump_json(exclude_none=True)
        return text


class BulkFormMetadata(SendModalMetadata):
    pass


class BulkConfirmMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    draft_id: str

    def dump(self) -> str:
        return self.model_dump_json()


class OutageFormMetadata(SendModalMetadata):
    follow_up_of: str | None = None
    # The message box: a digest of the template last put in it (so a user's own edit is never replaced)
    # and how many times it was replaced (its block_id carries the number; see outage_views).
    prefilled: str | None = None
    message_version: int = 0


def digest(text: str) -> str:
    """A short fingerprint of a text, for metadata that must stay small."""
    import hashlib

    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


class OverrideRequest(BaseModel):
    """A single send refused for an opt-out, kept in a draft for "Send anyway…" (the button carries
    only the draft's id): what to send, and where to answer."""

    model_config = ConfigDict(extra="ignore")

    e164: str
    country_code: int
    national: str
    region: str
    message: str
    type: str | None = None
    sender_id: str | None = None
    channel_id: str | None = None
    response_url: str | None = None

    @classmethod
    def of(cls, number: PhoneNumber, message: str, **where: str | None) -> OverrideRequest:
        return cls(
            e164=number.e164,
            country_code=number.country_code,
            national=number.national,
            region=number.region,
            message=message,
            **where,
        )

    @property
    def number(self) -> PhoneNumber:
        return PhoneNumber(self.e164, self.country_code, self.national, self.region)
