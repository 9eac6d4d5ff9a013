"""Another revision of this repository beside the working tree, for side-by-side measurements."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A temporary git worktree of `rev`, removed afterwards."""
    git = shutil.which("git") or "git"
    with tempfile.TemporaryDirectory(prefix="sms-ops-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            [git, "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                [git, "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
                capture_output=True,
            )
