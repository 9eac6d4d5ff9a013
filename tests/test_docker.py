"""No Docker engine here: check the image uses the README's install and start commands, copies files
that exist, runs unprivileged, keeps data in a volume and checks /healthz."""

import re
from pathlib import Path

from .test_ci import readme_block

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_install_and_start_commands_match_the_readme():
    run = readme_block("Run the bot")
    install = re.search(r"pip install (-q \.)", run).group(1)
    start = re.search(r"python (-m bot)", run).group(1)
    assert f"/opt/venv/bin/pip install {install.replace('-q', '-q --no-cache-dir')}" in DOCKERFILE
    assert "python3 -m venv /opt/venv" in DOCKERFILE and "python3 -m venv" in run
    entry = re.search(r'ENTRYPOINT \["python", "(-m)", "(bot)"\]', DOCKERFILE)
    assert entry and " ".join(entry.groups()) == start


def test_every_copied_file_exists():
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source


def test_image_runs_as_non_root_with_a_data_volume_and_healthcheck():
    final = DOCKERFILE.split("FROM python:3.11-slim\n", 1)[1]
    assert "USER sms" in final and 'VOLUME ["/data"]' in final
    assert "DATABASE_PATH=/data/" in final and "/healthz" in final and "HEALTHCHECK" in final
    assert DOCKERFILE.count("FROM ") == 2  # multi-stage


def test_dockerignore_keeps_secrets_and_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", "data", ".git"} <= set(ignored)


def image_env() -> dict[str, str]:
    final = DOCKERFILE.split("FROM python:3.11-slim\n", 1)[1]
    block = final.split("ENV ", 1)[1].split("\nVOLUME", 1)[0]
    pairs = re.findall(r'([A-Z_]+)=("[^"]*"|\S+)', block)
    return {key: value.strip('"') for key, value in pairs}


def test_a_copy_of_env_example_keeps_the_images_storage_in_the_volume():
    """The README's Docker steps: `cp .env.example .env` then `docker run --env-file .env ...`. Whatever
    .env sets replaces the image's value, so each must agree with it or be harmless."""
    from tests.test_settings import env_example

    copied = env_example(commented=False)
    env = image_env()
    final = DOCKERFILE.split("FROM python:3.11-slim\n", 1)[1]
    workdir = re.search(r"^WORKDIR (\S+)$", final, re.M).group(1)
    volume = re.search(r'^VOLUME \["([^"]+)"\]$', final, re.M).group(1)
    assert workdir == volume  # a relative path from .env lands in the volume
    for name in ("DATABASE_PATH", "CONTACT_GROUPS_FILE"):
        assert env[name].startswith(volume + "/"), name
        assert copied.get(name, "").startswith((volume + "/", "")) and not copied.get(name, "").startswith(
            "/"
        ), name
    # Settings both set must agree; the one deliberate difference: the image logs JSON, a copied .env
    # that says text keeps text.
    differ = {k for k in env.keys() & copied.keys() if env[k] != copied[k]}
    assert differ <= {"LOG_FORMAT"}, differ
