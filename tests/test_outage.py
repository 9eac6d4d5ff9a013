"""Outage SMS end to end: contact groups → form → confirmation → single sends → summary → follow-up."""

from __future__ import annotations

import json
import os
import time

from bot.core.groups import GroupFile
from bot.slack.ids import ActionId, BlockId, CallbackId

from .conftest import run
from .harness import Bot

ONCALL = "U0ONCALL"

GROUPS = """
[groups.payments]
description = "Payments on-call"
template = "[{status}] {service}: {details}"
members = [
  { name = "Ana", number = "+852 5123 4567", slack = "U0ONCALL" },
  { name = "Bo", number = "+65 8123 4567" },
]

[groups.stakeholders]
template = "{service} is {status}"
allow = ["U0BOSS"]
members = [
  { name = "Bo again", number = "+65 8123 4567" },
  { name = "Cy", number = "+852 6123 4567" },
]
"""


def write_groups(tmp_path, text: str = GROUPS):
    path = tmp_path / "groups.toml"
    path.write_text(text)
    return str(path)


def outage_values(*, groups=(), extra="", service="", status="", details="", message="", test=False) -> dict:
    return {
        BlockId.OUTAGE_GROUPS: {
            ActionId.OUTAGE_GROUPS: {
                "type": "multi_static_select",
                "selected_options": [{"value": g} for g in groups],
            }
        },
        BlockId.OUTAGE_EXTRA: {ActionId.OUTAGE_EXTRA: {"type": "plain_text_input", "value": extra or None}},
        BlockId.OUTAGE_SERVICE: {
            ActionId.OUTAGE_SERVICE: {"type": "plain_text_input", "value": service or None}
        },
        BlockId.OUTAGE_STATUS: {
            ActionId.OUTAGE_STATUS: {
                "type": "static_select",
                "selected_option": {"value": status} if status else None,
            }
        },
        BlockId.OUTAGE_DETAILS: {
            ActionId.OUTAGE_DETAILS: {"type": "plain_text_input", "value": details or None}
        },
        BlockId.OUTAGE_MESSAGE: {
            ActionId.OUTAGE_MESSAGE: {"type": "plain_text_input", "value": message or None}
        },
        BlockId.OUTAGE_TEST: {
            ActionId.OUTAGE_TEST: {
                "type": "checkboxes",
                "selected_options": [{"value": "test"}] if test else [],
            }
        },
    }


async def open_outage(bot: Bot, user: str = ONCALL) -> dict:
    before = len(bot.slack.called("views.open"))
    await bot.command("outage", user=user)
    view = (await bot.slack.wait_for("views.open", before + 1))[-1].params["view"]
    assert view["callback_id"] == CallbackId.OUTAGE_FORM
    return view


async def submit_and_confirm(bot: Bot, form: dict, values: dict, *, user: str = ONCALL, n: int = 1):
    body = (await bot.submit_view(form, values, user=user, view_id=f"VOUT{n}")).json()
    assert body["response_action"] == "push", body
    confirm = body["view"]
    before = len(bot.runtime.worker.submitted)
    resp = await bot.submit_view(confirm, {}, user=user, view_id=f"VOC{n}")
    assert resp.json() == {"response_action": "clear"}
    job, summary = await bot.job_done(before + 1)
    return confirm, job, summary


def test_outage_reaches_every_member_once_with_one_single_send(provider, tmp_path):
    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            options = [o["value"] for o in form["blocks"][0]["element"]["options"]]
            assert options == ["payments", "stakeholders"]
            missing = (
                await bot.submit_view(
                    form, outage_values(groups=["payments"], service="Payments API"), user=ONCALL
                )
            ).json()
            assert missing["response_action"] == "errors" and "{status}" in json.dumps(missing["errors"])
            confirm, job, summary = await submit_and_confirm(
                bot,
                form,
                outage_values(
                    groups=["payments"],
                    extra="+852 9123 4567",
                    service="Payments API",
                    status="Investigating",
                    details="Card payments fail in HK",
                ),
            )
            shown = json.dumps(confirm, ensure_ascii=False)
            assert confirm["title"]["text"] == "Confirm outage SMS" and "3 people will be texted" in shown
            assert "[Investigating] Payments API: Card payments fail in HK" in shown
            assert summary.accepted == 3 and job.kind == "fanout"
            thread = bot.slack.called("chat.postMessage")[-1]
            assert thread.params["thread_ts"] == (await bot.posted(job.id)).parent_ts
            assert ActionId.OUTAGE_FOLLOW_UP in json.dumps(thread.params["blocks"])
            assert "🚨" in json.dumps(
                bot.slack.called("chat.postMessage")[0].params["blocks"], ensure_ascii=False
            )

    run(go())
    sent = provider.sent("SendMessageToGlobe")
    assert sorted(r.params["To"] for r in sent) == ["6581234567", "85251234567", "85291234567"]
    assert {r.params["Message"] for r in sent} == {"[Investigating] Payments API: Card payments fail in HK"}
    assert provider.sent("BatchSendMessageToGlobe") == []


