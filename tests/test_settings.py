"""Settings: `.env.example` and the README list exactly what the code reads; bad values name the setting."""

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def code_settings() -> set[str]:
    return {f.alias for f in Settings.model_fields.values() if f.alias}


def test_env_example_lists_exactly_the_settings_the_code_reads():
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert names == code_settings()


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in sorted(code_settings()) if f"| `{name}` |" not in readme]
    assert not missing


def test_env_example_defaults_parse():
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    settings = Settings(_env_file=None, **values)
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
