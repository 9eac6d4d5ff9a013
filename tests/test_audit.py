"""The audit trail: `bot.core.audit` on both databases, and `/sms audit` through the bot; the access
refusals, the audit's among them."""

from __future__ import annotations

import csv
import io
import json

import pytest

from bot.core import audit
from bot.core.access import SETTING_FOR, AccessPolicy, Capability
from bot.core.commands import CommandError, parse_audit
from bot.core.store import JobKind, NewRecipient
from bot.sms import Outcome, Status
from bot.sms.phone import parse_number

from .conftest import open_store, run
from .harness import Bot


def people(n: int, start: int = 0) -> list[NewRecipient]:
    return [NewRecipient(parse_number(f"+65 8100 {start + i:04d}"), f"Hello {start + i}") for i in range(n)]


def test_the_trail_lists_every_recipient_of_the_periods_sends_oldest_first_in_pages(database, monkeypatch):
    monkeypatch.setattr(audit, "AUDIT_PAGE", 3)  # a 7-recipient send in 3 pages; sends 3 a page
    monkeypatch.setattr(audit, "AUDIT_GROUP", 2)  # small sends together, 2 at most

    async def go():
        store = await open_store(database)
        now = [1_000_000.0]
        store.clock = lambda: now[0]
        old, _ = await store.create_job(kind=JobKind.SINGLE, created_by="U0OLD", recipients=people(1, 900))
        now[0] += 86400
        big, _ = await store.create_job(
            kind=JobKind.BATCH, created_by="U0LEAD", recipients=people(7), channel_id="C0SUPPORT", type="MKT"
        )
        await store.record_outcomes(
            big.id, [Outcome(0, "6581000000", Status.ACCEPTED, message_id="m0", segments=1)]
        )
        smalls = []
        for i in range(4):
            now[0] += 1
            meta = {"optout_override": {"by": "U0KEEPER", "reason": "asked us to"}} if i == 2 else {}
            job, _ = await store.create_job(
                kind=JobKind.SINGLE, created_by="U0AGENT", recipients=people(1, 100 + i), meta=meta
            )
            smalls.append(job)
        out = io.StringIO()
        done = await audit.export_audit(store, since=now[0] - 3600, out=out)
        capped = io.StringIO()
        part = await audit.export_audit(store, since=now[0] - 3600, out=capped, limit=8)
        exact = await audit.export_audit(store, since=now[0] - 3600, out=io.StringIO(), limit=11)
        await store.close()
        return old, big, smalls, done, out.getvalue(), part, capped.getvalue(), exact

    old, big, smalls, done, text, part, capped, exact = run(go())
    # At the limit the file stops, the oldest sends first, and says it is not complete.
    assert (part.texts, part.complete, exact.complete) == (8, False, True) and done.complete
    assert [r["send_id"] for r in csv.DictReader(io.StringIO(capped))] == [big.id] * 7 + [smalls[0].id]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(audit.COLUMNS)
    assert (done.sends, done.texts) == (5, 11) and len(rows) == 11
    assert [r["send_id"] for r in rows] == [big.id] * 7 + [j.id for j in smalls]  # oldest first, in order
    assert [r["number"] for r in rows[:7]] == [f"+6581000{i:03d}" for i in range(7)]  # full numbers
    assert rows[0]["state"] == "accepted" and rows[0]["message_id"] == "m0" and rows[0]["segments"] == "1"
    assert rows[1]["state"] == "queued" and rows[1]["message_id"] == "" and rows[1]["message"] == "Hello 1"
    assert rows[0]["sent_by"] == "U0LEAD" and rows[0]["channel"] == "C0SUPPORT" and rows[0]["type"] == "MKT"
    assert rows[0]["send_created_utc"] == "1970-01-13T13:46:40Z"
    assert old.id not in text and "+6581000900" not in text  # before the period
    assert [r["notes"] for r in rows[7:]] == ["", "", "opt-out overridden by U0KEEPER: “asked us to”", ""]


