"""Footprint of the bot: start-up to a healthy `/healthz`, and resident memory when idle.

Starts `python -m bot` for real (SQLite in a temporary directory, HTTP mode) against the fake Slack Web
API, from the spawn of the process to the first `/healthz` that answers `ok`, then reads the process's
resident set size after a second of idling. Targets: start-up ≤ 0.4 s, idle RSS ≤ 80 MiB. Two
configurations: as deployed (the fake provider in a process of its own, as the real one is remote) and
a dry run (the simulated provider inside the bot).

Each round also measures the **import floor**: a process that imports every module `python -m bot`
imports, except the bot's own, from its spawn to the end of those imports. That is what the libraries
the bot is built on cost by themselves on this machine; start-up is also given as a multiple of it.

`--baseline REV` measures another revision of this repository side by side (a temporary git worktree,
the same interpreter and packages), alternating `--rounds` times, first one side, then the other.

    .venv/bin/python -m bench.footprint
    .venv/bin/python -m bench.footprint --baseline 9426fd1 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bot.sms import loop
from bot.sms.simulator import ProviderProcess
from tests.fake_slack import FakeSlack
from tests.harness import BOT_TOKEN, SIGNING_SECRET

from .baseline import ROOT, worktree

STARTUP_TARGET, RSS_TARGET = 0.4, 80.0


def rss_mib(pid: int, peak: bool = False) -> float:
    """Resident memory of process `pid` now (or its peak since it started), in MiB."""
    field = "VmHWM:" if peak else "VmRSS:"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


async def measure(tree: Path, provider: str | None) -> tuple[float, float, float]:
    """Of `python -m bot` run from `tree`: seconds from spawn to a healthy /healthz on a new database (the
    schema is created), the same on that database again (a restart), and the idle RSS in MiB. With the
    provider at `provider`, or a dry run (None)."""
    with tempfile.TemporaryDirectory() as tmp:
        first, _ = await start(tree, tmp, provider)
        again, rss = await start(tree, tmp, provider)
    return first, again, rss


async def start(tree: Path, tmp: str, provider: str | None) -> tuple[float, float]:
    """One start of the bot with its database in `tmp`: (seconds to healthy, idle RSS in MiB)."""
    slack = FakeSlack()
    await slack.start()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": tmp,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_API_URL": slack.url + "/api/",
        "HOST": "127.0.0.1",
        "PORT": "0",
        **(
            {"SMS_DRY_RUN": "true"}
            if provider is None
            else {
                "SMS_ENDPOINT": provider,
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "testid",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "testsecret",
            }
        ),
        "DATABASE_PATH": str(Path(tmp) / "bot.sqlite3"),
        "LOG_LEVEL": "INFO",
    }
    t0 = time.perf_counter()
    # cwd=tree: `python -m bot` imports the bot package of that tree
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=tree, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            if not line:
                raise RuntimeError("the bot exited")
            if "HTTP mode at " in line:
                url = line.split("HTTP mode at ", 1)[1].split("/slack/events")[0]
        async with httpx.AsyncClient(base_url=url) as http:
            while not (await http.get("/healthz")).json().get("ok"):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.005)
            started = time.perf_counter() - t0
            await asyncio.sleep(1.0)
            rss = rss_mib(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        await proc.wait()
        await slack.stop()
    return started, rss


# Imports each module named on the command line (in the order given), then says so on stdout.
_FLOOR_SCRIPT = """
import importlib, sys
failed = 0
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        failed += 1
print(failed, flush=True)
"""


def library_modules(tree: Path) -> list[str]:
    """Every module that importing `python -m bot`'s entry point and starting its event loop load, except
    the bot's own: in the order they were loaded (a package before its modules)."""
    script = (
        "import asyncio, sys, bot.__main__; from bot.sms import loop; loop.run(asyncio.sleep(0)); "
        "print('\\n'.join(m for m in sys.modules if m != 'bot' and not m.startswith(('bot.', '__main__'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tree, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


async def import_floor(modules: list[str]) -> float:
    """Seconds from the spawn of a process to the end of its importing `modules`."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _FLOOR_SCRIPT, *modules, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    failed = int((await proc.stdout.readline()).decode() or "-1")
    took = time.perf_counter() - t0
    await proc.wait()
    if failed:
        raise RuntimeError(f"the import floor could not import {failed} module(s)")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", help="a git revision to measure side by side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        trees = {"this tree": ROOT}
        if args.baseline:
            trees = {f"baseline {args.baseline}": stack.enter_context(worktree(args.baseline)), **trees}
        provider = ProviderProcess()
        stack.callback(provider.close)
        modes = {"as deployed": provider.url, "dry run": None}
        results: dict[tuple[str, str], list[tuple[float, float, float]]] = {
            (name, mode): [] for name in trees for mode in modes
        }
        modules = library_modules(ROOT)
        floors: list[float] = []
        for k in range(args.rounds):
            floors.append(loop.run(import_floor(modules)))
            # Which tree goes first alternates from round to round, so neither always runs second.
            for name, tree in list(trees.items()) if k % 2 == 0 else list(trees.items())[::-1]:
                for mode, url in modes.items():
                    results[name, mode].append(loop.run(measure(tree, url)))

        def spread(values: list[float], unit: str, digits: int) -> str:
            return f"{min(values):.{digits}f}-{max(values):.{digits}f} {unit} (median {statistics.median(values):.{digits}f})"

        floor = statistics.median(floors)
        print(
            f"import floor ({len(modules)} modules of the libraries this tree's bot imports, none of its "
            f"own): {spread(floors, 's', 2)}"
        )
        for (name, mode), runs in results.items():
            restarts = [a for _, a, _ in runs]
            print(
                f"{name}, {mode}: start-up to healthy: restart {spread(restarts, 's', 2)}, "
                f"{statistics.median(restarts) / floor:.2f}x the import floor; "
                f"new database {spread([f for f, _, _ in runs], 's', 2)} (target {STARTUP_TARGET} s); "
                f"idle RSS {spread([r for _, _, r in runs], 'MiB', 0)} (target {RSS_TARGET:.0f} MiB)"
            )


if __name__ == "__main__":
    main()
