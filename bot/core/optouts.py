"""Opt-outs: the numbers that must not be texted, owned by the bot (the provider's international service
carries no replies, so a customer's "STOP" never reaches anyone: opt-outs come in through Slack, a CSV
import or the command line).

Each entry has a scope: `all` (no text at all) or `marketing` (no MKT texts). It is checked when a send
is prepared (a single send is refused; bulk and outage confirmations leave the numbers out and say how
many) and again in the statement that marks each request in flight (Store.mark_for_send), so an opt-out
added while a job runs holds for every recipient not yet sent.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

import sqlalchemy as sa

from bot.sms.phone import PhoneNumber, mask
from bot.sms.recipients import RecipientParser, Refused, csv_rows

from .schema import suppressions as stab

if TYPE_CHECKING:
    from .store import Store

CHUNK = 500  # numbers per IN (...) lookup
SLICE = 256  # CSV rows parsed between two yields to the event loop
EXPORT_PAGE = 5000  # rows read at a time for an export
EXPORT_COLUMNS = ("number", "scope", "reason", "added_by", "added_at", "source")


class Scope(StrEnum):
    ALL = "all"  # no text at all
    MARKETING = "marketing"  # no marketing (MKT) texts


SCOPE_WORDS = {
    "all": Scope.ALL,
    "everything": Scope.ALL,
    "marketing": Scope.MARKETING,
    "mkt": Scope.MARKETING,
}


@dataclass(frozen=True, slots=True)
class OptOut:
    e164: str
    scope: Scope
    reason: str
    added_by: str
    added_at: float
    source: str

    @property
    def masked(self) -> str:
        return mask(self.e164)

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.added_at, UTC).strftime("%Y-%m-%d")

    def describe(self, quote: Callable[[str], str] = str) -> str:
        """Who, when, why, for the person who tried to send (masked: it may be shown in a channel).
        `quote` renders the reason, which is someone's own words (the Slack layer escapes it)."""
        what = "all texts" if self.scope == Scope.ALL else "marketing texts"
        why = f": “{quote(self.reason)}”" if self.reason else ""
        return f"{self.masked} is opted out of {what}, added by <@{self.added_by}> on {self.day} (UTC){why}"


class OptedOut(Exception):
    """A single send to an opted-out number. `overridable`: an `all` opt-out on a non-marketing text,
    which someone with ACCESS_OPTOUT may override through a confirmation."""

    def __init__(self, optout: OptOut, type: str | None) -> None:
        self.optout = optout
        self.overridable = optout.scope == Scope.ALL and type != "MKT"
        self.message = f"Nothing was sent: {optout.describe()}."
        super().__init__(self.message)


@dataclass(frozen=True)
class Override:
    """An explicit send to a number opted out of all texts: who decided it and why (stored in the job)."""

    by: str
    reason: str


def opted_out_reason(optout_scope: str) -> str:
    """Why a recipient of a job was not sent: the number was opted out before its turn came."""
    what = "all texts" if optout_scope == Scope.ALL else "marketing texts"
    return f"Not sent: this number was opted out of {what} (see /sms optout list)."


def _scopes_for(type: str | None) -> list[str]:
    return [Scope.ALL, Scope.MARKETING] if type == "MKT" else [Scope.ALL]


def _optout(row: Sequence[object]) -> OptOut:
    e164, scope, reason, by, at, source = row
    return OptOut(str(e164), Scope(str(scope)), str(reason or ""), str(by), float(at), str(source))  # type: ignore[arg-type]


_COLUMNS = (stab.c.e164, stab.c.scope, stab.c.reason, stab.c.added_by, stab.c.added_at, stab.c.source)


# Built once: a statement built per call costs more than the lookup (its cache key is made anew).
_FIND = sa.select(*_COLUMNS).where(
    stab.c.e164.in_(sa.bindparam("numbers", expanding=True)),
    stab.c.scope.in_(sa.bindparam("scopes", expanding=True)),
)


def find_in(conn: sa.Connection, numbers: Sequence[str], type: str | None) -> dict[str, OptOut]:
    """The opt-outs among `numbers` (E.164) that forbid a text of `type`: one indexed lookup per chunk."""
    found: dict[str, OptOut] = {}
    scopes = _scopes_for(type)
    for start in range(0, len(numbers), CHUNK):
        for row in conn.execute(_FIND, {"numbers": list(numbers[start : start + CHUNK]), "scopes": scopes}):
            found[row[0]] = _optout(row)
    return found


@dataclass
class ImportResult:
    added: int = 0  # new entries, or marketing-only ones widened to all
    unchanged: int = 0  # already on the list with that scope (or a wider one)
    refused: list[Refused] = field(default_factory=list)
    duplicates: int = 0


