"""`python -m bot`: load settings, configure logging, run. Wiring lives in bot/runtime.py."""

from __future__ import annotations

import asyncio
import sys

from bot import logs
from bot.config import load_settings
from bot.runtime import serve


def main() -> int:
    settings = load_settings()
    problem = settings.startup_problem()
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    logs.configure(
        settings.log_level,
        settings.log_format,
        secrets=[
            settings.slack_bot_token.get_secret_value(),
            settings.slack_signing_secret.get_secret_value(),
            settings.slack_app_token.get_secret_value(),
            settings.access_key_secret.get_secret_value(),
            settings.security_token.get_secret_value() if settings.security_token else "",
        ],
    )
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
