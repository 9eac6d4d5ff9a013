"""GSM-7 / UCS-2 detection and segment counting, the way the provider bills (per segment, on submission).

GSM 03.38: the basic table costs one septet a character, the extension table (`| ^ € { } [ ] ~ \\` and
the form feed) two. One character outside both switches the whole message to UCS-2, counted in UTF-16
code units (an emoji outside the BMP costs two). A single segment holds 160 septets or 70 units; a
longer message is split into segments of 153 septets or 67 units, and a character is never split
across two segments (an escape pair or a surrogate pair stays together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67

DEFAULT_MAX_CHARS = 1500

Encoding = Literal["GSM-7", "UCS-2"]


class MessageError(ValueError):
    """A message we refuse to send; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MessageInfo:
    encoding: Encoding
    characters: int  # Unicode code points, as a person counts them
    units: int  # GSM-7 septets or UTF-16 code units
    segments: int
    ucs2_trigger: str | None = None  # the first character that forced UCS-2
    ucs2_trigger_index: int | None = None

    @property
    def per_segment(self) -> int:
        if self.segments <= 1:
            return GSM7_SINGLE if self.encoding == "GSM-7" else UCS2_SINGLE
        return GSM7_MULTI if self.encoding == "GSM-7" else UCS2_MULTI

    def summary(self) -> str:
        """`148 characters · GSM-7 · 1 segment` (plus the character that forced UCS-2)."""
        seg = "segment" if self.segments == 1 else "segments"
        text = f"{self.characters:,} characters · {self.encoding} · {self.segments} {seg}"
        if self.ucs2_trigger is not None:
            text += f" (UCS-2 because of “{self.ucs2_trigger}” {_codepoint(self.ucs2_trigger)})"
        return text


def analyse(text: str) -> MessageInfo:
    """Encoding, size and billable segments of `text`. Never raises."""
    trigger_index = None
    for i, ch in enumerate(text):
        if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION:
            trigger_index = i
            break
    if trigger_index is None:
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        units = sum(costs)
        segments = _pack(costs, units, GSM7_SINGLE, GSM7_MULTI)
        return MessageInfo("GSM-7", len(text), units, segments)
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    units = sum(costs)
    segments = _pack(costs, units, UCS2_SINGLE, UCS2_MULTI)
    return MessageInfo("UCS-2", len(text), units, segments, text[trigger_index], trigger_index)


def _pack(costs: list[int], units: int, single: int, multi: int) -> int:
    if units == 0:
        return 0
    if units <= single:
        return 1
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            segments += 1
            used = 0
        used += cost
    return segments


def validate_message(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> MessageInfo:
    """Refuse an empty message or one over `max_chars` characters, with the reason; else analyse it."""
    if not text or not text.strip():
        raise MessageError("The message is empty. Write the text to send.")
    info = analyse(text)
    if info.characters > max_chars:
        raise MessageError(
            f"The message is {info.characters:,} characters long; the limit is {max_chars:,}. "
            f"Shorten it by {info.characters - max_chars:,} characters."
        )
    return info


def _codepoint(ch: str) -> str:
    return f"U+{ord(ch):04X}"
