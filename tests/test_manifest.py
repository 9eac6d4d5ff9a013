"""manifest.yaml against Slack's official app-manifest schema, vendored with its MIT licence in
tests/data/slack/ (manifest.schema.1.0.0.json, LICENSE.manifest-schema)."""

from pathlib import Path

import jsonschema
import yaml

from bot.slack.listeners.commands import COMMAND

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "tests" / "data" / "slack" / "manifest.schema.1.0.0.json"


def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yaml").read_text())


def test_manifest_matches_slacks_schema():
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


def test_the_usage_hint_names_every_subcommand():
    """Slack shows the hint as the user types `/sms`: a subcommand left out is a feature nobody finds."""
    from bot.slack.listeners.commands import SUBCOMMANDS

    (command,) = manifest()["features"]["slash_commands"]
    hint = command["usage_hint"]
    missing = [name for name in SUBCOMMANDS if f"| {name}" not in hint]
    assert not missing, hint
