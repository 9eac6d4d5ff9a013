"""Logging: one line per event, text or JSON (LOG_FORMAT), with secrets and phone numbers redacted.

Code masks numbers itself (`PhoneNumber.masked`); the filter here is the safety net for anything else
that reaches a log line, e.g. a library echoing a payload: a run of 7 or more digits standing on its own
(optionally with +, spaces or dashes between them) is parsed as a phone number and masked the way the
code masks them (`+852 5123 ****`); digits inside a word, such as a job id, are left alone; configured
secrets and Slack tokens are replaced.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable

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


def configure(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> RedactingFilter:
    handler = logging.StreamHandler()
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("slack_bolt", "slack_sdk", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Socket Mode connections opened, dropped, renewed: one line each. Never DEBUG (it logs payloads).
    logging.getLogger(SOCKET_LOGGER).setLevel(max(logging.INFO, root.level))
    return redactor
