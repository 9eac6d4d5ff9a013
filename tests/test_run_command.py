"""The README's run command for real: `python -m bot` in a subprocess, dry run, JSON logs, fake Slack."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from urllib.parse import urlencode

import httpx

from .conftest import LOOP, run
from .fake_slack import FakeSlack
from .harness import BOT_TOKEN, SIGNING_SECRET, sign

APP_TOKENLESS_SECRET = "dry-run-provider-secret-not-used"


def test_run_command_in_dry_run_mode_with_json_logs(tmp_path):
    async def go():
        slack = FakeSlack()
        await slack.start()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "EVENT_LOOP": LOOP,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.url + "/api/",
            "HOST": "127.0.0.1",
            "PORT": "0",
            "SMS_DRY_RUN": "true",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": APP_TOKENLESS_SECRET,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            lines: list[str] = []
            url = None
            while url is None:
                line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
                assert line, "the bot exited: " + "".join(lines)
                lines.append(line)
                message = json.loads(line)["msg"]
                if "HTTP mode at " in message:
                    url = message.split("HTTP mode at ", 1)[1].split("/slack/events")[0]
            async with httpx.AsyncClient(base_url=url) as http:
                health = (await http.get("/healthz")).json()
                assert 0 <= health.pop("loop_lag_ms") < 3000
                assert health.pop("receipts")["stored"] == 0
                assert health.pop("receipt_pushes") == {}  # none yet
                assert health == {
                    "ok": True,
                    "database": True,
                    "worker": True,
                    "slack": True,
                    "sender": True,
                    "dry_run": True,
                }
                for i, text in enumerate(
                    ["+852 5123 4567 Hello from the dry run", "+852 5123 0000 will fail"]
                ):
                    body = urlencode(
                        {
                            "command": "/sms",
                            "text": text,
                            "user_id": "U0AGENT",
                            "channel_id": "C0SUPPORT",
                            "team_id": "T0001",
                            "trigger_id": f"t{i}",
                            "response_url": slack.response_url(str(i)),
                        }
                    )
                    resp = await http.post(
                        "/slack/events",
                        content=body,
                        headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body)},
                    )
                    assert resp.status_code == 200 and "Sending to `+852 5123 ****`" in resp.text
                posts = await slack.wait_for("chat.postMessage", 4, limit=30)
                # The simulator pushes the receipt to the bot (1 s after acceptance): the outcome is edited.
                (edit,) = await slack.wait_for("chat.update", 1, limit=15)
                later = (await http.get("/healthz")).json()
                receipts = {**later["receipts"], "pushes": later["receipt_pushes"]["pushes"]}
            proc.send_signal(signal.SIGTERM)
            rest = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
            assert await proc.wait() == 0
        finally:  # a failed assertion must not leave the bot running
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await slack.stop()
        return posts, edit, receipts, lines + rest.splitlines(keepends=True)

    posts, edit, receipts, lines = run(go())
    assert "Delivered" in json.dumps(edit.params["blocks"]) and "Accepted" in json.dumps(
        edit.params["blocks"]
    )
    assert (receipts["stored"], receipts["matched"], receipts["pushes"]) == (1, 1, 1)
    threads = [json.dumps(p.params["blocks"], ensure_ascii=False) for p in posts if "thread_ts" in p.params]
    assert any("Accepted" in t and "Dry run" in t for t in threads)
    assert any("Not sent" in t and "Dry run" in t for t in threads)
    records = [json.loads(line) for line in lines if line.strip()]  # every line is one JSON object
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    requests = [r["msg"] for r in records if r["msg"].startswith("http POST /slack/events")]
    assert len(requests) == 2 and all("status=200" in m and " ms=" in m for m in requests)
    text = "".join(lines)
    for secret in (BOT_TOKEN, SIGNING_SECRET, APP_TOKENLESS_SECRET):
        assert secret not in text
    for piece in ("51234567", "5123 4567", "51230000"):
        assert piece not in text


def test_redaction_filter_masks_numbers_tokens_and_secrets():
    import logging

    from bot.logs import RedactingFilter

    f = RedactingFilter(["s3cr3t-value"])
    record = logging.LogRecord(
        "x",
        logging.INFO,
        __file__,
        1,
        "to %s, %s with %s and %s for job=%s",
        ("+852 5123 4567", "85251234567", "xoxb-123-456-abc", "s3cr3t-value", "e96881234567aaa40c5f6f0b6988"),
        None,
    )
    f.filter(record)
    # numbers masked as the code masks them (parsed, not by digit count); an id keeps all its digits
    assert record.getMessage() == (
        "to +852 5123 ****, +852 5123 **** with [token] and [secret] for job=e96881234567aaa40c5f6f0b6988"
    )


def test_the_loop_lag_probe_sees_a_held_event_loop_and_reports_it_once():
    import time

    from bot.runtime import LoopLag

    async def go():
        lag = LoopLag()
        lag.start()
        await asyncio.sleep(0.02)  # the probe's first timer is set
        lag.read()
        time.sleep(0.06)  # noqa: ASYNC251 - holding the loop is what is measured
        for _ in range(3):  # the late timer fires on the next turns of the loop
            await asyncio.sleep(0)
        held, after = lag.read(), lag.read()
        lag.stop()
        return held, after

    held, after = run(go())
    assert held >= 0.04, held
    assert after == 0.0


def test_a_log_line_is_written_by_a_thread_of_its_own_and_redacted_there():
    """The logging call only queues the record: a stream that blocks (a full pipe to a log collector)
    holds the writing thread, never the caller (the event loop). What is queued is written by `stop`."""
    import logging
    import threading

    from bot import logs

    class Stuck:
        def __init__(self) -> None:
            self.release = threading.Event()
            self.lines: list[tuple[int, str]] = []

        def write(self, text: str) -> None:
            self.release.wait(5)  # a reader that does not read (5 s: a synchronous write would return)
            self.lines.append((threading.get_ident(), text))

        def flush(self) -> None:
            pass

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = Stuck()
    try:
        logs.configure("INFO", "json", secrets=["s3cr3t-value"], stream=stream)  # type: ignore[arg-type]
        logging.getLogger("bot.test").info("to %s with %s", "+852 5123 4567", "s3cr3t-value")
        queued = list(stream.lines)  # nothing written yet: the stream is stuck
        stream.release.set()
        logs.stop()
    finally:
        logs.stop()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert queued == []
    ((writer, text),) = [line for line in stream.lines if line[1].strip()]
    assert writer != threading.get_ident()
    assert json.loads(text)["msg"] == "to +852 5123 **** with [secret]"


def test_log_lines_beyond_the_queue_are_dropped_and_counted_not_kept_or_waited_for():
    """A reader that stops reading: the writing thread holds one line, the queue `max_queued` more, and
    the rest are dropped (memory stays bounded, the caller never waits); the next line that fits is
    preceded by the count."""
    import logging
    import threading

    from bot import logs

    class Stuck:
        def __init__(self) -> None:
            self.writing = threading.Event()
            self.release = threading.Event()
            self.drained = threading.Event()  # lines 0-3 written: the queue is empty again
            self.lines: list[str] = []

        def write(self, text: str) -> None:
            self.writing.set()
            self.release.wait(5)
            self.lines.append(text)
            if len(self.lines) == 4:
                self.drained.set()

        def flush(self) -> None:
            pass

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = Stuck()
    log = logging.getLogger("bot.test")
    try:
        logs.configure("INFO", "json", stream=stream, max_queued=3)  # type: ignore[arg-type]
        log.info("line 0")
        assert stream.writing.wait(5)  # the thread holds line 0, stuck in its write
        for i in range(1, 7):
            log.info("line %d", i)  # 1-3 are queued, 4-6 dropped
        stream.release.set()
        assert stream.drained.wait(5)
        log.info("line 7")  # fits: the count goes first
        logs.stop()
    finally:
        logs.stop()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    written = [json.loads(text)["msg"] for text in stream.lines if text.strip()]
    assert written[:4] == ["line 0", "line 1", "line 2", "line 3"], written
    assert written[4:] == ["3 log line(s) dropped: the log's reader did not keep up", "line 7"], written
