"""`python -m bot`: load settings, configure logging, run. Wiring lives in bot/runtime.py.

`python -m bot db upgrade` brings the database schema to this version's head (the bot also does it at
start unless DATABASE_AUTO_UPGRADE=false); `python -m bot db current` prints the revision it is at.
"""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError

from bot import logs
from bot.config import Settings, load_settings
from bot.core import db
from bot.runtime import serve
from bot.sms import loop


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings()
    if args[:1] == ["db"]:
        return database_command(settings, args[1:])
    if args:
        print("usage: python -m bot [db upgrade | db current]", file=sys.stderr)
        return 2
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
            settings.receipts_token.get_secret_value(),  # the push endpoint's path is its only lock
        ],
    )
    loop.run(serve(settings), settings.event_loop)
    return 0


def database_command(settings: Settings, args: list[str]) -> int:
    if args not in (["upgrade"], ["current"]):
        print("usage: python -m bot db upgrade | db current", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format, secrets=[])

    async def go() -> str:
        engine = db.create_engine(settings.sqlalchemy_url())
        try:
            if args == ["upgrade"]:
                before, after = await db.upgrade(engine)
                return (
                    f"schema {before or 'unversioned'} → {after}"
                    if before != after
                    else f"schema {after}: up to date"
                )
            rev = await db.current(engine)
            state = "up to date" if rev == db.head() else f"this version needs {db.head()}"
            return f"schema {rev or 'unversioned'} ({state})"
        finally:
            await db.dispose(engine)

    try:
        print(loop.run(go(), settings.event_loop))
    except (db.DatabaseError, OSError, SQLAlchemyError) as exc:
        reason = getattr(exc, "orig", None) or exc
        print(f"error: {db.describe(settings.sqlalchemy_url())}: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
