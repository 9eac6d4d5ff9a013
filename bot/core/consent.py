"""Consent: what the bot says and adds so that texts are honest about being one-way.

The provider's international service carries no replies (no inbound messages for international numbers;
alphanumeric sender IDs cannot receive them), so a "reply STOP" would never reach anyone. Marketing texts
get a footer the operator chooses (MKT_FOOTER: an address or a link), appended before the segment count,
the confirmation's sample and the send.
"""

from __future__ import annotations

import re

ONE_WAY = "Recipients cannot reply by SMS: international texts are one-way."
_REPLY = re.compile(r"\b(reply|respond|text back|txt)\b", re.IGNORECASE)


def check_footer(text: str) -> str:
    """A marketing footer as given, or ValueError when it asks for a reply the bot could never get."""
    footer = text.strip()
    if footer and _REPLY.search(footer):
        raise ValueError(
            "must not ask for a reply: international texts are one-way, so a reply (e.g. STOP) never "
            "reaches anyone. Give a link or an address instead, e.g. Opt out: https://example.com/stop"
        )
    return footer


def with_footer(message: str, type: str | None, footer: str) -> str:
    """`message` as sent: a marketing text ends with the footer (once), others are unchanged."""
    if type != "MKT" or not footer or message.rstrip().endswith(footer):
        return message
    return f"{message.rstrip()}\n{footer}"


def footer_hint(footer: str) -> str:
    """What the forms say under the message box."""
    return ONE_WAY + (f" Marketing texts end with “{footer}”." if footer else "")
