"""Typed `private_metadata` of our modals (≤ 3,000 characters; ids and small context only)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
