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


def parse_recipients(
    text: str, default_region: str | None = None, *, max_recipients: int | None = None
) -> RecipientList:
    """Parse a pasted list or file: one number per line, or `number,name,...` rows (a header row is
    detected when its first cell is not a number). Duplicates (same E.164) are dropped and counted;
    invalid or Chinese-mainland numbers are refused, each with its line and reason. Blank lines and
    lines starting with `#` are skipped.
    """
    result = RecipientList()
    rows = [row for row in csv.reader(io.StringIO(text.lstrip("\ufeff")), skipinitialspace=True)]
    header: list[str] | None = None
    start = 0
    first = next(
        ((i, r) for i, r in enumerate(rows) if r and r[0].strip() and not r[0].startswith("#")), None
    )
    if first is not None:
        i, row = first
        if not any(ch.isdigit() for ch in row[0]):
            header = [_column(c, n) for n, c in enumerate(row)]
            start = i + 1
    if header is None:
        width = max((len(r) for r in rows), default=1)
        header = ["number"] + [f"column{n}" for n in range(2, width + 1)]
        if width >= 2:
            header[1] = "name"
    result.columns = header
    seen: set[str] = set()
    for lineno, row in enumerate(rows[start:], start=start + 1):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        raw = row[0]
        try:
            number = parse_number(raw, default_region)
        except InvalidNumber as exc:
            result.refused.append(Refused(lineno, raw, exc.reason))
            continue
        if number.e164 in seen:
            result.duplicates += 1
            continue
        seen.add(number.e164)
        values = {name: (row[n].strip() if n < len(row) else "") for n, name in enumerate(header)}
        values[header[0]] = number.e164
        result.recipients.append(Recipient(number, values, lineno))
        if max_recipients is not None and len(result.recipients) > max_recipients:
            break
    return result


def _column(cell: str, n: int) -> str:
    name = cell.strip()
    return name or f"column{n + 1}"
