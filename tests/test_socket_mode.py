"""Socket Mode, the manifest's default, through a peer that speaks Slack's protocol over loopback
(tests/fake_slack.py: `apps.connections.open`, one WebSocket per connection, envelopes, acks,
`disconnect`): the real bot process, one replica on SQLite and two on PostgreSQL."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import httpx

from .conftest import open_store, run
from .fake_slack import FakeSlack
from .processes import BotProcess, reap, until, wait_done
from .test_bulk import LEAD, bulk_values, csv_list, review
from .test_replicas import Replica, typed

APP_TOKEN = "xapp-1-A0001-test"


class SocketReplica(Replica):
    """The harness's requests (commands, views, clicks) delivered as Socket Mode envelopes on one
    connection of the fake Slack; the ack's payload comes back as the response."""

    def __init__(self, process: BotProcess, slack: FakeSlack, socket: int) -> None:
        super().__init__(process, slack)
        self.socket = socket
        self.envelope_id: str | None = None  # set to redeliver an envelope

    async def post(self, body: str, headers: dict[str, str] | None = None) -> httpx.Response:
        fields = dict(parse_qsl(body))
        if "payload" in fields:
            kind, payload = "interactive", json.loads(fields["payload"])
        else:
            kind, payload = "slash_commands", fields
        ack = await self.slack.envelope(kind, payload, socket=self.socket, envelope_id=self.envelope_id)
        return httpx.Response(200, json=ack) if ack else httpx.Response(200)


async def start(slack: FakeSlack, provider: Any, database: str, tmp_path, count: int, **env: str):
    procs = []
    for k in range(count):
        procs.append(
            await BotProcess(
                database=database,
                provider_url=provider.url,
                slack_url=slack.url,
                cwd=tmp_path,
                SLACK_APP_TOKEN=APP_TOKEN,
                **env,
            ).start()
        )
        await slack.wait_sockets(k + 1)  # connection k is this process's
    return procs


async def finish(database: str) -> None:
    """Until every job in the database is done."""
    store = await open_store(database)
    for job in await store.unfinished_jobs():
        await wait_done(store, job.id)
    await store.close()


@contextlib.asynccontextmanager
async def one_bot(provider: Any, tmp_path, **env: str) -> AsyncIterator[tuple[FakeSlack, SocketReplica]]:
    """One bot process in Socket Mode on SQLite, connected to a fresh fake Slack. On the way out every
    job is finished and everything stopped (killed if the test failed)."""
    database = f"sqlite:///{tmp_path}/bot.sqlite3"
    slack = FakeSlack()
    await slack.start()
    try:
        (proc,) = await start(slack, provider, database, tmp_path, 1, **env)
        bot = SocketReplica(proc, slack, 0)
        yield slack, bot
        await finish(database)
        await proc.stop()
        await bot.http.aclose()
        assert not slack.bare_masks, slack.bare_masks  # masked numbers in code, as through the harness
    finally:
        await reap()
        await slack.stop()


def test_socket_mode_sends_once_per_command_even_when_an_envelope_comes_twice(
    provider, tmp_path, bot_processes
):
    async def go():
        async with one_bot(provider, tmp_path) as (_, bot):
            first = await bot.command("+852 5123 4567 Your parcel ships today", trigger="T-once")
            assert "Sending to `+852 5123 ****`" in first.json()["text"]
            bot.envelope_id = "env-redelivered"  # Slack redelivers: same envelope, same trigger id
            again = [
                await bot.command("+852 5123 4567 Your parcel ships today", trigger="T-once") for _ in "ab"
            ]
            assert all("Already on its way" in r.json()["text"] for r in again)

    run(go())
    assert [r.params["To"] for r in provider.sent("SendMessageToGlobe")] == ["85251234567"]


def test_socket_mode_reconnects_when_slack_asks_and_when_the_connection_drops(
    provider, tmp_path, bot_processes
):
    async def go():
        async with one_bot(provider, tmp_path) as (slack, bot):
            opened = slack.socket_opens
            await slack.disconnect_sockets("refresh_requested")
            await slack.wait_for("apps.connections.open", len(slack.called("apps.connections.open")) + 1)
            await slack.wait_sockets(1)
            assert slack.socket_opens > opened
            resp = await bot.command("+852 5123 4567 after a refresh", trigger="T-refresh")
            assert "Sending to" in resp.json()["text"]
            await slack.drop_sockets()
            await slack.wait_for("apps.connections.open", len(slack.called("apps.connections.open")) + 1)
            await slack.wait_sockets(1)
            resp = await bot.command("+852 5123 4568 after a drop", trigger="T-drop")
            assert "Sending to" in resp.json()["text"]

    run(go())
    assert sorted(r.params["To"] for r in provider.sent("SendMessageToGlobe")) == [
        "85251234567",
        "85251234568",
    ]


