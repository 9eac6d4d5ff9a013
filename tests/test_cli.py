import io
import json

from bot.sms.cli import EXIT_FAILED, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE
from bot.sms.cli import run as cli
from bot.sms.simulator import Fault

from .conftest import run, settings_for


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def call(argv, settings):
    out, err = io.StringIO(), io.StringIO()
    code = run(cli(argv, out, err, settings=settings))
    return code, out.getvalue(), err.getvalue()


def test_send_to_numbers_json(provider, sms_settings):
    code, out, _ = call(
        ["--json", "send", "-m", "hi", "--to", "+852 5123 4567", "+65 8123 4567"], sms_settings
    )
    assert code == EXIT_OK
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["to"] for r in rows] == ["85251234567", "6581234567"]
    assert {r["status"] for r in rows} == {"accepted"} and all(r["message_id"] for r in rows)
    assert set(rows[0]) >= {"to", "status", "message_id", "error"}


def test_batch_from_csv_with_placeholders(provider, sms_settings, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("number,name\n+852 5123 4567,Ana\n+65 8123 4567,Bo\n")
    code, out, _ = call(["batch", "-m", "Hi {name}", "--file", str(path), "--type", "MKT"], sms_settings)
    assert code == EXIT_OK
    assert "2 accepted, 0 failed, 0 unknown" in out
    (req,) = provider.sent("BatchSendMessageToGlobe")
    assert json.loads(req.params["Message"]) == ["Hi Ana", "Hi Bo"]
    assert req.params["Type"] == "MKT"


def test_plain_number_file(provider, sms_settings, tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_text("+852 5123 4567\n\n# comment\n+65 8123 4567\n+852 5123 4567\n")
    code, out, _ = call(["--json", "send", "-m", "hi", "--file", str(path)], sms_settings)
    assert code == EXIT_OK and len(out.splitlines()) == 2  # duplicate dropped


def test_some_failed_exit_1(provider, sms_settings):
    provider.reset(reject_numbers=["6581234567"])
    code, out, _ = call(["send", "-m", "hi", "--to", "+852 5123 4567", "+65 8123 4567"], sms_settings)
    assert code == EXIT_FAILED
    assert "1 accepted, 1 failed, 0 unknown" in out


def test_unknown_exit_3(provider):
    from .conftest import settings_for

    provider.inject(Fault("internal"))
    code, out, _ = call(["--json", "send", "-m", "hi", "--to", "+852 5123 4567"], settings_for(provider))
    assert code == EXIT_UNKNOWN
    assert json.loads(out)["status"] == "unknown"


def test_bad_input_exit_2_sends_nothing(provider, sms_settings, tmp_path):
    cases = [
        ["send", "-m", "hi", "--to", "+86 138 0013 8000"],
        ["send", "-m", "", "--to", "+852 5123 4567"],
        ["send", "-m", "hi", "--to", "+852 5123 4567", "--from", "bad-id"],
        ["batch", "-m", "Hi {nam}", "--file", str(tmp_path / "missing.csv")],
        ["batch", "-m", "hi", "--file", str(tmp_path / "l.csv"), "--validity", "0"],
        ["send", "-m", "hi"],
        ["bogus"],
    ]
    (tmp_path / "l.csv").write_text("+852 5123 4567\n")
    for argv in cases:
        code, _, err = call(argv, sms_settings)
        assert code == EXIT_USAGE, argv
        assert err.startswith("error: "), argv
    assert provider.received == []


def test_bad_line_in_file_names_it(provider, sms_settings, tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("number,name\n+852 5123 4567,Ana\n+852 123,Bo\n")
    code, _, err = call(["batch", "-m", "Hi {name}", "--file", str(path)], sms_settings)
    assert code == EXIT_USAGE and "line 3" in err and "Too short" in err
    assert provider.received == []


def test_missing_credentials_exit_2(provider):
    from bot.sms import SmsSettings

    code, _, err = call(["send", "-m", "hi", "--to", "+852 5123 4567"], SmsSettings(_env_file=None))
    assert code == EXIT_USAGE and "ALIBABA_CLOUD_ACCESS_KEY_ID" in err


def test_query(provider, sms_settings):
    code, out, _ = call(["--json", "send", "-m", "hi", "--to", "+852 5123 4567"], sms_settings)
    message_id = json.loads(out)["message_id"]
    code, out, _ = call(["--json", "query", message_id], sms_settings)
    answer = json.loads(out)
    assert code == EXIT_OK and answer["status"] == "sent" and answer["delivery"] == "delivered"
    provider.reset(undelivered_suffixes=["4568"])
    code, out, _ = call(["--json", "send", "-m", "hi", "--to", "+852 5123 4568"], sms_settings)
    code, out, _ = call(["query", json.loads(out)["message_id"]], sms_settings)
    assert code == EXIT_OK and "+852 5123 ****  the carrier could not deliver it (UNDELIV)" in out


def test_no_command_lists_the_commands_and_exits_2():
    from bot.sms import SmsSettings

    code, out, err = call([], SmsSettings(_env_file=None))
    assert code == EXIT_USAGE and out == ""
    assert all(name in err for name in ("send", "batch", "query", "--dry-run")), err
    assert "choose a command" in err


def test_unquoted_numbers_with_spaces_are_read_whole(provider, sms_settings):
    argv = ["--json", "send", "-m", "hi", "--to", "+852", "5123", "4567", "+65", "8123", "4567"]
    code, out, err = call(argv, sms_settings)
    assert code == EXIT_OK, err
    assert [json.loads(line)["to"] for line in out.splitlines()] == ["85251234567", "6581234567"]


def test_batch_says_what_an_accepted_line_is_and_counts_repeated_numbers(provider, sms_settings, tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("number\n+852 5123 4567\n+85251234567\n+65 8123 4567\n")
    code, out, err = call(["batch", "-m", "hi", "--file", str(path)], sms_settings)
    assert code == EXIT_OK
    lines = [line for line in out.splitlines() if "accepted " in line and "unknown" not in line]
    assert len(lines) == 2 and all(line.split("accepted", 1)[1].strip() for line in lines), out
    assert "1 repeated number(s)" in err
    (req,) = provider.sent("BatchSendMessageToGlobe")
    assert len(json.loads(req.params["To"])) == 2


def test_dry_run_needs_no_account_and_shows_each_outcome(provider):
    from bot.sms import SmsSettings

    argv = ["send", "-m", "hi", "--to", "+852 5123 4567", "+852 5123 0000", "+852 5123 0001"]
    for how, settings in (
        (["--dry-run"], SmsSettings(_env_file=None)),
        ([], SmsSettings(_env_file=None, SMS_DRY_RUN="true")),
    ):
        code, out, err = call(how + argv, settings)
        assert code == EXIT_UNKNOWN, err
        assert "1 accepted, 1 failed, 1 unknown" in out
        assert "dry run" in err
    assert provider.received == []  # the simulator is in-process; the test provider saw nothing


def test_receipts_from_the_queue_are_printed_then_deleted(provider):
    provider.reset(queue_name="sms-report", undelivered_suffixes=["4568"])
    settings = settings_for(
        provider,
        RECEIPTS_QUEUE="sms-report",
        RECEIPTS_QUEUE_ENDPOINT=provider.url,
        RECEIPTS_TOKEN_ENDPOINT=provider.url,
    )
    code, _, _ = call(["send", "-m", "hi", "--to", "+852 5123 4567", "+852 5123 4568"], settings)
    assert code == EXIT_OK
    code, out, err = call(["receipts", "--count", "2"], settings)
    assert code == EXIT_OK, err
    got = sorted((r["to"], r["delivery"], r["words"]) for r in map(json.loads, out.splitlines()))
    assert got == [
        ("85251234567", "delivered", "delivered"),
        ("85251234568", "undelivered", "the carrier could not deliver it (UNDELIV)"),
    ]
    assert provider.counts["queue_deleted"] == 2


def test_receipts_pushed_to_the_command_are_printed_and_answered(sms_settings):
    import asyncio

    import httpx

    class Err(io.StringIO):
        def __init__(self):
            super().__init__()
            self.listening = asyncio.Event()

        def write(self, text):
            if "listening on " in text:
                self.url = text.split("listening on ", 1)[1].split()[0].replace("0.0.0.0", "127.0.0.1")  # noqa: S104
                self.listening.set()
            return super().write(text)

    async def go():
        out, err = io.StringIO(), Err()
        command = asyncio.create_task(
            cli(["receipts", "--listen", "0", "--count", "1"], out, err, settings=sms_settings)
        )
        await asyncio.wait_for(err.listening.wait(), 10)
        push = [{"To": "6581234567", "Status": "6", "MessageId": "m9", "TaskId": "t"}]
        async with httpx.AsyncClient() as http:
            answer = await http.post(err.url + "receipts/anything", json=push)
        return await command, answer, out.getvalue()

    code, answer, out = run(go())
    assert code == EXIT_OK and answer.json() == {"code": 0, "msg": "ok"}
    assert json.loads(out)["delivery"] == "expired" and json.loads(out)["message_id"] == "m9"


def test_at_waits_until_its_time_and_refuses_a_past_or_unreadable_one(provider, sms_settings):
    import time
    from datetime import datetime

    from bot.sms.cli import parse_at

    now = time.time()
    soon = datetime.fromtimestamp(now + 0.4).astimezone().isoformat()
    code, out, err = call(["send", "-m", "hi", "--to", "+852 5123 4567", "--at", soon], sms_settings)
    (req,) = provider.sent()
    assert code == EXIT_OK and "1 accepted" in out
    assert "waiting until" in err and "Ctrl-C: nothing is sent" in err
    assert req.at >= time.monotonic() - (time.time() - (now + 0.4)) - 0.05  # not before its time
    for when, reason in [("2020-01-01T00:00+00:00", "has passed"), ("tomorrow", "is not a time like")]:
        code, _, err = call(["send", "-m", "hi", "--to", "+852 5123 4567", "--at", when], sms_settings)
        assert code == EXIT_USAGE and reason in err
    assert len(provider.sent()) == 1  # nothing more was sent
    assert (
        parse_at("2026-11-25T09:00+08:00", now=datetime(2026, 11, 24).timestamp())
        == datetime.fromisoformat("2026-11-25T01:00+00:00").timestamp()
    )


def test_the_command_line_freezes_its_start_up_heap_and_a_library_caller_keeps_its_own():
    """`python -m bot.sms` moves what it loaded out of the collector's reach before it sends (a full
    collection in the middle of 2,000 sends walked it for 15-22 ms); `run`, the library entry, leaves the
    caller's collector alone."""
    import gc
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import gc, sys; from bot.sms.cli import main, run; import asyncio, io; "
        "asyncio.run(run([], io.StringIO(), io.StringIO())); before = gc.get_freeze_count(); "
        "code = main([]); print(before, gc.get_freeze_count(), code)"
    )
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    before, after, code = (int(x) for x in done.stdout.split())
    assert before == 0 and after > 10_000 and code == EXIT_USAGE, done.stdout
    assert gc.get_freeze_count() == 0  # this process (the suite's) never froze its heap
