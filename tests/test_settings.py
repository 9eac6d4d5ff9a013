"""Settings: `.env.example` and the README list exactly what the code reads; bad values name the setting."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def code_settings() -> set[str]:
    return {f.alias for f in Settings.model_fields.values() if f.alias}


def env_example(*, commented: bool) -> dict[str, str]:
    """NAME=value lines of .env.example; with `commented`, also `# NAME=value` (a setting shown with its
    default but left unset, see DATABASE_PATH there)."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if commented and re.fullmatch(r"# [A-Z][A-Z0-9_]*=\S*", line):
            line = line[2:]
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_env_example_lists_exactly_the_settings_the_code_reads():
    assert set(env_example(commented=True)) == code_settings()


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in sorted(code_settings()) if f"| `{name}` |" not in readme]
    assert not missing


def test_env_example_defaults_parse():
    settings = Settings(_env_file=None, **env_example(commented=True))
    assert settings.port == 3000 and settings.single_rate == 2000 and settings.endpoint.startswith("https://")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SMS_ENDPOINT": "dysmsapi.ap-southeast-1.aliyuncs.com"},
            "setting SMS_ENDPOINT: must be a full URL",
        ),
        ({"ACCESS_BULK": "bob"}, "setting ACCESS_BULK: “bob” is not a Slack user"),
        ({"PORT": "http"}, "setting PORT:"),
        ({"SMS_DEFAULT_REGION": "XX"}, "setting SMS_DEFAULT_REGION:"),
        ({"SMS_SENDER_ID": "has space"}, "setting SMS_SENDER_ID:"),
        ({"LOG_FORMAT": "xml"}, "setting LOG_FORMAT: must be text or json"),
    ],
)
def test_malformed_setting_stops_with_one_line_naming_it(monkeypatch, env, expected):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as info:
        load_settings()
    assert str(info.value).startswith("error: " + expected)
    assert "\n" not in str(info.value)


def run_bot(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m bot` with only the given settings (no .env: the working directory is empty)."""
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_command_without_settings_names_the_first_missing_one(tmp_path):
    proc = run_bot(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: SLACK_BOT_TOKEN is not set: the bot token (xoxb-…) from the Slack app's OAuth & Permissions page."
    ]


def test_missing_provider_credentials_suggest_dry_run(tmp_path):
    proc = run_bot(tmp_path, SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1")
    assert proc.returncode == 2
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID is not set" in proc.stderr and "SMS_DRY_RUN=true" in proc.stderr


def test_a_receipt_queue_without_its_endpoint_stops_with_one_line(tmp_path):
    proc = run_bot(tmp_path, SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1", RECEIPTS_QUEUE="sms-report")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: RECEIPTS_QUEUE_ENDPOINT is not set")


@pytest.mark.parametrize("where", ["parent-is-a-file", "path-is-a-folder", "in-memory"])
def test_a_database_path_that_cannot_be_used_stops_with_one_line_naming_it(tmp_path, where):
    """In Docker an unwritable DATABASE_PATH once ended in a 27-line traceback. (The tests run as root,
    for whom permissions do not apply: these two paths fail for anyone.) An in-memory database would keep
    nothing across a restart, and ended in a traceback too."""
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-folder").mkdir()
    path = {
        "parent-is-a-file": tmp_path / "a-file" / "db.sqlite3",
        "path-is-a-folder": tmp_path / "a-folder",
        "in-memory": ":memory:",
    }[where]
    proc = run_bot(
        tmp_path,
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_APP_TOKEN="xapp-1",
        SMS_DRY_RUN="true",
        DATABASE_PATH=str(path),
        SLACK_API_URL="http://127.0.0.1:9/api/",  # never reached: the database comes first
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("error: DATABASE_PATH"), proc.stderr
