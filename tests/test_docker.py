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
