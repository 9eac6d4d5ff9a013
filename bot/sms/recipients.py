"""Recipient lists (one number per line, or CSV with a header whose first column is the number) and
`{column}` message templates filled per recipient. Shared by the command line and the bot's bulk sends.
"""

from __future__ import annotations

import csv
import io
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from .phone import InvalidNumber, PhoneNumber, parse_number


class TemplateError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Recipient:
    number: PhoneNumber
    fields: dict[str, str]
    line: int


@dataclass(frozen=True, slots=True)
class Refused:
    line: int
    text: str
    reason: str

    def describe(self, masked: bool = True) -> str:
        shown = InvalidNumber(self.text, self.reason).describe(masked=masked)
        return f"line {self.line}: {shown}"


@dataclass
class RecipientList:
    recipients: list[Recipient] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    duplicates: int = 0
    columns: list[str] = field(default_factory=list)


def template_fields(template: str) -> list[str]:
    """The `{name}` placeholders of `template`; raises TemplateError for a malformed one."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(
            f"The message has an unmatched brace ({exc}). Write {{{{ or }}}} for a literal brace."
        ) from None
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name or not name.replace("_", "").replace("-", "").replace(" ", "").isalnum():
            raise TemplateError(f"“{{{name}}}” is not a placeholder: use a column name like {{name}}.")
        if spec or conv:
            raise TemplateError(f"“{{{name}}}” may not have a format (write just {{{name.split(':')[0]}}}).")
        if name not in names:
            names.append(name)
    return names


def render(template: str, values: dict[str, str]) -> str:
    """Fill `{column}` placeholders. Unknown placeholders raise TemplateError."""
    out: list[str] = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            if name not in values:
                raise TemplateError(f"The message uses {{{name}}}, but there is no column “{name}”.")
            out.append(values[name])
    return "".join(out)


def check_template(template: str, columns: Iterable[str]) -> list[str]:
    """Raise TemplateError naming the first placeholder without a column; returns the placeholders."""
    names = template_fields(template)
    available = set(columns)
    for name in names:
        if name not in available:
            have = ", ".join(f"{{{c}}}" for c in columns) or "none"
            raise TemplateError(
                f"The message uses {{{name}}}, but the list has no column “{name}” (columns: {have})."
            )
    return names


class RecipientParser:
    """Incremental parsing of a recipient list: feed it CSV rows in slices (so a caller can yield between
    them), read `.result`. The first non-blank, non-comment row is a header when its first cell has no digit.
    Duplicates (same E.164) are dropped and counted; invalid or Chinese-mainland numbers are refused,
    each with its line and reason."""

    def __init__(self, default_region: str | None = None, *, max_recipients: int | None = None) -> None:
        self.default_region = default_region
        self.max_recipients = max_recipients
        self.result = RecipientList()
        self._header: list[str] | None = None
        self._headerless = False
        self._seen: set[str] = set()

    @property
    def full(self) -> bool:
        return self.max_recipients is not None and len(self.result.recipients) > self.max_recipients

    def feed(self, rows: Iterable[tuple[int, list[str]]]) -> None:
        for lineno, row in rows:
            if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
                continue
            if self._header is None:
                if not any(ch.isdigit() for ch in row[0]):
                    self._header = [_column(c, n) for n, c in enumerate(row)]
                    self.result.columns = self._header
                    continue
                self._headerless = True
                self._header = _headerless_columns(len(row))
            elif self._headerless and len(row) > len(self._header):
                self._header = _headerless_columns(len(row))  # the widest row decides
            self.result.columns = self._header
            self._row(lineno, row)
            if self.full:
                return

    def _row(self, lineno: int, row: list[str]) -> None:
        raw = row[0]
        try:
            number = parse_number(raw, self.default_region)
        except InvalidNumber as exc:
            self.result.refused.append(Refused(lineno, raw, exc.reason))
            return
        if number.e164 in self._seen:
            self.result.duplicates += 1
            return
        self._seen.add(number.e164)
        assert self._header is not None
        values = {name: (row[n].strip() if n < len(row) else "") for n, name in enumerate(self._header)}
        values[self._header[0]] = number.e164
        self.result.recipients.append(Recipient(number, values, lineno))


def csv_rows(text: str) -> list[tuple[int, list[str]]]:
    return list(enumerate(csv.reader(io.StringIO(text.lstrip("\ufeff")), skipinitialspace=True), start=1))


def parse_recipients(
    text: str, default_region: str | None = None, *, max_recipients: int | None = None
) -> RecipientList:
    """Parse a pasted list or file in one go: one number per line, or `number,name,...` rows."""
    parser = RecipientParser(default_region, max_recipients=max_recipients)
    parser.feed(csv_rows(text))
    return parser.result


def _headerless_columns(width: int) -> list[str]:
    return ["number"] + (["name"] if width >= 2 else []) + [f"column{n}" for n in range(3, width + 1)]


def _column(cell: str, n: int) -> str:
    name = cell.strip()
    return name or f"column{n + 1}"
