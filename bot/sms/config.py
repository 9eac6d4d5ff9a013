"""Settings of the SMS client, from the environment and a `.env` file. Every value has a default."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ENDPOINT = "https://dysmsapi.ap-southeast-1.aliyuncs.com"


class SmsSettings(BaseSettings):
    """Provider credentials, endpoint, timeouts, retries and pacing."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    access_key_id: str = Field(default="", alias="ALIBABA_CLOUD_ACCESS_KEY_ID")
    access_key_secret: SecretStr = Field(default=SecretStr(""), alias="ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    security_token: SecretStr | None = Field(default=None, alias="ALIBABA_CLOUD_SECURITY_TOKEN")
    endpoint: str = Field(default=DEFAULT_ENDPOINT, alias="SMS_ENDPOINT")
    connect_timeout: float = Field(default=5.0, gt=0, alias="SMS_CONNECT_TIMEOUT")
    read_timeout: float = Field(default=10.0, gt=0, alias="SMS_READ_TIMEOUT")
    max_connections: int = Field(default=400, ge=1, alias="SMS_MAX_CONNECTIONS")
    max_attempts: int = Field(default=4, ge=1, le=20, alias="SMS_MAX_ATTEMPTS")
    retry_max_seconds: float = Field(default=30.0, gt=0, alias="SMS_RETRY_MAX_SECONDS")
    single_rate: float = Field(default=2000.0, gt=0, alias="SMS_SINGLE_RATE")
    batch_rate: float = Field(default=1.0, gt=0, le=1.0, alias="SMS_BATCH_RATE")
    query_rate: float = Field(default=300.0, gt=0, alias="SMS_QUERY_RATE")
    rate_margin: float = Field(default=0.02, ge=0, le=0.5, alias="SMS_RATE_MARGIN")
    max_message_chars: int = Field(default=1500, ge=1, le=10000, alias="SMS_MAX_MESSAGE_CHARS")
    default_region: str | None = Field(default=None, alias="SMS_DEFAULT_REGION")
    sender_id: str | None = Field(default=None, alias="SMS_SENDER_ID")
    # true: the provider is replaced by the built-in simulator (bot and CLI alike); see simulator.dry_run
    dry_run: bool = Field(default=False, alias="SMS_DRY_RUN")
    # Delivery receipts from the provider's message queue (MNS), for installs it cannot push to: the
    # queue's name and endpoint as the SMS console shows them; empty: no queue.
    receipts_queue: str = Field(default="", alias="RECEIPTS_QUEUE")
    receipts_queue_endpoint: str = Field(default="", alias="RECEIPTS_QUEUE_ENDPOINT")
    receipts_queue_type: str = Field(default="SmsReport", alias="RECEIPTS_QUEUE_TYPE")
    receipts_token_endpoint: str = Field(
        default="https://dybaseapi.ap-southeast-1.aliyuncs.com", alias="RECEIPTS_TOKEN_ENDPOINT"
    )
    # Read by the entry points (the bot, the `sms` CLI) before their loop starts; see loop.py.
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(default="auto", alias="EVENT_LOOP")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be a full URL with its scheme, e.g. https://dysmsapi.ap-southeast-1.aliyuncs.com"
            )
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("must be just scheme, host and optional port (no path or query)")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("receipts_queue_endpoint", "receipts_token_endpoint")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if v and (urlsplit(v).scheme not in ("http", "https") or not urlsplit(v).hostname):
            raise ValueError(
                "must be a full URL with its scheme, e.g. https://<account>.mns.ap-southeast-1.aliyuncs.com"
            )
        return v.rstrip("/")

    @field_validator("default_region", "sender_id", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("default_region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import phonenumbers

        v = v.strip().upper()
        if v not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(
                f"{v!r} is not an ISO 3166 region code that phonenumbers knows (e.g. HK, SG, US)"
            )
        return v

    @field_validator("sender_id")
    @classmethod
    def _sender(cls, v: str | None) -> str | None:
        from .models import check_sender_id

        return None if v is None else check_sender_id(v)

    def missing_credentials(self) -> list[str]:
        missing = []
        if not self.access_key_id:
            missing.append("ALIBABA_CLOUD_ACCESS_KEY_ID")
        if not self.access_key_secret.get_secret_value():
            missing.append("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
        return missing