def test_notes_say_what_an_audit_asks_about():
    assert audit.notes({}) == ""
    assert audit.notes({"outage": True, "groups": ["payments", "execs"], "test": True}) == (
        "outage test to payments, execs"
    )
    assert (
        audit.notes(
            {
                "outage": True,
                "groups": ["payments"],
                "retry_of": "j0",
                "optout_override": {"by": "U1", "reason": "x"},
            }
        )
        == "opt-out overridden by U1: “x”; outage to payments; sent again from j0"
    )


@pytest.mark.parametrize(
    ("text", "days"), [("audit", 7), ("audit 1", 1), ("AUDIT 90", 90), ("audit   30 ", 30)]
)
def test_audit_days(text, days):
    assert parse_audit(text.strip()) == days


@pytest.mark.parametrize("text", ["audit 0", "audit 91", "audit week", "audit -3", "audit 7 days"])
def test_audit_days_refused(text):
    with pytest.raises(CommandError, match="not a number of days from 1 to 90"):
        parse_audit(text)


def test_sms_audit_sends_the_trail_to_the_persons_dm_only_when_allowed(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_AUDIT="U0AUDITOR") as bot:
            await bot.command("+852 5123 4567 Your parcel ships today")
            await bot.job_done(1)
            before = len(bot.slack.webhooks)
            refused = await bot.command("audit", user="U0AGENT", response_url="agent")
            bad = await bot.command("audit fortnight", user="U0AUDITOR", response_url="bad")
            asked = await bot.command("audit 30", user="U0AUDITOR", response_url="auditor")
            hooks = await bot.slack.wait_for_webhooks(before + 2)
            said = {name: body["text"] for name, body in hooks[before:]}
            (upload,) = bot.slack.called("files.completeUploadExternal")
            return refused, bad, asked, said, upload.params, list(bot.slack.uploads.values())

    refused, bad, asked, said, upload, files = run(go())
    assert refused.status_code == asked.status_code == 200 and not refused.text and not asked.text
    assert "not a number of days from 1 to 90" in bad.text and set(said) == {"agent", "auditor"}
    assert "not allowed to export the audit trail" in said["agent"] and "ACCESS_AUDIT" in said["agent"]
    assert said["auditor"] == (
        "Sent you the audit trail as a CSV file in a direct message. The last 30 days: 1 send, 1 recipient."
    )
    assert upload["channel_id"] == "D0AUDITOR"  # the person's DM, never the channel
    (content,) = files
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert [(r["number"], r["message"], r["state"]) for r in rows] == [
        ("+85251234567", "Your parcel ships today", "accepted")
    ]
    assert "+85251234567" not in json.dumps(said)


@pytest.mark.parametrize(
    ("capability", "nobody", "not_you"),
    [
        (Capability.SEND, "Sending SMS is not enabled", "not allowed to send SMS."),
        (Capability.BULK, "Bulk sends are not enabled", "not allowed to make bulk sends."),
        (Capability.OUTAGE, "Outage sends are not enabled", "not allowed to make outage sends."),
        (Capability.OPTOUT, "Managing opt-outs is not enabled", "not allowed to manage opt-outs."),
        (
            Capability.AUDIT,
            "Exporting the audit trail is not enabled",
            "not allowed to export the audit trail.",
        ),
    ],
)
def test_every_refusal_says_what_was_refused_and_which_setting_allows_it(capability, nobody, not_you):
    setting = SETTING_FOR[capability]
    assert AccessPolicy(rules={}).refusal(capability).startswith(f"{nobody} for anyone yet")
    assert setting in AccessPolicy(rules={}).refusal(capability)
    assert AccessPolicy(rules={capability: ("U0SOMEONE",)}).refusal(capability) == (
        f"You are {not_you} An admin can add you to `{setting}`."
    )
