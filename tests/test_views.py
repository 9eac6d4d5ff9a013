"""Unit tests of the Slack layer's text helpers, and of the fake Slack's check that uses them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.store import Job, JobKind, JobState, RecipientRow, RecipientState, Summary
from bot.slack import bulk_views
from bot.slack.views import code, code_masks, codes, counted
from bot.sms.phone import mask, mask_digits, parse_number

from .fake_slack import bare_masks


@pytest.mark.parametrize(
    ("prose", "shown"),
    [
        ("+852 5123 **** is opted out.", "`+852 5123 ****` is opted out."),
        ("line 1: “+852 ****”: Too short", "line 1: `+852 ****`: Too short"),
        ("“+852 ****, or “+65 8100 ****”", "“`+852 ****`, or `+65 8100 ****`"),
        ("a, +65 8100 ****, +1 4155 ****.", "a, `+65 8100 ****`, `+1 4155 ****`."),
        ("already `+852 5123 ****` here", "already `+852 5123 ****` here"),
        ("*bold* and 3 * 4 = 12", "*bold* and 3 * 4 = 12"),
    ],
)
def test_code_masks_puts_each_masked_number_in_code_once(prose, shown):
    assert code_masks(prose) == shown


@given(st.integers(1, 999), st.text("0123456789", min_size=1, max_size=14))
def test_every_mask_the_bot_makes_comes_out_of_code_masks_in_code(country, national):
    masked = mask_digits(country, national)
    out = code_masks(f"*Sent* to {masked}: ok; “{masked}”")
    assert out.count(code(masked)) == 2
    assert not bare_masks({"text": out})


def test_codes_lists_at_most_the_limit():
    numbers = [mask(f"+6581000{i:03d}") for i in range(30)]
    assert codes(numbers, 3) == "`+65 8100 ****`, `+65 8100 ****`, `+65 8100 ****`"
    assert codes(iter(numbers)).count("`+65 8100 ****`") == 20


def test_the_fake_slacks_check_finds_masks_slack_could_read_as_bold():
    bold = "📱 texted *+852 5123 ***** (Hong Kong)"
    assert bare_masks({"text": "Sending to +852 5123 ****."}) == ["Sending to +852 5123 ****."]
    assert bare_masks({"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": bold}}]}) == [bold]
    assert bare_masks(
        {"view": {"blocks": [{"type": "context", "elements": [{"type": "mrkdwn", "text": bold}]}]}}
    )
    # In code, in plain text, or in a notification's fallback beside blocks: nothing to read as bold.
    assert not bare_masks({"text": "Sending to `+852 5123 ****`."})
    assert not bare_masks({"blocks": [{"type": "header", "text": {"type": "plain_text", "text": bold}}]})
    assert not bare_masks({"text": bold, "blocks": []})


def _job(total: int, **meta) -> Job:
    return Job("j1", JobKind.BATCH, JobState.DONE, "U0LEAD", "C0SUPPORT", None, None, "NOTIFY", "task-1", None,
               total, meta, 0.0, 0.0, 1.0)  # fmt: skip


def _row(idx: int, state: RecipientState, code_: str | None = None, error: str | None = None) -> RecipientRow:
    return RecipientRow("j1", idx, parse_number(f"+65 8100 {idx:04d}"), "Hi", state, None, None, code_, error,
                        None, None, None, False, 0.0)  # fmt: skip


def _text(blocks) -> str:
    return "\n".join(json.dumps(b.to_dict(), ensure_ascii=False) for b in blocks)


def test_a_bulk_summary_counts_in_words_and_says_nothing_of_segments_no_answer_reported():
    failed = _row(3, RecipientState.FAILED, "FAILED_LIST", "The provider did not accept this number.")
    summary = Summary(total=4, accepted=3, failed=1, unknown=0, pending=0, segments=0)
    text = _text(bulk_views.summary_blocks(_job(4, refused=1, duplicates=1), summary, [failed]))
    assert "3 accepted, 1 failed" in text and "segments billed" not in text
    assert "1 invalid number refused, 1 duplicate removed." in text
    assert "• 1 × The provider did not accept this number: `+65 8100 ****`" in text
    summary = Summary(total=4, accepted=3, failed=1, unknown=0, pending=0, segments=6)
    text = _text(bulk_views.summary_blocks(_job(4, refused=2, duplicates=3), summary, [failed]))
    assert "3 accepted (6 segments billed where reported)" in text
    summary = Summary(total=1, accepted=1, failed=0, unknown=0, pending=0, segments=1)
    assert "1 accepted (1 segment billed where reported)" in _text(
        bulk_views.summary_blocks(_job(1), summary, [])
    )
    assert "2 invalid numbers refused, 3 duplicates removed." in text


def test_a_bulk_progress_line_says_sms_not_smss():
    summary = Summary(total=4, accepted=4, failed=0, unknown=0, pending=0, segments=0)
    text = _text(bulk_views.progress_blocks(_job(4), summary, done=True))
    assert "<@U0LEAD> sent *4 SMS* (notification)" in text and "SMSs" not in text


def test_the_scheduled_list_says_sms_not_smss():
    job = _job(4)
    job.run_at = 2_000_000_000.0
    text = _text(bulk_views.scheduled_blocks([job], everyone=True))
    assert "<@U0LEAD> · 4 SMS (notification)" in text and "SMSs" not in text


def test_counted_agrees_with_its_number():
    assert counted(1, "member") == "1 member" and counted(0, "member") == "0 members"
    assert counted(2500, "recipient") == "2,500 recipients"