def test_two_socket_mode_replicas_share_commands_and_a_bulk_confirmed_on_the_other(
    provider, pg_server, pg_template, tmp_path, bot_processes
):
    """Slack spreads envelopes over an app's connections (up to 10): each replica holds one. Commands
    land on either; a bulk form checked on one replica is confirmed on the other; each number once."""
    database = pg_server.create_database(pg_template)
    bulk = 1500

    async def go():
        slack = FakeSlack()
        await slack.start()
        try:
            procs = await start(slack, provider, database, tmp_path, 2, ACCESS_BULK=LEAD)
            replicas = [SocketReplica(p, slack, k) for k, p in enumerate(procs)]
            for i in range(10):
                resp = await replicas[i % 2].command(
                    f"+852 5123 {4500 + i} Outage update {i}", trigger=f"T{i}"
                )
                assert "Sending to" in resp.json()["text"], resp.json()
            file = slack.add_file("customers.csv", csv_list(bulk))
            view = await review(replicas[0], bulk_values(file=file, message="Hi {name}, your order shipped."))
            resp = await replicas[1].submit_view(view, typed(bulk), user=LEAD, view_id="VBULK")
            assert resp.json() == {"response_action": "clear"}
            await finish(database)
            for p in procs:
                await p.stop()
            for r in replicas:
                await r.http.aclose()
        finally:
            await reap()
            await slack.stop()

    run(go())
    counts, received = provider.snapshot()
    singles = Counter(r.params["To"] for r in received if r.action == "SendMessageToGlobe")
    batched = Counter(
        n for r in received if r.action == "BatchSendMessageToGlobe" for n in json.loads(r.params["To"])
    )
    assert sorted(singles) == [f"8525123{4500 + i}" for i in range(10)] and set(singles.values()) == {1}
    assert len(batched) == bulk and set(batched.values()) == {1}
    assert counts["throttled"] == 0


def test_healthz_says_unhealthy_while_the_socket_mode_connection_is_down(provider, tmp_path, bot_processes):
    """A dead Socket Mode connection must show in /healthz (Docker's HEALTHCHECK, a probe) and in the log;
    when Slack takes connections again the bot reconnects and is healthy again."""

    async def go():
        async with one_bot(provider, tmp_path, SLACK_PING_SECONDS="1") as (slack, bot):
            proc = bot.process
            healthy = await proc.health()
            assert healthy["ok"] and healthy["slack"], healthy
            slack.fail("apps.connections.open", "internal_error", times=10_000)
            await slack.drop_sockets()

            async def down() -> dict[str, Any] | None:
                health = await proc.health()
                return health if not health["ok"] else None

            health = await until(down, 10, "/healthz to say unhealthy")
            assert health["slack"] is False and health["database"] and health["worker"], health
            slack.errors.pop("apps.connections.open")
            await slack.wait_sockets(1, limit=20)

            async def up() -> dict[str, Any] | None:
                health = await proc.health()
                return health if health["ok"] else None

            assert (await until(up, 10, "/healthz to say healthy again"))["slack"] is True
            resp = await bot.command("+852 5123 4567 back again", trigger="T-back")
            assert "Sending to" in resp.json()["text"]
        return [line for line in proc.lines if line.get("logger") == "bot.slack.socket"]

    socket_lines = run(go())
    messages = " | ".join(str(line.get("msg")) for line in socket_lines)
    assert "Reconnecting" in messages or "closed" in messages, messages  # the drop is in the log
    assert "established" in messages, messages  # and so is the new connection


def test_socket_mode_modal_and_a_six_line_bulk_send_once_even_when_envelopes_come_twice(
    provider, tmp_path, bot_processes
):
    """The send form and a bulk confirmation through Socket Mode; Slack redelivers each submission's
    envelope (the same envelope id): one SMS for the form, each of the six numbers once for the bulk."""
    from .test_slack_app import modal_values

    six = "\n".join(f"+65 8100 {2000 + i}" for i in range(6))

    async def go():
        async with one_bot(provider, tmp_path, ACCESS_BULK=LEAD) as (slack, bot):
            await bot.command("", trigger="T-modal")
            (opened,) = await slack.wait_for("views.open")
            modal = opened.params["view"]
            values = modal_values("+852 5123 4567", "From the form over Socket Mode")
            bot.envelope_id = "env-modal"
            answers = [await bot.submit_view(modal, values, view_id="V-MODAL") for _ in range(3)]
            assert all(a.status_code == 200 for a in answers)

            bot.envelope_id = None
            confirm = await review(bot, bulk_values(recipients=six, message="Hi, your order shipped."))
            bot.envelope_id = "env-bulk-confirm"
            confirmed = [await bot.submit_view(confirm, {}, user=LEAD, view_id="V-BULK") for _ in range(3)]
            assert confirmed[0].json() == {"response_action": "clear"}, confirmed[0].json()

    run(go())
    singles = [r.params["To"] for r in provider.sent("SendMessageToGlobe")]
    batched = Counter(n for r in provider.sent("BatchSendMessageToGlobe") for n in json.loads(r.params["To"]))
    assert singles == ["85251234567"]
    assert sorted(batched) == [f"658100{2000 + i}" for i in range(6)] and set(batched.values()) == {1}


def test_http_mode_does_not_load_the_socket_mode_adapters():
    import subprocess
    import sys
    from pathlib import Path

    script = "import sys, bot.runtime; print(any('socket_mode' in m for m in sys.modules))"
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-c", script],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"
