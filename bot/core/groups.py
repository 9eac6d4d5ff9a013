"""Contact groups for outage SMS, from a TOML file (CONTACT_GROUPS_FILE, default ./groups.toml).

    [groups.payments-oncall]
    description = "Payments on-call and stakeholders"
    template = "[{status}] {service}: {details}"
    allow = ["U0123ABC", "S0456DEF"]   # optional; otherwise ACCESS_OUTAGE decides
    members = [
      { name = "Ana Lee", number = "+852 5123 4567", slack = "U0123ABC" },
      { name = "Bo Chan", number = "+65 8123 4567" },
    ]

Invalid entries (a bad number, an unknown key, a group without members) are reported by group and entry
and do not stop the valid groups from working. A file that is not valid TOML keeps the last good version
in use and reports the parser's line and column. The file is re-read when it changes.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from bot.sms.phone import InvalidNumber, PhoneNumber, parse_number
from bot.sms.recipients import TemplateError, template_fields

from .access import parse_entries

GROUP_KEYS = {"description", "template", "allow", "members"}
MEMBER_KEYS = {"name", "number", "slack"}
DEFAULT_TEMPLATE = "[{status}] {service}: {details}"


@dataclass(frozen=True)
class Member:
    name: str
    number: PhoneNumber
    slack: str | None = None


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    template: str
    allow: tuple[str, ...] | None
    members: tuple[Member, ...]


@dataclass
class GroupBook:
    groups: dict[str, Group] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # by group and entry
    error: str | None = None  # the file as a whole could not be used (the last good groups stay)
    loaded_from: str = ""

    def number_for(self, slack_user: str) -> PhoneNumber | None:
        for group in self.groups.values():
            for member in group.members:
                if member.slack == slack_user:
                    return member.number
        return None


def parse_groups(text: str, default_region: str | None = None) -> GroupBook:
    """Parse the file's text; raises tomllib.TOMLDecodeError for invalid TOML."""
    data = tomllib.loads(text)
    book = GroupBook()
    for key in data:
        if key != "groups":
            book.problems.append(f"Unknown top-level key “{key}” (only [groups.NAME] tables are read).")
    groups = data.get("groups", {})
    if not isinstance(groups, dict):
        book.problems.append("“groups” must be a table of [groups.NAME] tables.")
        return book
    for name, raw in groups.items():
        where = f"group “{name}”"
        if not isinstance(raw, dict):
            book.problems.append(f"{where}: must be a table.")
            continue
        for key in raw:
            if key not in GROUP_KEYS:
                book.problems.append(
                    f"{where}: unknown key “{key}” (known: {', '.join(sorted(GROUP_KEYS))})."
                )
        template = raw.get("template", DEFAULT_TEMPLATE)
        try:
            if not isinstance(template, str):
                raise TemplateError("the template must be a string")
            template_fields(template)
        except TemplateError as exc:
            book.problems.append(f"{where}: template: {exc.reason}")
            template = DEFAULT_TEMPLATE
        allow: tuple[str, ...] | None = None
        if "allow" in raw:
            try:
                if not isinstance(raw["allow"], list):
                    raise ValueError("allow must be a list of Slack ids")
                allow = parse_entries(",".join(str(x) for x in raw["allow"]))
            except ValueError as exc:
                book.problems.append(f"{where}: allow: {exc}; nobody may page this group until it is fixed.")
                allow = ()
        members: list[Member] = []
        seen: set[str] = set()
        for i, entry in enumerate(raw.get("members", []) if isinstance(raw.get("members"), list) else [], 1):
            label = f"{where}, member {i}"
            if not isinstance(entry, dict):
                book.problems.append(f'{label}: must be {{ name = "…", number = "…" }}.')
                continue
            label = f"{where}, member {i} ({entry.get('name', 'no name')})"
            unknown = [k for k in entry if k not in MEMBER_KEYS]
            if unknown:
                book.problems.append(f"{label}: unknown key “{unknown[0]}” (known: name, number, slack).")
                continue
            try:
                number = parse_number(str(entry.get("number", "")), default_region)
            except InvalidNumber as exc:
                book.problems.append(f"{label}: {exc.describe(masked=True)}")
                continue
            if number.e164 in seen:
                book.problems.append(f"{label}: {number.masked} is listed twice; sent once.")
                continue
            seen.add(number.e164)
            members.append(Member(str(entry.get("name") or number.masked), number, entry.get("slack")))
        if not isinstance(raw.get("members"), list):
            book.problems.append(f"{where}: “members” must be a list of {{ name, number }} entries.")
        if not members:
            book.problems.append(f"{where}: has no valid members; it cannot be paged.")
            continue
        book.groups[name] = Group(name, str(raw.get("description", "")), template, allow, tuple(members))
    return book


class GroupFile:
    """The groups file, re-read when its modification time changes; the last good version on errors."""

    def __init__(self, path: str | Path, default_region: str | None = None) -> None:
        self.path = Path(path)
        self.default_region = default_region
        self.book = GroupBook()
        self._stamp: tuple[float, int] | None = None

    def cached(self) -> GroupBook:
        """The groups as last read, without touching the file (for code that must answer fast)."""
        return self.book

    async def watch(self, every: float = 2.0) -> None:
        """Re-read the file whenever it changes (run as a background task)."""
        import asyncio

        while True:
            self.current()
            await asyncio.sleep(every)

    def current(self) -> GroupBook:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime, stat.st_size)
        except FileNotFoundError:
            if self._stamp is not None or not self.book.error:
                self.book = GroupBook(error=f"{self.path} does not exist (setting CONTACT_GROUPS_FILE).")
                self._stamp = None
            return self.book
        if stamp != self._stamp:
            self.reload()
        return self.book

    def reload(self) -> GroupBook:
        try:
            text = self.path.read_text(encoding="utf-8")
            stamp = (os.stat(self.path).st_mtime, os.stat(self.path).st_size)
        except OSError as exc:
            self.book.error = f"{self.path} cannot be read: {exc.strerror or exc}"
            return self.book
        try:
            book = parse_groups(text, self.default_region)
        except tomllib.TOMLDecodeError as exc:
            kept = (
                f"; the last good version ({len(self.book.groups)} groups) stays in use"
                if self.book.groups
                else ""
            )
            self.book.error = f"{self.path} is not valid TOML: {exc}{kept}."
            self._stamp = stamp
            return self.book
        book.loaded_from = str(self.path)
        self.book = book
        self._stamp = stamp
        return self.book
