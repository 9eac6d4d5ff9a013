"""Alembic revisions of the bot's database (SQLite and PostgreSQL). Run through `bot.core.db`."""
