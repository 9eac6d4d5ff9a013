"""Opt-outs: the list itself, `/sms optout`, and its effect on every path (single, bulk, outage, retry,
a job already running), with the one explicit override."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest

from bot.core.commands import CommandError, parse_optout
from bot.core.optouts import OptOut, OptOuts, Scope
from bot.core.store import JobKind, NewRecipient, RecipientState
from bot.slack.ids import ActionId, BlockId, CallbackId
from bot.slack.views import code_masks, escape, override_line
from bot.sms.phone import parse_number

from .conftest import open_store, run
from .harness import Bot
from .test_bulk import LEAD, bulk_values, confirm, review, text_of

KEEPER = "U0KEEPER"  # may manage opt-outs
N1, N2, N3 = "+6581000001", "+6581000002", "+6581000003"


def numbers_sent(provider) -> list[str]:
    single = [r.params["To"] for r in provider.sent()]
    return single + [n for r in provider.sent("BatchSendMessageToGlobe") for n in json.loads(r.params["To"])]


def test_optout_commands_parse_with_specific_errors():
    add = parse_optout("add +852 5123 4567 marketing asked by email", None)
    assert (add.action, add.number.e164, add.scope, add.reason) == (
        "add",
        "+85251234567",
        Scope.MARKETING,
        "asked by email",
    )
    assert parse_optout("add +852 5123 4567 called the hotline", None).scope == Scope.ALL
    assert parse_optout("", None).action == "list"
    assert parse_optout("list +65 8100 0001", None).number.e164 == N1
    for text, expected in [
        ("add", "Give the number"),
        ("forget +65 8100 0001", "Unknown opt-out command"),
        ("remove +65 8100 0001 now", "takes only a number"),
        ("add hello", "not a phone number"),
    ]:
        with pytest.raises(CommandError, match=expected):
            parse_optout(text, None)


def test_the_override_line_says_who_decided_and_why_and_escapes_the_reason():
    line = override_line(
        {"by": "U1", "reason": "<!channel> urgent & now", "opted_out_by": "U2", "opted_out_at": 1763900000.0}
    )
    assert "<!channel>" not in line and "“&lt;!channel&gt; urgent &amp; now”" in line
    assert "(added by <@U2>, since <!date^1763900000^" in line and "<@U1> sent it anyway" in line
    assert "added by" not in override_line({"by": "U1", "reason": "r"})  # an opt-out recorded without them


def test_an_opt_out_in_slack_keeps_its_mention_and_escapes_its_reason():
    entry = OptOut("+6581000001", Scope.ALL, "<!here> & the rest", "U0KEEPER", 1_763_900_000.0, "slack")
    shown = code_masks(entry.describe(escape))
    assert shown.startswith("`+65 8100 ****` is opted out of all texts, added by <@U0KEEPER> on 2025-11-23")
    assert shown.endswith(": “&lt;!here&gt; &amp; the rest”")
    assert entry.describe().endswith(": “<!here> & the rest”")  # the core's own words, as given


def test_the_list_adds_widens_never_narrows_imports_and_exports(database, monkeypatch):
    import bot.core.optouts

    monkeypatch.setattr(bot.core.optouts, "EXPORT_PAGE", 2)  # the export reads in pages: two of them here

    async def go():
        store = await open_store(database)
        optouts = OptOuts(store)
        assert await optouts.add([N1], scope=Scope.MARKETING, by="U1", source="slack") == (1, 0)
        assert set(await optouts.find([N1, N2], "MKT")) == {N1}
        assert await optouts.find([N1, N2], "NOTIFY") == {}  # marketing only
        assert await optouts.add([N1], scope=Scope.ALL, reason="phoned us", by="U2", source="slack") == (1, 0)
        assert await optouts.add([N1], scope=Scope.MARKETING, by="U3", source="slack") == (
            0,
            1,
        )  # never narrowed
        entry = await optouts.lookup(N1)
        assert (entry.scope, entry.added_by, entry.reason) == (Scope.ALL, "U2", "phoned us")
        result = await optouts.import_csv(
            "number,scope,reason\n+65 8100 0002,marketing,newsletter\n+65 8100 0003,,\n+65 8100 0003,,\n"
            "not a number,,\n+65 8100 0004,sometimes,\n",
            scope=Scope.ALL,
            reason="form",
            by="U4",
            source="import:list.csv",
        )
        assert (result.added, result.duplicates, len(result.refused)) == (2, 1, 2)
        assert "unknown scope" in result.refused[-1].reason
        content, exported_count = await optouts.export_csv()
        exported = list(csv.DictReader(io.StringIO(content)))
        assert exported_count == 3
        count, latest = await optouts.latest(2)
        removed = await optouts.remove([N2, "+6599999999"])
        after = await optouts.latest()
        await store.close()
        return exported, count, latest, removed, after

    exported, count, latest, removed, after = run(go())
    assert [(r["number"], r["scope"], r["reason"], r["source"]) for r in exported] == [
        (N1, "all", "phoned us", "slack"),
        (N2, "marketing", "newsletter", "import:list.csv"),
        (N3, "all", "form", "import:list.csv"),
    ]
    assert count == 3 and len(latest) == 2
    assert removed == 1 and after[0] == 2


def test_managing_optouts_needs_its_own_setting(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path) as bot:
            await bot.command("optout add +65 8100 0001", user=KEEPER, response_url="add")
            await bot.command("optout list", user=KEEPER, response_url="list")
            await bot.command("optout", user=KEEPER, response_url="bare")  # a list too
            said = {name: body["text"] for name, body in await bot.slack.wait_for_webhooks(3)}
            return said["add"], said["list"], said["bare"], await bot.count("suppressions")

    refused, listed, bare, rows = run(go())
    assert "ACCESS_OPTOUT" in refused and "Nothing was changed" in refused
    # reading the list changes nothing anyway: the refusal does not say so
    assert "ACCESS_OPTOUT" in listed and "Nothing was changed" not in listed
    assert "ACCESS_OPTOUT" in bare and "Nothing was changed" not in bare
    assert rows == 0


def test_a_single_send_to_an_opted_out_number_is_refused_and_overridden_only_explicitly(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_OPTOUT=KEEPER) as bot:
            await bot.command("optout add +65 8100 0001 called the hotline <!here> & asked", user=KEEPER)
            await bot.command("optout add +65 8100 0002 marketing", user=KEEPER)
            await bot.slack.wait_for_webhooks(2)
            plain = await bot.command("+65 8100 0001 Your parcel ships today")  # no permission to override
            await bot.command("+65 8100 0001 Your account was locked", user=KEEPER)
            hooks = await bot.slack.wait_for_webhooks(4)
            agent_refusal, keeper_refusal = hooks[2][1], hooks[3][1]
            # marketing-only opt-out: a notification still goes
            await bot.command("+65 8100 0002 Your parcel ships today")
            _, notify = await bot.job_done(1)
            (button,) = [b for b in keeper_refusal["blocks"] if b["type"] == "actions"]
            draft_id = button["elements"][0]["value"]
            stranger = await bot.click(ActionId.OVERRIDE_OPEN, draft_id, user="U0OTHER")
            await bot.click(ActionId.OVERRIDE_OPEN, draft_id, user=KEEPER)
            (opened,) = await bot.slack.wait_for("views.open", 1)
            modal = opened.params["view"]
            reason = {
                BlockId.OVERRIDE_REASON: {
                    ActionId.OVERRIDE_REASON: {"type": "plain_text_input", "value": "security notice"}
                }
            }
            answer = await bot.submit_view(modal, reason, user=KEEPER, view_id="VOVR")
            again = await bot.submit_view(modal, reason, user=KEEPER, view_id="VOVR")  # a double submit
            job, summary = await bot.job_done(2)
            jobs = await bot.count("jobs")
            posts = [c.params for c in bot.slack.called("chat.postMessage")]
            (shown,) = [
                text_of(p["blocks"]) for p in posts if "Opt-out overridden" in text_of(p.get("blocks"))
            ]

        assert plain.status_code == 200
        for refusal in (agent_refusal, keeper_refusal):
            assert (
                "Nothing was sent: +65 8100 **** is opted out of all texts, added by <@U0KEEPER>"
                in refusal["text"]
            )
            # the reason is someone's own words: escaped in the notification text as in the blocks
            assert "called the hotline &lt;!here&gt; &amp; asked" in refusal["text"]
            assert "called the hotline &lt;!here&gt; &amp; asked" in text_of(refusal["blocks"])
        # a plain send: always refused
        assert not [b for b in agent_refusal["blocks"] if b["type"] == "actions"]
        assert "ACCESS_OPTOUT" in text_of(agent_refusal["blocks"])
        assert notify.accepted == 1
        assert stranger.status_code == 200
        assert modal["callback_id"] == CallbackId.OPTOUT_OVERRIDE and "called the hotline" in text_of(modal)
        assert "added by <@U0KEEPER>" in text_of(modal)  # a mention, not its escaped text
        assert answer.text == "" and again.status_code == 200
        assert summary.accepted == 1 and jobs == 2
        assert (
            job.meta["optout_override"]["by"] == KEEPER
            and job.meta["optout_override"]["reason"] == "security notice"
        )
        assert numbers_sent(provider).count("6581000001") == 1
        # the channel sees, with the send, that an opt-out was overridden, by whom and why (never the number)
        assert "added by <@U0KEEPER>" in shown and "<@U0KEEPER> sent it anyway" in shown
        assert "security notice" in shown and "6581000001" not in shown and "8100 0001" not in shown

    run(go())


def test_bulk_confirmation_counts_the_suppressed_and_never_sends_to_them(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_BULK=LEAD, ACCESS_OPTOUT=KEEPER) as bot:
            optouts = OptOuts(bot.runtime.store)
            await optouts.add([N1], by=KEEPER, source="slack")
            await optouts.add([N2], scope=Scope.MARKETING, by=KEEPER, source="slack")
            listing = "+65 8100 0001\n+65 8100 0002\n+65 8100 0003"
            marketing = await review(bot, bulk_values(recipients=listing, message="Sale", type_="MKT"))
            await confirm(bot, marketing)
            _, summary = await bot.job_done(1)
            notify = await review(bot, bulk_values(recipients=listing, message="Outage"))
            everyone = await review(bot, bulk_values(recipients="+65 8100 0001", message="Outage"))
            return marketing, summary, notify, everyone

    marketing, summary, notify, everyone = run(go())
    assert "1 person will be texted" in text_of(marketing) and "2 suppressed" in text_of(marketing)
    assert summary.total == 1 and summary.accepted == 1
    assert numbers_sent(provider) == ["6581000003"]
    assert "2 people will be texted" in text_of(notify) and "1 suppressed" in text_of(notify)
    assert "Nobody in the pasted list can be texted: 1 opted out" in text_of(everyone)


def test_a_number_opted_out_while_its_job_runs_is_not_sent(provider, tmp_path):
    """A 1,500-recipient batch: the opt-out comes after the first chunk left, before the second (the
    batch API's 1 call/s leaves a second); the second chunk goes without that number."""
    late = 1200

    async def go():
        marked = asyncio.Event()

        def fault(point: str) -> None:
            if point == "after_mark_in_flight":
                marked.set()

        async with Bot(provider, tmp_path, fault=fault, pacing="real") as bot:
            store = bot.runtime.store
            recipients = [NewRecipient(parse_number(f"+65 81{i:06d}"), "Update") for i in range(1500)]
            job, _ = await store.create_job(kind=JobKind.BATCH, created_by="U1", recipients=recipients)
            bot.runtime.worker.submit(job.id)
            await marked.wait()
            in_flight = [r.idx for r in await store.recipients(job.id, [RecipientState.IN_FLIGHT])]
            await OptOuts(store).add([recipients[late].number], by=KEEPER, source="slack")
            summary = await bot.runtime.worker.wait(job.id)
            rows = await store.recipients(job.id)
            return in_flight, summary, rows

    in_flight, summary, rows = run(go())
    assert in_flight == list(range(1000))  # the first chunk, and only it, had left
    assert (summary.accepted, summary.failed) == (1499, 1)
    assert rows[late].state == RecipientState.FAILED and rows[late].code == "OPTED_OUT"
    sent = numbers_sent(provider)
    assert rows[late].number.api not in sent and len(sent) == len(set(sent)) == 1499


def test_import_from_a_csv_file_and_export_to_a_direct_message(provider, tmp_path):
    async def go():
        async with Bot(provider, tmp_path, ACCESS_OPTOUT=KEEPER) as bot:
            await bot.command("optout import", user=KEEPER)
            (opened,) = await bot.slack.wait_for("views.open", 1)
            form = opened.params["view"]
            file = bot.slack.add_file(
                "stop.csv", b"number,reason\n+65 8100 0001,unsubscribe link\n+86 138 0013 8000,\n"
            )
            values = {
                BlockId.OPTOUT_FILE: {ActionId.OPTOUT_FILE: {"type": "file_input", "files": [file]}},
                BlockId.OPTOUT_LIST: {ActionId.OPTOUT_LIST: {"type": "plain_text_input", "value": None}},
                BlockId.OPTOUT_SCOPE: {
                    ActionId.OPTOUT_SCOPE: {
                        "type": "radio_buttons",
                        "selected_option": {"value": "marketing"},
                    }
                },
                BlockId.OPTOUT_REASON: {ActionId.OPTOUT_REASON: {"type": "plain_text_input", "value": None}},
            }
            empty = await bot.submit_view(form, {}, user=KEEPER)
            await bot.submit_view(form, values, user=KEEPER, view_id="VIMPORT")
            (_, told), *_ = await bot.slack.wait_for_webhooks(1)
            await bot.command("optout export", user=KEEPER)
            await bot.slack.wait_for("files.completeUploadExternal", 1)
            await bot.command("optout list", user=KEEPER)
            hooks = await bot.slack.wait_for_webhooks(3)
            entry = await OptOuts(bot.runtime.store).lookup(N1)
            return empty.json(), told["text"], list(bot.slack.uploads.values()), hooks[2][1], entry

    empty, told, uploads, listing, entry = run(go())
    assert "Attach a CSV file or paste" in empty["errors"][BlockId.OPTOUT_LIST]
    assert "1 added" in told and "1 line refused" in told and "Chinese-mainland" in told
    assert told.endswith("mainland.")  # one full stop after the list of refused lines
    assert (entry.scope, entry.reason, entry.source) == (
        Scope.MARKETING,
        "unsubscribe link",
        "import:stop.csv",
    )
    (upload,) = uploads
    assert upload.decode().splitlines()[1].startswith("+6581000001,marketing,unsubscribe link,U0KEEPER,")
    assert "1 number opted out" in listing["text"] and "+65 8100 ****" in text_of(listing["blocks"])
    assert "+6581000001" not in text_of(listing["blocks"])  # masked in Slack


def test_the_send_form_outage_and_send_again_leave_opted_out_numbers_alone(provider, tmp_path):
    """The send form refuses (with the way to override), an outage confirmation counts them, and "Send
    again" does not offer a number opted out since the first send."""
    from .test_outage import ONCALL, open_outage, outage_values, write_groups
    from .test_slack_app import modal_values

    provider.reset(reject_numbers=["6581000003"])  # one failure, for "Send again" to offer

    async def go():
        groups = write_groups(tmp_path)
        async with Bot(
            provider, tmp_path, ACCESS_BULK=LEAD, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=groups
        ) as bot:
            optouts = OptOuts(bot.runtime.store)
            await optouts.add([parse_number("+65 8123 4567")], by=KEEPER, source="slack")  # Bo, in a group
            await bot.command("")
            (opened,) = await bot.slack.wait_for("views.open", 1)
            modal = await bot.submit_view(opened.params["view"], modal_values("+65 8123 4567", "Hello"))
            form = await open_outage(bot)
            values = outage_values(groups=["payments"], service="API", status="Investigating", details="x")
            paged = (await bot.submit_view(form, values, user=ONCALL, view_id="VOUT")).json()
            listing = "+65 8100 0001\n+65 8100 0003"
            view = await review(bot, bulk_values(recipients=listing, message="Hi"))
            await confirm(bot, view)
            job, summary = await bot.job_done(1)
            await optouts.add([parse_number("+65 8100 0003")], by=KEEPER, source="slack")
            await bot.click(
                ActionId.BULK_SEND_AGAIN, job.id, user=LEAD, block_id=BlockId.BULK_SUMMARY_ACTIONS
            )
            (_, again), *_ = await bot.slack.wait_for_webhooks(1)
            return modal.json(), paged, summary, again

    modal, paged, summary, again = run(go())
    assert (
        "opted out of all texts" in modal["errors"][BlockId.SEND_TO]
        and "Send anyway" in modal["errors"][BlockId.SEND_TO]
    )
    assert paged["response_action"] == "push" and "1 suppressed" in text_of(paged["view"])
    assert "1 person will be texted" in text_of(paged["view"])
    assert summary.failed == 1
    assert "Nobody of those not reached can be texted: 1 opted out" in again["text"]
