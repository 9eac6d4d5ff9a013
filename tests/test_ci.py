"""The README's commands are the ones CI and the image run (kept true as the project changes)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"### {title}", 1)[1]
    return section.split("```bash", 1)[1].split("```", 1)[0].strip()


def test_ci_runs_the_readme_test_command_verbatim():
    command = readme_block("Run the tests")
    assert "pytest" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_ci_fails_when_no_test_ran():
    script = (ROOT / ".ci" / "run").read_text()
    assert '"$status" -eq 5' in script and "ruff check" in script and "ruff format --check" in script