class OptOuts:
    """The suppression list, over the core's store (one transaction per call)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def find(self, numbers: Sequence[str], type: str | None) -> dict[str, OptOut]:
        if not numbers:
            return {}
        return await self.store.read(lambda conn: find_in(conn, numbers, type))

    async def lookup(self, number: str) -> OptOut | None:
        found = await self.store.read(lambda conn: find_in(conn, [number], "MKT"))
        return found.get(number)

    async def add(
        self,
        numbers: Iterable[PhoneNumber | str],
        *,
        scope: Scope = Scope.ALL,
        reason: str = "",
        by: str,
        source: str,
        scopes: dict[str, Scope] | None = None,
        reasons: dict[str, str] | None = None,
    ) -> tuple[int, int]:
        """Add numbers (E.164); returns (added or widened, unchanged). An entry is never narrowed: adding
        `marketing` to a number opted out of all texts leaves it at `all`. `scopes` / `reasons` give
        per-number values (a CSV import's columns)."""
        wanted: dict[str, tuple[Scope, str]] = {}
        for n in numbers:
            e164 = n.e164 if isinstance(n, PhoneNumber) else n
            wanted[e164] = ((scopes or {}).get(e164, scope), (reasons or {}).get(e164, reason)[:500])
        now = self.store.clock()
        insert = self.store._insert_ignore(stab)

        def tx(conn: sa.Connection) -> tuple[int, int]:
            changed = unchanged = 0
            keys = list(wanted)
            for start in range(0, len(keys), CHUNK):
                chunk = keys[start : start + CHUNK]
                query = sa.select(stab.c.e164, stab.c.scope).where(stab.c.e164.in_(chunk))
                existing = {e164: scope for e164, scope in conn.execute(query)}
                new = [
                    {
                        "e164": e,
                        "scope": str(wanted[e][0]),
                        "reason": wanted[e][1],
                        "added_by": by,
                        "added_at": now,
                        "source": source,
                    }
                    for e in chunk
                    if e not in existing
                ]
                widen = [e for e in chunk if existing.get(e) == Scope.MARKETING and wanted[e][0] == Scope.ALL]
                if new:
                    # RETURNING counts what went in (another replica may add the same number at once)
                    changed += len(conn.execute(insert.returning(stab.c.e164), new).all())
                for e in widen:
                    conn.execute(
                        sa.update(stab)
                        .where(stab.c.e164 == e)
                        .values(
                            scope=str(Scope.ALL),
                            reason=wanted[e][1],
                            added_by=by,
                            added_at=now,
                            source=source,
                        )
                    )
                changed += len(widen)
                unchanged += len(chunk) - len(new) - len(widen)
            return changed, unchanged

        return await self.store.write(tx)

    async def remove(self, numbers: Sequence[str]) -> int:
        def tx(conn: sa.Connection) -> int:
            return sum(
                conn.execute(sa.delete(stab).where(stab.c.e164.in_(list(numbers[s : s + CHUNK])))).rowcount
                for s in range(0, len(numbers), CHUNK)
            )

        return await self.store.write(tx)

    async def latest(self, limit: int = 20) -> tuple[int, list[OptOut]]:
        """How many numbers are on the list, and the `limit` most recently added."""

        def read(conn: sa.Connection) -> tuple[int, list[OptOut]]:
            count = conn.execute(sa.select(sa.func.count()).select_from(stab)).scalar() or 0
            rows = conn.execute(
                sa.select(*_COLUMNS).order_by(stab.c.added_at.desc(), stab.c.e164).limit(limit)
            )
            return int(count), [_optout(r) for r in rows]

        return await self.store.read(read)

    async def export_csv(self) -> tuple[str, int]:
        """The whole list as CSV, and how many numbers (full numbers: for the people allowed to manage
        it, never a channel). Read in pages (the event loop gets a turn between them, on PostgreSQL
        too), written off the loop."""
        rows: list[tuple[object, ...]] = []
        last = ""
        while True:
            query = sa.select(*_COLUMNS).where(stab.c.e164 > last).order_by(stab.c.e164).limit(EXPORT_PAGE)
            page = await self.store.read(lambda conn, q=query: [tuple(r) for r in conn.execute(q)])
            rows += page
            if len(page) < EXPORT_PAGE:
                return await asyncio.to_thread(_csv, rows), len(rows)
            last = str(page[-1][0])

    async def import_csv(
        self,
        text: str,
        *,
        scope: Scope,
        reason: str,
        by: str,
        source: str,
        default_region: str | None = None,
    ) -> ImportResult:
        """Numbers from a CSV file or a pasted list (a `number` column first; optional `scope` and
        `reason` columns override the defaults per row). Parsed in slices, yielding to the event loop."""
        parser = RecipientParser(default_region)
        rows = csv_rows(text)
        for start in range(0, len(rows), SLICE):
            parser.feed(rows[start : start + SLICE])
            await asyncio.sleep(0)
        listing = parser.result
        result = ImportResult(refused=list(listing.refused), duplicates=listing.duplicates)
        scopes: dict[str, Scope] = {}
        reasons: dict[str, str] = {}
        numbers: list[str] = []
        for r in listing.recipients:
            given = (r.fields.get("scope") or "").strip().lower()
            if given and given not in SCOPE_WORDS:
                result.refused.append(
                    Refused(r.line, r.number.e164, f"unknown scope “{given[:20]}” (all or marketing)")
                )
                continue
            numbers.append(r.number.e164)
            if given:
                scopes[r.number.e164] = SCOPE_WORDS[given]
            if r.fields.get("reason"):
                reasons[r.number.e164] = r.fields["reason"]
        if numbers:
            result.added, result.unchanged = await self.add(
                numbers, scope=scope, reason=reason, by=by, source=source, scopes=scopes, reasons=reasons
            )
        return result


def _csv(rows: list[tuple[object, ...]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for e164, scope, reason, by, at, source in rows:
        stamp = datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]
        writer.writerow((e164, scope, reason, by, stamp, source))
    return out.getvalue()
