"""Outage SMS: contact groups (and extra numbers) → a draft of single sends, confirmed like a bulk send.

Group members were validated when the groups file was read, so this is bounded work (a few thousand
known-good numbers and at most a pasted paragraph of extra ones) and can run before Slack is answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.sms.encoding import MessageError, validate_message
from bot.sms.phone import PhoneNumber, mask
from bot.sms.recipients import TemplateError, parse_recipients, render, template_fields

from .bulk import BulkLimits, BulkProblem, Draft, Tally, left_out
from .groups import GroupBook
from .store import JobKind, RecipientState, Store

FIELDS = ("service", "status", "details")
DEFAULT_TEMPLATE = "[{status}] {service}: {details}"


@dataclass
class OutageForm:
    user_id: str
    channel_id: str
    response_url: str | None
    groups: list[str]
    extra_numbers: str = ""
    service: str = ""
    status: str = ""
    details: str = ""
    message: str = ""  # replaces the group's template when given
    test_to_me: bool = False
    follow_up_of: str | None = None
    sender_id: str | None = None
    send_at: float | None = None  # scheduled for then (epoch seconds); None: now


@dataclass
class Recipients:
    people: list[tuple[PhoneNumber, str]] = field(default_factory=list)  # number, name
    refused: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    dropped: list[str] = field(default_factory=list)  # masked: failed permanently last time


def group_template(groups: list[str], book: GroupBook) -> str:
    """The template the form starts with: the first chosen group's, else the default."""
    for name in groups:
        if name in book.groups:
            return book.groups[name].template
    return DEFAULT_TEMPLATE


def template_for(form: OutageForm, book: GroupBook) -> str:
    """The message as written in the form (prefilled from the group's template), or, when the box was
    emptied, the group's template."""
    return form.message.strip() or group_template(form.groups, book)


async def collect(form: OutageForm, book: GroupBook, store: Store, default_region: str | None) -> Recipients:
    out = Recipients()
    seen: set[str] = set()

    def add(number: PhoneNumber, name: str) -> None:
        if number.e164 in seen:
            out.duplicates += 1
            return
        seen.add(number.e164)
        out.people.append((number, name))

    if form.follow_up_of:
        for r in await store.recipients(form.follow_up_of):
            if r.state == RecipientState.FAILED and not r.retryable:
                out.dropped.append(r.number.masked)
            else:
                add(r.number, "")
    for name in form.groups:
        group = book.groups.get(name)
        if group is None:
            raise BulkProblem(f"The contact group “{name}” no longer exists (see /sms groups).")
        for member in group.members:
            add(member.number, member.name)
    if form.extra_numbers.strip():
        listing = parse_recipients(form.extra_numbers, default_region)
        for r in listing.recipients:
            add(r.number, r.fields.get("name", ""))
        out.duplicates += listing.duplicates
        out.refused += [{"line": x.line, "masked": mask(x.text), "reason": x.reason} for x in listing.refused]
    return out


def problems(form: OutageForm, book: GroupBook) -> dict[str, str]:
    """Inline problems of the outage form. Keys: groups, message, details."""
    found: dict[str, str] = {}
    if not form.groups and not form.extra_numbers.strip() and not form.follow_up_of and not form.test_to_me:
        found["groups"] = "Choose at least one contact group, or add numbers below."
    template = template_for(form, book)
    try:
        names = template_fields(template)
    except TemplateError as exc:
        found["message"] = exc.reason
        return found
    missing = [n for n in names if n in FIELDS and not getattr(form, n).strip()]
    if missing:
        found["details" if "details" in missing else "message"] = (
            f"The message uses {{{missing[0]}}}: fill in “{missing[0]}”, or take it out of the message."
        )
    unknown = [n for n in names if n not in FIELDS and n != "name"]
    if unknown:
        found["message"] = (
            f"The message uses {{{unknown[0]}}}, which is not one of {{service}}, {{status}}, {{details}}, {{name}}."
        )
    return found


async def prepare(
    form: OutageForm, book: GroupBook, store: Store, limits: BulkLimits, caller_number: PhoneNumber | None
) -> Draft:
    template = template_for(form, book)
    if form.test_to_me:
        if caller_number is None:
            raise BulkProblem(
                'There is no number for you in the contact groups file: add `slack = "YOUR-SLACK-ID"` to your '
                "member entry, or untick “send a test to me first”."
            )
        found = Recipients(people=[(caller_number, "you")])
    else:
        found = await collect(form, book, store, limits.default_region)
    if not found.people and found.refused:
        lines = "; ".join(f"line {r['line']} ({r['masked']}): {r['reason']}" for r in found.refused[:3])
        more = f"; and {len(found.refused) - 3} more" if len(found.refused) > 3 else ""
        raise BulkProblem(f"None of these numbers can be texted: {lines}{more}", field="extra")
    if not found.people:
        raise BulkProblem("Nobody is left to text: every number was refused or failed permanently before.")
    if len(found.people) > limits.max_recipients:
        raise BulkProblem(
            f"{len(found.people):,} recipients is over the limit of {limits.max_recipients:,} "
            "(setting BULK_MAX_RECIPIENTS)."
        )
    values = {f: getattr(form, f).strip() for f in FIELDS}
    out = await left_out(store, [number for number, _ in found.people], "NOTIFY", limits, "here")
    tally = Tally()
    for number, name in found.people:
        if number.e164 in out:
            continue
        try:
            message = render(template, {**values, "name": name or "there"})
            info = validate_message(message, limits.max_chars)
        except (TemplateError, MessageError) as exc:
            raise BulkProblem(exc.reason) from None
        tally.add(number, message, info)
    await tally.check_budget(store, form.user_id, limits)
    draft = tally.draft(
        limits,
        user_id=form.user_id,
        channel_id=form.channel_id,
        response_url=form.response_url,
        template=template,
        type="NOTIFY",
        sender_id=form.sender_id,
        validity=None,
        refused=found.refused,
        duplicates=found.duplicates,
        kind=JobKind.FANOUT,
        meta={
            "outage": True,
            "groups": form.groups,
            "test": form.test_to_me,
            "follow_up_of": form.follow_up_of,
            "dropped": found.dropped[:50],
            "dropped_count": len(found.dropped),
            "service": values["service"],
            **out.meta(limits),
            **({"send_at": form.send_at} if form.send_at else {}),
        },
        run_at=form.send_at,
    )
    if form.test_to_me:
        draft.needs_typed_count = False
    return draft
