"""Send windows: marketing (MKT) texts go out only between, by default, 08:00 and 21:00 in the recipient's
local time (SEND_WINDOW, with per-country overrides in SEND_WINDOW_BY_COUNTRY). NOTIFY and OTP texts are
never held.

A number's time zones come from phonenumbers' time zone data: `+65…` has one, `+1 800…` has dozens,
Australian mobiles eight. A number with several zones is inside its window only when it is inside in
every one of them (the most restrictive reading); one with no known zone falls back to its country's.
Everything here is a pure function of the time it is given: tests drive it with their own clock.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as pn_timezone

from bot.sms.phone import PhoneNumber

UNKNOWN_ZONE = "Etc/Unknown"
LOOKAHEAD_DAYS = 3  # openings considered; zones a day apart always share a moment within this


@dataclass(frozen=True)
class Window:
    """Local times between which texts may go: [start, end); an end before the start spans midnight."""

    start: clock_time
    end: clock_time

    def contains(self, t: clock_time) -> bool:
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}–{self.end:%H:%M}"


def parse_window(text: str) -> Window | None:
    """`08:00-21:00` → Window; empty or `off` → None (no window). ValueError says what is wrong."""
    value = text.strip()
    if not value or value.lower() in ("off", "none"):
        return None
    try:
        start, end = (clock_time.fromisoformat(part.strip()) for part in value.replace("–", "-").split("-"))
    except ValueError:
        raise ValueError(f"“{value}” is not a window like 08:00-21:00") from None
    if start == end:
        raise ValueError(f"“{value}” is an empty window: give different start and end times")
    return Window(start, end)


def parse_overrides(text: str) -> dict[str, Window | None]:
    """`US=08:00-20:00,MY=08:00-23:00` (ISO country codes; `XX=off` for none) → {region: window}."""
    found: dict[str, Window | None] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        region, _, window = entry.partition("=")
        region = region.strip().upper()
        if len(region) != 2 or not region.isalpha() or not window:
            raise ValueError(f"“{entry}” is not like US=08:00-20:00 (a two-letter country code, =, a window)")
        found[region] = parse_window(window)
    return found


@dataclass(frozen=True)
class WindowRules:
    default: Window | None = None
    by_region: dict[str, Window | None] = field(default_factory=dict)

    def for_region(self, region: str) -> Window | None:
        return self.by_region.get(region, self.default)

    @property
    def active(self) -> bool:
        return self.default is not None or any(w is not None for w in self.by_region.values())


@functools.lru_cache(maxsize=4096)
def _region_zones(region: str) -> tuple[str, ...]:
    example = phonenumbers.example_number(region)
    zones = tuple(pn_timezone.time_zones_for_number(example)) if example else ()
    return tuple(z for z in zones if z != UNKNOWN_ZONE) or ("UTC",)


def zones_for(number: PhoneNumber) -> tuple[str, ...]:
    """The number's candidate time zones (its country's when the number's own are unknown)."""
    parsed = phonenumbers.PhoneNumber(country_code=number.country_code, national_number=int(number.national))
    zones = tuple(z for z in pn_timezone.time_zones_for_number(parsed) if z != UNKNOWN_ZONE)
    return zones or _region_zones(number.region)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _inside(zones: Iterable[ZoneInfo], window: Window, at: float) -> bool:
    return all(window.contains(datetime.fromtimestamp(at, z).time()) for z in zones)


def opens_at(zone_names: tuple[str, ...], window: Window, now: float) -> float | None:
    """None when `now` is inside the window in every zone; else the first moment it is (epoch seconds).
    If the zones never share a moment inside (they are too far apart), the latest of their own
    openings: nobody is texted before their window opens."""
    zones = [z for z in map(_zone, zone_names) if z is not None] or [ZoneInfo("UTC")]
    if _inside(zones, window, now):
        return None
    openings = []
    for z in zones:
        local = datetime.fromtimestamp(now, z)
        for days in range(LOOKAHEAD_DAYS + 1):
            day = (local + timedelta(days=days)).date()
            start = datetime.combine(day, window.start, tzinfo=z).timestamp()
            if start > now:
                openings.append(start)
    openings.sort()
    for at in openings:
        if _inside(zones, window, at):
            return at
    own = [min(o for o in openings if _inside([z], window, o)) for z in zones]
    return max(own)


class WindowCheck:
    """Decides many numbers at one moment, cheaply: the answer depends only on a number's zones and
    country, so it is computed once per distinct pair."""

    def __init__(self, rules: WindowRules, now: float) -> None:
        self.rules = rules
        self.now = now
        self._cache: dict[tuple[tuple[str, ...], Window], float | None] = {}

    def opens_at(self, number: PhoneNumber) -> float | None:
        """None: it may go now; else when its window opens."""
        window = self.rules.for_region(number.region)
        if window is None:
            return None
        key = (zones_for(number), window)
        if key not in self._cache:
            self._cache[key] = opens_at(key[0], window, self.now)
        return self._cache[key]