def test_group_allow_list_decides_for_its_group(provider, tmp_path):
    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            refused = (
                await bot.submit_view(
                    form,
                    outage_values(groups=["stakeholders"], service="API", status="Resolved"),
                    user=ONCALL,
                )
            ).json()
            assert refused["response_action"] == "errors" and "not allowed" in json.dumps(refused["errors"])
            boss_form = await open_outage(bot, user="U0BOSS")  # allowed through the group's own list
            _, _, summary = await submit_and_confirm(
                bot,
                boss_form,
                outage_values(groups=["stakeholders"], service="API", status="Resolved"),
                user="U0BOSS",
            )
            assert summary.accepted == 2

    run(go())


def test_test_to_me_texts_only_the_caller(provider, tmp_path):
    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            confirm, job, summary = await submit_and_confirm(
                bot,
                form,
                outage_values(
                    groups=["payments"],
                    service="API",
                    status="Identified",
                    details="x",
                    test=True,
                ),
            )
            assert confirm["title"]["text"] == "Confirm test SMS" and summary.accepted == 1
            assert job.meta["test"] is True

    run(go())
    assert [r.params["To"] for r in provider.sent()] == ["85251234567"]


def test_bad_entries_are_reported_and_valid_groups_still_work(provider, tmp_path):
    text = (
        GROUPS
        + """
[groups.broken]
members = [
  { name = "Bad", number = "+852 123" },
  { name = "Odd", number = "+65 8123 9999", pager = "yes" },
]
[groups.empty]
members = []
"""
    )

    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=write_groups(tmp_path, text)
        ) as bot:
            listing = (await bot.command("groups", user=ONCALL)).json()
            shown = json.dumps(listing, ensure_ascii=False)
            await bot.command("groups reload", user=ONCALL)
            (_, reloaded), *_ = await bot.slack.wait_for_webhooks(1)
            assert reloaded["text"] == "Reloaded: 2 contact groups"
            assert (
                "`payments`" in shown
                and "`stakeholders`" in shown
                and "`broken`" not in shown.split("Problems")[0]
            )
            assert "group “broken”, member 1 (Bad)" in shown and "Too short" in shown
            assert "unknown key “pager”" in shown and "group “empty”: has no valid members" in shown
            form = await open_outage(bot)
            _, _, summary = await submit_and_confirm(
                bot, form, outage_values(groups=["payments"], service="API", status="Resolved", details="ok")
            )
            assert summary.accepted == 2

    run(go())


def test_reload_with_a_toml_error_keeps_the_last_good_groups(tmp_path):
    path = write_groups(tmp_path)
    groups = GroupFile(path)
    assert set(groups.current().groups) == {"payments", "stakeholders"}
    with open(path, "a") as fh:
        fh.write('\n[groups.new\nmembers = [ { name = "x" }\n')
    os.utime(path, (time.time() + 5, time.time() + 5))
    book = groups.current()
    assert set(book.groups) == {"payments", "stakeholders"}  # the last good version stays in use
    assert "is not valid TOML" in book.error and "(at line 18, column 12)" in book.error
    assert "the last good version (2 groups) stays in use" in book.error


def test_follow_up_reaches_the_original_recipients_minus_permanent_failures(provider, tmp_path):
    provider.reset(reject_numbers=["85261234567"])

    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE="U0ONCALL,U0BOSS", CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            _, alert, summary = await submit_and_confirm(
                bot,
                form,
                outage_values(
                    groups=["payments"],
                    extra="+852 6123 4567",
                    service="API",
                    status="Investigating",
                    details="down",
                ),
            )
            assert (summary.accepted, summary.failed) == (2, 1)
            provider.reset()
            click = await bot.click(
                ActionId.OUTAGE_FOLLOW_UP, alert.id, user=ONCALL, block_id=BlockId.BULK_SUMMARY_ACTIONS
            )
            assert click.status_code == 200
            form2 = (await bot.slack.wait_for("views.open", 2))[-1].params["view"]
            assert "Update to the 3 people who got the alert" in json.dumps(form2)
            assert message_box(form2)["element"]["initial_value"] == "[{status}] {service}: {details}"
            confirm, follow, summary = await submit_and_confirm(
                bot, form2, outage_values(service="API", status="Resolved", details="fixed"), n=2
            )
            assert "1 number left out (failed permanently last time): `+852 6123 ****`" in json.dumps(
                confirm, ensure_ascii=False
            )
            assert summary.accepted == 2 and follow.meta["follow_up_of"] == alert.id

    run(go())
    follow_up = provider.sent()[-2:]
    assert sorted(r.params["To"] for r in follow_up) == ["6581234567", "85251234567"]
    assert {r.params["Message"] for r in follow_up} == {"[Resolved] API: fixed"}


def message_box(view: dict) -> dict:
    (block,) = [b for b in view["blocks"] if b.get("block_id", "").startswith(BlockId.OUTAGE_MESSAGE)]
    return block


