"""All of the bot's settings: the SMS client's (bot/sms/config.py) plus Slack, storage, access, logging.

From the environment and a `.env` file; every value has a default (README, "Settings").
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict

from bot.core.access import Capability, parse_entries
from bot.core.bulk import BulkLimits
from bot.core.consent import check_footer
from bot.core.db import database_url
from bot.core.windows import WindowRules, parse_overrides, parse_window
from bot.sms.config import SmsSettings


class Settings(SmsSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    slack_bot_token: SecretStr = Field(default=SecretStr(""), alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr = Field(default=SecretStr(""), alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr = Field(default=SecretStr(""), alias="SLACK_APP_TOKEN")
    slack_ping_seconds: float = Field(default=10.0, ge=0.5, le=300, alias="SLACK_PING_SECONDS")
    slack_api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    host: str = Field(default="0.0.0.0", alias="HOST")  # noqa: S104 (a server in a container)
    port: int = Field(default=3000, ge=0, le=65535, alias="PORT")  # 0: any free port (tests)
    database_path: Path = Field(default=Path("data/sms-ops.sqlite3"), alias="DATABASE_PATH")
    # postgresql://user:password@host:5432/db for several replicas; empty: SQLite at DATABASE_PATH.
    database_url: str = Field(default="", alias="DATABASE_URL")
    database_auto_upgrade: bool = Field(default=True, alias="DATABASE_AUTO_UPGRADE")
    worker_lease_seconds: float = Field(default=15.0, gt=4.0, le=600.0, alias="WORKER_LEASE_SECONDS")
    worker_poll_seconds: float = Field(default=0.5, gt=0.0, le=60.0, alias="WORKER_POLL_SECONDS")
    access_send: str = Field(default="*", alias="ACCESS_SEND")
    access_bulk: str = Field(default="", alias="ACCESS_BULK")
    access_outage: str = Field(default="", alias="ACCESS_OUTAGE")
    # Who may add, remove, list, import and export opt-outs, and override one for a single send.
    access_optout: str = Field(default="", alias="ACCESS_OPTOUT")
    # Who may export the audit trail (/sms audit): full numbers and texts of everyone's sends.
    access_audit: str = Field(default="", alias="ACCESS_AUDIT")
    access_cache_seconds: float = Field(default=300.0, ge=0, alias="ACCESS_CACHE_SECONDS")
    contact_groups_file: Path = Field(default=Path("groups.toml"), alias="CONTACT_GROUPS_FILE")
    history_limit: int = Field(default=10, ge=1, le=50, alias="HISTORY_LIMIT")
    bulk_max_recipients: int = Field(default=10_000, ge=1, le=100_000, alias="BULK_MAX_RECIPIENTS")
    bulk_daily_segments: int = Field(default=50_000, ge=1, alias="BULK_DAILY_SEGMENTS")
    bulk_confirm_threshold: int = Field(default=100, ge=1, alias="BULK_CONFIRM_THRESHOLD")
    prices: str = Field(default="", alias="SMS_PRICES")
    price_currency: str = Field(default="USD", alias="SMS_PRICE_CURRENCY")
    # Delivery receipts (README, "Delivery receipts"): the push endpoint is POST /receipts/<RECEIPTS_TOKEN>;
    # empty turns it off (a dry run makes one up for its simulator).
    receipts_token: SecretStr = Field(default=SecretStr(""), alias="RECEIPTS_TOKEN")
    receipts_max_body: int = Field(default=1024 * 1024, ge=1024, alias="RECEIPTS_MAX_BODY")
    receipts_hold_seconds: float = Field(default=3600.0, ge=0, alias="RECEIPTS_HOLD_SECONDS")
    # Seconds after acceptance at which QueryMessage asks about a message whose receipt has not come;
    # empty: never ask. Within RECEIPTS_QUERY_RATE calls/s of the account's SMS_QUERY_RATE.
    receipts_check_after: str = Field(default="120,900,7200,86400", alias="RECEIPTS_CHECK_AFTER")
    receipts_query_rate: float = Field(default=100.0, gt=0, le=300, alias="RECEIPTS_QUERY_RATE")
    # chat.update calls per minute for the whole workspace (Slack's Tier 3 allows about 50).
    slack_updates_per_minute: float = Field(default=40.0, gt=0, alias="SLACK_UPDATES_PER_MINUTE")
    # Appended to every marketing (MKT) text, e.g. "Opt out: https://example.com/stop" (README, "Consent").
    mkt_footer: str = Field(default="", alias="MKT_FOOTER")
    # Texts one number may get a day (UTC), as the provider allows by default; 0: no cap.
    per_number_daily: int = Field(default=20, ge=0, alias="SMS_PER_NUMBER_DAILY")
    # Marketing (MKT) texts go out only inside this window of the recipient's local time ("off": never
    # held); per-country overrides like "US=08:00-20:00,MY=08:00-23:00" (README, "Consent").
    send_window: str = Field(default="08:00-21:00", alias="SEND_WINDOW")
    send_window_by_country: str = Field(default="", alias="SEND_WINDOW_BY_COUNTRY")
    # How far ahead a bulk or outage send may be scheduled ("Send at").
    schedule_max_days: int = Field(default=30, ge=1, le=365, alias="SCHEDULE_MAX_DAYS")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    log_format: str = Field(default="text", alias="LOG_FORMAT")

    @field_validator("access_send", "access_bulk", "access_outage", "access_optout", "access_audit")
    @classmethod
    def _access(cls, v: str) -> str:
        parse_entries(v)
        return v

    @field_validator("send_window")
    @classmethod
    def _send_window(cls, v: str) -> str:
        parse_window(v)
        return v

    @field_validator("send_window_by_country")
    @classmethod
    def _send_window_by_country(cls, v: str) -> str:
        parse_overrides(v)
        return v

    def window_rules(self) -> WindowRules:
        return WindowRules(parse_window(self.send_window), parse_overrides(self.send_window_by_country))

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        database_url(v.strip(), "")
        return v.strip()

    def sqlalchemy_url(self) -> str:
        return database_url(self.database_url, self.database_path)

    @field_validator("slack_api_url")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be a full URL such as https://slack.com/api/")
        return v if v.endswith("/") else v + "/"

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, v: str) -> str:
        if v not in ("text", "json"):
            raise ValueError("must be text or json")
        return v

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, v: str) -> str:
        v = v.upper()
        if v not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    @field_validator("mkt_footer")
    @classmethod
    def _mkt_footer(cls, v: str) -> str:
        return check_footer(v)

    @field_validator("receipts_token")
    @classmethod
    def _receipts_token(cls, v: SecretStr) -> SecretStr:
        token = v.get_secret_value().strip()
        if token and (len(token) < 16 or not all(c.isalnum() or c in "-_" for c in token)):
            raise ValueError(
                "must be at least 16 letters, digits, - or _ (e.g. from: python -c "
                "'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return SecretStr(token)

    @field_validator("receipts_check_after")
    @classmethod
    def _check_after(cls, v: str) -> str:
        parse_delays(v)
        return v

    def check_after(self) -> tuple[float, ...]:
        return parse_delays(self.receipts_check_after)

    @field_validator("prices")
    @classmethod
    def _prices(cls, v: str) -> str:
        parse_prices(v)
        return v

    def bulk_limits(self) -> BulkLimits:
        return BulkLimits(
            max_recipients=self.bulk_max_recipients,
            daily_segments=self.bulk_daily_segments,
            confirm_threshold=self.bulk_confirm_threshold,
            prices=parse_prices(self.prices),
            currency=self.price_currency,
            default_region=self.default_region,
            max_chars=self.max_message_chars,
            mkt_footer=self.mkt_footer,
            per_number_daily=self.per_number_daily,
            windows=self.window_rules(),
            schedule_max_days=self.schedule_max_days,
        )

    @property
    def socket_mode(self) -> bool:
        return bool(self.slack_app_token.get_secret_value())

    def access_rules(self) -> dict[Capability, tuple[str, ...]]:
        return {
            Capability.SEND: parse_entries(self.access_send),
            Capability.BULK: parse_entries(self.access_bulk),
            Capability.OUTAGE: parse_entries(self.access_outage),
            Capability.OPTOUT: parse_entries(self.access_optout),
            Capability.AUDIT: parse_entries(self.access_audit),
        }

    def startup_problem(self) -> str | None:
        """The first thing that stops the bot from starting, as one line naming the setting."""
        if not self.slack_bot_token.get_secret_value():
            return "SLACK_BOT_TOKEN is not set: the bot token (xoxb-…) from the Slack app's OAuth & Permissions page."
        if not self.slack_bot_token.get_secret_value().startswith("xoxb-"):
            return "SLACK_BOT_TOKEN must be a bot token starting with xoxb-."
        if self.socket_mode and not self.slack_app_token.get_secret_value().startswith("xapp-"):
            return "SLACK_APP_TOKEN must be an app-level token starting with xapp- (connections:write)."
        if not self.socket_mode and not self.slack_signing_secret.get_secret_value():
            return (
                "SLACK_SIGNING_SECRET is not set (HTTP mode; it is on the app's Basic Information page). "
                "Or set SLACK_APP_TOKEN to use Socket Mode."
            )
        if self.receipts_queue and not self.receipts_queue_endpoint:
            return (
                "RECEIPTS_QUEUE_ENDPOINT is not set: the receipt queue's endpoint, as the SMS console shows it "
                "with the queue (e.g. https://<account id>.mns.ap-southeast-1.aliyuncs.com)."
            )
        if not self.dry_run and self.missing_credentials():
            return (
                f"{self.missing_credentials()[0]} is not set: provider credentials are needed to send. "
                "Set SMS_DRY_RUN=true to try the bot with the built-in provider simulator."
            )
        return None


def parse_prices(value: str) -> dict[str, float]:
    """`HK=0.045,SG=0.03,*=0.05`: price per segment by region (ISO code), `*` for the rest."""
    prices: dict[str, float] = {}
    for item in (p.strip() for p in value.split(",") if p.strip()):
        region, sep, price = item.partition("=")
        try:
            prices[region.strip().upper()] = float(price)
        except ValueError:
            raise ValueError(
                f"“{item}” is not REGION=PRICE (e.g. HK=0.045, or *=0.05 for the rest)"
            ) from None
        if not sep or not region.strip():
            raise ValueError(f"“{item}” is not REGION=PRICE")
    return prices


def parse_delays(value: str) -> tuple[float, ...]:
    """`120,900,7200,86400`: seconds, increasing."""
    try:
        delays = tuple(float(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise ValueError("must be seconds separated by commas, e.g. 120,900,7200,86400") from None
    if any(d <= 0 for d in delays) or list(delays) != sorted(set(delays)):
        raise ValueError("must be increasing positive seconds, e.g. 120,900,7200,86400")
    return delays


def load_settings() -> Settings:
    """Settings, or SystemExit with one line naming the malformed setting."""
    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "a setting"
        field = Settings.model_fields.get(name)
        if field is not None and field.alias:
            name = field.alias
        raise SystemExit(f"error: setting {name}: {str(err['msg']).removeprefix('Value error, ')}") from None
