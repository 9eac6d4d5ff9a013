"""Logging: one line per event, text or JSON (LOG_FORMAT), with secrets and phone numbers redacted.

Code masks numbers itself (`PhoneNumber.masked`); the filter here is the safety net for anything else
that reaches a log line, e.g. a library echoing a payload: a run of 7 or more digits standing on its own
(optionally with +, spaces or dashes between them) is parsed as a phone number and masked the way the
code masks them (`+852 5123 ****`); digits inside a word, such as a job id, are left alone; configured
secrets and Slack tokens are replaced.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.handlers
import queue
import re
import time
from collections.abc import Iterable
from typing import IO

from bot.sms.phone import mask

SOCKET_LOGGER = "bot.slack.socket"  # the Socket Mode client's own logger (see bot/runtime.py)
# A digit run not glued to a letter, digit or underscore on either side: ids (hex, uuid) keep their digits.
_DIGIT_RUN = re.compile(r"(?<![\w+])\+?\d(?:[\s\-.()]{0,2}\d){6,}(?!\w)")
_TOKEN = re.compile(r"\bx(?:ox[abposr]|app)-[A-Za-z0-9-]+")


def _mask_run(match: re.Match[str]) -> str:
    return mask(match.group(0))


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        text = _TOKEN.sub("[token]", text)
        return _DIGIT_RUN.sub(_mask_run, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redact(message)
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            },
            ensure_ascii=False,
        )


MAX_QUEUED = 10_000  # log records waiting for the writing thread; more are dropped, and counted


class _Handoff(logging.handlers.QueueHandler):
    """Queues each record for the writing thread. When the queue is full (the log's reader has fallen
    far behind), a record is dropped rather than kept or waited for; the next record that fits is
    preceded by a line saying how many were dropped."""

    def __init__(self, records: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(records)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            if self.dropped:
                self.queue.put_nowait(self._dropped_line())
                self.dropped = 0
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def _dropped_line(self) -> logging.LogRecord:
        return logging.LogRecord(
            "bot.logs", logging.WARNING, __file__, 0,
            "%d log line(s) dropped: the log's reader did not keep up", (self.dropped,), None,
        )  # fmt: skip


class _Writer(logging.handlers.QueueListener):
    """The thread that writes the queued records. Stopping it waits at most STOP_WAIT seconds: a reader
    that never reads again must not keep the process from exiting."""

    def enqueue_sentinel(self) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put(self._sentinel, timeout=STOP_WAIT)

    def stop(self) -> None:
        thread = self._thread
        if thread is not None:
            self.enqueue_sentinel()
            thread.join(STOP_WAIT)
            self._thread = None


STOP_WAIT = 5.0
_listener: _Writer | None = None


def configure(
    level: str = "INFO",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
    max_queued: int = MAX_QUEUED,
) -> RedactingFilter:
    """Log to `stream` (standard error). The caller only merges each record's message with its arguments
    (stdlib's QueueHandler does, so that later changes to them do not show; an exception's traceback is
    rendered then too) and queues it; one thread redacts, formats and writes them, so a reader that falls
    behind (a full pipe to a log collector) never holds the event loop. At most `max_queued` records
    wait (see _Handoff); what is queued is written at exit (`stop`)."""
    global _listener
    handler = logging.StreamHandler(stream)
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    stop()
    records: queue.Queue[logging.LogRecord] = queue.Queue(max_queued)
    _listener = _Writer(records, handler)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [_Handoff(records)]
    root.setLevel(level)
    for noisy in ("slack_bolt", "slack_sdk", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Socket Mode connections opened, dropped, renewed: one line each. Never DEBUG (it logs payloads).
    logging.getLogger(SOCKET_LOGGER).setLevel(max(logging.INFO, root.level))
    return redactor


def stop() -> None:
    """Write what is queued and end the writing thread (at exit; `configure` starts another)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(stop)