def test_the_message_box_holds_the_chosen_groups_template_and_stays_editable(provider, tmp_path):
    """The form opens with the default template in the message box; choosing a group puts that group's
    template there (Slack keeps typed text for an unchanged block_id, so the box gets a new one)."""

    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE="U0ONCALL,U0BOSS", CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            assert form["blocks"][0]["dispatch_action"] is True
            assert message_box(form)["element"]["initial_value"] == "[{status}] {service}: {details}"
            values = outage_values(groups=["stakeholders"], message="[{status}] {service}: {details}")
            chosen = {
                "type": "block_actions",
                "user": {"id": "U0BOSS"},
                "team": {"id": "T0001"},
                "api_app_id": "A0001",
                "trigger_id": "trigger-groups",
                "container": {"type": "view", "view_id": "VFORM"},
                "view": {**form, "id": "VFORM", "hash": "h-1", "state": {"values": values}},
                "actions": [
                    {
                        "action_id": ActionId.OUTAGE_GROUPS,
                        "block_id": BlockId.OUTAGE_GROUPS,
                        "type": "multi_static_select",
                        "selected_options": [{"value": "stakeholders"}],
                    }
                ],
            }
            assert (await bot.interact(chosen)).status_code == 200
            (update,) = await bot.slack.wait_for("views.update", 1)
            assert (update.params["view_id"], update.params["hash"]) == ("VFORM", "h-1")
            updated = update.params["view"]
            box = message_box(updated)
            assert box["block_id"] != BlockId.OUTAGE_MESSAGE
            assert box["element"]["initial_value"] == "{service} is {status}"
            # The user edits the template, then submits: their words are what is sent.
            edited = {
                **outage_values(groups=["stakeholders"], service="Checkout", status="degraded"),
                box["block_id"]: {
                    ActionId.OUTAGE_MESSAGE: {
                        "type": "plain_text_input",
                        "value": "{service} is {status}, {name}",
                    }
                },
            }
            edited.pop(BlockId.OUTAGE_MESSAGE)
            await submit_and_confirm(bot, {**updated, "id": "VFORM"}, edited, user="U0BOSS")

    run(go())
    assert sorted(r.params["Message"] for r in provider.sent()) == [
        "Checkout is degraded, Bo again",
        "Checkout is degraded, Cy",
    ]


def test_prefill_replaces_only_a_template_it_put_there():
    from bot.core.groups import parse_groups
    from bot.slack.listeners.outage import prefill
    from bot.slack.metadata import OutageFormMetadata, digest

    book = parse_groups(GROUPS)
    start = OutageFormMetadata(channel_id="C1", prefilled=digest("[{status}] {service}: {details}"))

    def values(groups, message):
        return outage_values(groups=groups, message=message)

    new, template = prefill(values(["stakeholders"], "[{status}] {service}: {details}"), start, book)
    assert (template, new.message_version, new.prefilled) == ("{service} is {status}", 1, digest(template))
    assert prefill(values(["stakeholders"], "Our own words"), start, book) is None  # never overwritten
    assert prefill(values([], "[{status}] {service}: {details}"), start, book) is None  # already there
    emptied = prefill(values(["payments"], ""), start, book)  # an emptied box is filled again
    assert emptied is not None and emptied[1] == "[{status}] {service}: {details}"


def test_an_out_of_date_form_is_answered_on_the_message_box_it_holds(provider, tmp_path):
    """Slack refuses `errors` naming a block the view does not have: after a prefill the message box
    has a versioned block_id, and the error must name that one."""

    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            blocks = [
                {**b, "block_id": f"{BlockId.OUTAGE_MESSAGE}-2"}
                if b.get("block_id") == BlockId.OUTAGE_MESSAGE
                else b
                for b in form["blocks"]
            ]
            stale = {**form, "blocks": blocks, "private_metadata": "not json"}
            return (await bot.submit_view(stale, outage_values(), user=ONCALL)).json()

    body = run(go())
    assert body["response_action"] == "errors"
    assert list(body["errors"]) == [f"{BlockId.OUTAGE_MESSAGE}-2"]
    assert provider.received == []


def test_extra_numbers_that_are_all_invalid_are_named_by_line_and_reason_under_their_box(provider, tmp_path):
    async def go():
        async with Bot(
            provider, tmp_path, ACCESS_OUTAGE=ONCALL, CONTACT_GROUPS_FILE=write_groups(tmp_path)
        ) as bot:
            form = await open_outage(bot)
            values = outage_values(
                extra="+852 123\n+86 138 0013 8000",
                service="Payments",
                status="investigating",
                details="down",
            )
            body = (await bot.submit_view(form, values, user=ONCALL)).json()
            return body, await bot.count("drafts")

    body, drafts = run(go())
    assert body["response_action"] == "errors", body
    text = body["errors"].get(BlockId.OUTAGE_EXTRA, body)
    assert "line 1 (+852 ****): Too short" in text, text
    assert "line 2 (+86 1380 ****)" in text and "Chinese mainland" in text, text
    assert drafts == 0
    assert provider.received == []
