"""manifest.yaml against Slack's official app-manifest schema (shared/slack/manifest.schema.1.0.0.json)."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from bot.slack.listeners.commands import COMMAND

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT.parent / "shared" / "slack" / "manifest.schema.1.0.0.json"


def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yaml").read_text())


def test_manifest_matches_slacks_schema():
    if not SCHEMA.exists():
        pytest.skip(f"Slack's manifest schema is not beside the repository ({SCHEMA} is absent)")
    import json

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(manifest()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_manifest_declares_what_the_code_uses():
    m = manifest()
    assert [c["command"] for c in m["features"]["slash_commands"]] == [COMMAND]
    scopes = set(m["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "chat:write.public", "usergroups:read"} <= scopes
    assert m["settings"]["interactivity"]["is_enabled"] is True
    assert m["settings"]["socket_mode_enabled"] is True


def test_readme_explains_every_scope():
    readme = (ROOT / "README.md").read_text()
    for scope in manifest()["oauth_config"]["scopes"]["bot"]:
        assert f"`{scope}`" in readme, scope
