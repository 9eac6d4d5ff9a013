"""Turning `/sms` text into a validated send request. Pure functions: no Slack, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from bot.sms.encoding import MessageError, MessageInfo, validate_message
from bot.sms.phone import InvalidNumber, PhoneNumber, parse_number

from .optouts import SCOPE_WORDS, Scope

MAX_NUMBER_TOKENS = 8  # "+1 (415) 555 - 0100" is at most a handful of pieces; keeps parsing bounded

USAGE = "/sms +852 5123 4567 Your parcel ships today"


class CommandError(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class SendCommand:
    number: PhoneNumber
    message: str
    info: MessageInfo


def parse_send(text: str, default_region: str | None, max_chars: int) -> SendCommand:
    """`<number> <message>`: the number is the longest leading run of words that parses as a valid number
    (so it may contain spaces, dashes and brackets). Raises CommandError with what was wrong and how to
    write it."""
    tokens = text.split()
    if not tokens:
        raise CommandError(f"Give a number and a message, e.g. `{USAGE}`.")
    number, used = _leading_number(tokens, default_region, USAGE)
    message = text.split(None, used)[used] if len(tokens) > used else ""
    if not message.strip():
        raise CommandError(f"There is no message after the number. Write it like `{USAGE}`.")
    try:
        info = validate_message(message.strip(), max_chars)
    except MessageError as exc:
        raise CommandError(f"{exc.reason} Write it like `{USAGE}`.") from None
    return SendCommand(number, message.strip(), info)


def _leading_number(tokens: list[str], default_region: str | None, usage: str) -> tuple[PhoneNumber, int]:
    """The number made of the longest leading run of `tokens` that parses, and how many it took."""
    number: PhoneNumber | None = None
    used = 0
    first_error: InvalidNumber | None = None
    for k in range(min(len(tokens), MAX_NUMBER_TOKENS), 0, -1):
        candidate = " ".join(tokens[:k])
        if any(ch.isalpha() for ch in candidate):
            continue
        try:
            number = parse_number(candidate, default_region)
        except InvalidNumber as exc:
            if exc.reason.startswith("Chinese-mainland"):
                raise CommandError(exc.describe()) from None
            first_error = first_error or exc
            continue
        used = k
        break
    if number is None:
        if first_error is not None:
            raise CommandError(f"{first_error.describe()} Write it like `{usage}`.")
        raise CommandError(f"“{tokens[0]}” is not a phone number. Write it like `{usage}`.")
    return number, used


OPTOUT_USAGE = (
    "`/sms optout add +852 5123 4567 [marketing] [reason]`, `/sms optout remove +852 5123 4567`, "
    "`/sms optout list [number]`, `/sms optout import`, `/sms optout export`"
)
OPTOUT_ACTIONS = ("add", "remove", "list", "import", "export")


@dataclass(frozen=True)
class OptOutCommand:
    action: str  # one of OPTOUT_ACTIONS
    number: PhoneNumber | None = None
    scope: Scope = Scope.ALL
    reason: str = ""


def parse_optout(text: str, default_region: str | None) -> OptOutCommand:
    """What follows `/sms optout`: `add <number> [all|marketing] [reason]`, `remove <number>`,
    `list [number]`, `import`, `export` (nothing: `list`)."""
    tokens = text.split()
    action = tokens[0].lower() if tokens else "list"
    if action not in OPTOUT_ACTIONS:
        raise CommandError(f"Unknown opt-out command `{action[:20]}`. Use {OPTOUT_USAGE}.")
    if action in ("import", "export") or (action == "list" and len(tokens) <= 1):
        return OptOutCommand(action)
    if len(tokens) == 1:
        raise CommandError(f"Give the number, e.g. `/sms optout {action} +852 5123 4567`.")
    number, used = _leading_number(tokens[1:], default_region, f"/sms optout {action} +852 5123 4567")
    rest = tokens[1 + used :]
    scope = Scope.ALL
    if action == "add" and rest and rest[0].lower() in SCOPE_WORDS:
        scope = SCOPE_WORDS[rest[0].lower()]
        rest = rest[1:]
    if action != "add" and rest:
        raise CommandError(f"`/sms optout {action}` takes only a number. Use {OPTOUT_USAGE}.")
    return OptOutCommand(action, number, scope, " ".join(rest)[:500])


AUDIT_DAYS = 7  # what `/sms audit` covers without a number
AUDIT_MAX_DAYS = 90
AUDIT_USAGE = "`/sms audit` (the last 7 days) or `/sms audit 30` (the last 30 days)"


def parse_audit(text: str) -> int:
    """`audit [days]`: how many days back the export goes (whole days, up to AUDIT_MAX_DAYS)."""
    rest = text.split(None, 1)[1].strip() if len(text.split(None, 1)) > 1 else ""
    if not rest:
        return AUDIT_DAYS
    if not rest.isdigit() or not 1 <= int(rest) <= AUDIT_MAX_DAYS:
        raise CommandError(
            f"“{rest[:40]}” is not a number of days from 1 to {AUDIT_MAX_DAYS}. Write it like {AUDIT_USAGE}."
        )
    return int(rest)
