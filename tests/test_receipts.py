"""Delivery receipts: parsing (pure), the core's pipeline on both databases (store first, match after,
forward only, early, duplicate, foreign and crossed receipts, unknowns settled), the QueryMessage sweep
against the fake provider over loopback, and the push endpoint."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from aiohttp import web

from bot.core import deliveries as deliveries_module
from bot.core.db import DatabaseUnreachable
from bot.core.deliveries import Deliveries
from bot.core.store import JobKind, NewRecipient, RecipientState
from bot.core.worker import Worker
from bot.slack.server import ReceiptsEndpoint, web_app
from bot.sms import (
    Delivery,
    Outcome,
    Receipt,
    SmsClient,
    SmsSettings,
    Status,
    describe_delivery,
    number_matches,
)
from bot.sms.models import QueryResponse
from bot.sms.phone import parse_number
from bot.sms.receipts import ReceiptFormatError, decode_queue_body, from_query, parse_push
from bot.sms.simulator import FakeProvider

from .conftest import open_store, run


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- pure
def test_a_push_body_gives_one_receipt_per_known_status():
    body = json.dumps(
        [
            {"To": "85251234567", "Status": "1", "MessageId": "m1", "TaskId": "t", "SmsSize": "2",
             "ReceiveDate": "Thu, 25 Nov 2021 10:25:00 +0800", "ErrorCode": "DELIVERED"},
            {"To": "85251234568", "Status": "2", "MessageId": "m2", "ErrorCode": "UNDELIV"},
            {"To": "85251234569", "Status": "6", "MessageId": "m3"},
            {"To": "85251234560", "Status": "9", "MessageId": "m4"},  # unknown status: skipped
            {"To": "85251234560", "Status": "1"},  # no id at all: skipped
        ]
    ).encode()  # fmt: skip
    got = parse_push(body)
    assert [(r.message_id, r.delivery) for r in got] == [
        ("m1", Delivery.DELIVERED), ("m2", Delivery.UNDELIVERED), ("m3", Delivery.EXPIRED),
    ]  # fmt: skip
    assert got[0].segments == 2 and got[0].task_id == "t"
    assert got[0].done_at == 1637807100.0  # 10:25 at +08:00
    snake = parse_push(
        b'{"to": "6581000001", "status": "1", "message_id": "x", "receive_date": "2017-06-01 10:00:00"}'
    )
    assert snake[0].to == "6581000001" and snake[0].done_at == 1496282400.0
    for junk in (b"", b"not json", b'"text"', b"[1, 2]"):
        with pytest.raises(ReceiptFormatError):
            parse_push(junk)


def test_queue_bodies_may_be_base64():
    import base64

    raw = json.dumps({"To": "6581000001", "Status": "2", "MessageId": "q"})
    assert decode_queue_body(base64.b64encode(raw.encode()).decode())[0].delivery == Delivery.UNDELIVERED
    assert decode_queue_body(raw)[0].message_id == "q"


def test_masked_numbers_match_where_they_have_digits():
    assert number_matches("8521234****", "+85212345678")
    assert not number_matches("8521235****", "+85212345678")
    assert not number_matches("852123****", "+85212345678")  # a digit short
    assert number_matches(None, "+85212345678")
    assert not number_matches("85212345679", "+85212345678")


def test_query_answers_are_classified_by_code_and_status():
    def q(status: str, code: str | None) -> Delivery | None:
        fields = {"ResponseCode": "OK", "MessageId": "m", "To": "6581000001", "Status": status}
        return from_query(QueryResponse.model_validate({**fields, "ErrorCode": code})).delivery

    assert q("1", "DELIVERED") == Delivery.DELIVERED
    assert q("1", None) is None  # sent to the carrier, no report yet
    assert q("3", None) is None
    assert q("2", "UNDELIV") == Delivery.UNDELIVERED
    assert q("2", "EXPIRED") == Delivery.EXPIRED


def test_outcomes_are_described_in_plain_words():
    def words(delivery, code=None, description=None):
        return describe_delivery(Receipt("m", None, delivery, code=code, description=description))

    assert words(Delivery.DELIVERED) == "delivered"
    assert words(Delivery.UNDELIVERED, "UNDELIV") == "the carrier could not deliver it (UNDELIV)"
    assert "expired" in words(Delivery.EXPIRED)
    assert words(Delivery.UNDELIVERED, "X42", "weird") == "the carrier reported X42 (weird)"
    assert words(None) == "waiting for the carrier's report"


# ---------------------------------------------------------------------- the pipeline, both databases
async def serve_receipts(endpoint: ReceiptsEndpoint) -> tuple[web.AppRunner, str]:
    """The bot's HTTP server with only the receipt endpoint, on a free loopback port: (runner, base URL)."""
    runner = web.AppRunner(web_app(None, _health, receipts=endpoint))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def send_job(store, client: SmsClient, job_id: str) -> None:
    """Run one job through a worker against the fake provider, to its end."""
    worker = Worker(store, client)
    await worker.start()
    worker.submit(job_id)
    await asyncio.wait_for(worker.wait(job_id), 10)
    await worker.stop()


def numbers(n: int) -> list[NewRecipient]:
    return [NewRecipient(parse_number(f"+65 8100 {i:04d}"), "hi") for i in range(n)]


def receipt(to: int, delivery: Delivery, *, task: str | None, mid: str | None = None, **kw) -> Receipt:
    return Receipt(mid, f"6581000{to:03d}", delivery, task_id=task, **kw)


def test_receipts_move_states_forward_only_and_settle_unknowns(database):
    """Duplicates, a later contrary receipt, a receipt before the answer is stored (held, then matched),
    one for a job we never had (dropped), and an unknown recipient settled by its receipt."""

    async def go():
        store = await open_store(database)
        clock = Clock()
        deliveries = Deliveries(store, None, clock=clock)
        job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=numbers(4))
        task = job.task_id
        await store.mark_in_flight(job.id, [0, 1, 2, 3])
        await store.record_outcomes(
            job.id,
            [
                Outcome(0, "6581000000", Status.ACCEPTED, message_id="m0"),
                Outcome(1, "6581000001", Status.UNKNOWN, error="timed out"),
                Outcome(3, "6581000003", Status.ACCEPTED, message_id="m3"),
            ],
        )  # 2 is still in flight: its answer has not been stored
        await deliveries.accept(
            [
                receipt(0, Delivery.DELIVERED, task=task, mid="m0"),
                receipt(0, Delivery.DELIVERED, task=task, mid="m0"),  # duplicate
                receipt(1, Delivery.DELIVERED, task=task, mid="m1"),  # the unknown one
                receipt(2, Delivery.UNDELIVERED, task=task, mid="m2", code="UNDELIV"),  # early
                receipt(3, Delivery.EXPIRED, task=task, mid="m3"),
                receipt(5, Delivery.DELIVERED, task="never-ours", mid="zz"),
            ],
            "push",
        )
        first = await deliveries.match_now()
        await deliveries.accept(
            [receipt(0, Delivery.UNDELIVERED, task=task, mid="m0")], "push"
        )  # late, contrary
        await store.record_outcomes(job.id, [Outcome(2, "6581000002", Status.ACCEPTED, message_id="m2")])
        second = await deliveries.match_now()
        rows = {r.idx: r for r in await store.recipients(job.id)}
        summary = await store.summary(job.id)
        inbox = await deliveries.store.read(
            lambda c: c.exec_driver_sql("SELECT COUNT(*) FROM receipts").scalar()
        )
        await store.close()
        return first, second, rows, summary, inbox, deliveries.counts

    first, second, rows, summary, inbox, counts = run(go())
    assert (first.matched, first.duplicates, first.held, first.foreign) == (3, 1, 1, 1)
    assert (second.matched, second.duplicates, second.held) == (1, 1, 0)
    assert [rows[i].delivery for i in range(4)] == [
        Delivery.DELIVERED, Delivery.DELIVERED, Delivery.UNDELIVERED, Delivery.EXPIRED,
    ]  # fmt: skip
    assert rows[1].state == RecipientState.ACCEPTED and rows[1].reconciled and rows[1].message_id == "m1"
    assert rows[1].error is None
    assert rows[2].delivery_code == "UNDELIV" and not rows[2].reconciled
    assert (summary.accepted, summary.unknown, summary.delivered, summary.undelivered, summary.waiting) == (
        4, 0, 2, 2, 0,
    )  # fmt: skip
    assert (summary.reconciled_delivered, summary.reconciled_undelivered) == (1, 0)
    assert inbox == 0 and counts["foreign"] == 1 and counts["stored"] == 7


def test_crossed_batch_ids_are_put_right_by_the_receipts_numbers(database):
    """A batch's ids are candidates by position; receipts (TaskId + number) decide, and a receipt with
    no TaskId (the queue's) finds its recipient through the id and the number together."""

    async def go():
        store = await open_store(database)
        deliveries = Deliveries(store, None)
        job, _ = await store.create_job(kind=JobKind.BATCH, created_by="U1", recipients=numbers(3))
        await store.mark_in_flight(job.id, [0, 1, 2])
        await store.record_outcomes(
            job.id,
            [
                Outcome(0, "6581000000", Status.ACCEPTED, candidate_id="b"),  # crossed: really "a"
                Outcome(1, "6581000001", Status.ACCEPTED, candidate_id="a"),
                Outcome(2, "6581000002", Status.ACCEPTED, candidate_id="c"),
            ],
        )
        await deliveries.accept(
            [
                receipt(0, Delivery.DELIVERED, task=job.task_id, mid="a"),
                Receipt("b", "6581000001", Delivery.UNDELIVERED),  # no TaskId, id crossed
                Receipt("c", "658100****", Delivery.DELIVERED),  # masked number
            ],
            "queue",
        )
        result = await deliveries.match_now()
        rows = {r.idx: r for r in await store.recipients(job.id)}
        await store.close()
        return result, rows

    result, rows = run(go())
    assert result.matched == 3
    assert [(rows[i].message_id, rows[i].delivery) for i in range(3)] == [
        ("a", Delivery.DELIVERED), ("b", Delivery.UNDELIVERED), ("c", Delivery.DELIVERED),
    ]  # fmt: skip


def test_receipts_not_shown_are_offered_again_until_the_observer_shows_them(database):
    """A match records, in its own transaction, which jobs' messages should change. They are offered to
    the observer again (by a new process, or the next sending replica) until it says it showed them as
    they were when it read the job; a receipt matched in between keeps the job offered. Given up, or
    changed more than a day ago: no longer offered."""

    class Observer:
        def __init__(self) -> None:
            self.offered: list[list[str]] = []

        async def deliveries_changed(self, job_ids):
            self.offered.append(list(job_ids))

    async def go():
        store = await open_store(database)
        clock = Clock()
        observer = Observer()
        deliveries = Deliveries(store, None, observer, clock=clock)
        made = []
        for n in (2, 1, 1):
            job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=numbers(n))
            await store.mark_in_flight(job.id, range(n))
            await store.record_outcomes(
                job.id,
                [
                    Outcome(i, f"6581000{i:03d}", Status.ACCEPTED, message_id=f"{job.id}-{i}")
                    for i in range(n)
                ],
            )
            made.append(job)
        a, b, c = made
        await deliveries.accept([receipt(0, Delivery.DELIVERED, task=j.task_id) for j in (a, b)], "push")
        await deliveries.match_now()
        matched = observer.offered[-1]
        restarted = Deliveries(store, None, observer, clock=clock)  # what a new process finds
        await restarted.offer_unshown()
        offered = [set(observer.offered[-1])]
        read_a, read_b = await store.get_job(a.id), await store.get_job(b.id)  # as the observer reads them
        clock.now += 1
        await deliveries.accept([receipt(1, Delivery.DELIVERED, task=a.task_id)], "push")  # meanwhile
        await deliveries.match_now()
        await store.receipts_shown(a.id, read_a.receipts_changed)  # shown as read: before the second
        await store.receipts_shown(b.id, read_b.receipts_changed)
        await restarted.offer_unshown()
        offered.append(set(observer.offered[-1]))
        await store.receipts_shown(a.id, (await store.get_job(a.id)).receipts_changed)
        quiet = await restarted.offer_unshown()
        await deliveries.accept([receipt(0, Delivery.DELIVERED, task=c.task_id)], "push")
        await deliveries.match_now()
        clock.now += deliveries_module.OFFER_FOR + 1
        stale = await restarted.offer_unshown()
        await store.receipts_shown(c.id, None)  # given up
        jobs = [await store.get_job(j.id) for j in made]
        await store.close()
        return matched, offered, quiet, stale, jobs

    matched, offered, quiet, stale, jobs = run(go())
    a, b, c = jobs
    assert sorted(matched) == sorted([a.id, b.id]) and offered == [{a.id, b.id}, {a.id}]
    assert quiet == 0 and stale == 0
    assert (a.receipts_changed, b.receipts_changed, c.receipts_changed) == (2, 1, 1)
    assert a.receipts_unshown is None and b.receipts_unshown is None and c.receipts_unshown is None


def test_unmatched_receipts_are_dropped_after_the_hold(database):
    async def go():
        store = await open_store(database)
        clock = Clock()
        deliveries = Deliveries(store, None, clock=clock, hold_seconds=60)
        await deliveries.accept([Receipt("nobody", "6581000009", Delivery.DELIVERED)], "queue")
        held = await deliveries.match_now()
        clock.now += 61
        dropped = await deliveries.match_now()
        await store.close()
        return held, dropped

    held, dropped = run(go())
    assert (held.held, held.foreign) == (1, 0)
    assert (dropped.held, dropped.foreign) == (0, 1)


# ---------------------------------------------------------------------- sources over loopback
def test_pushed_receipts_and_the_sweep_reach_every_recipient(tmp_path):
    """The fake provider pushes receipts (merged, duplicated, out of order) to the bot's endpoint; a
    number with no push is settled by QueryMessage at its check time (a controllable clock)."""

    async def go():
        store = await open_store(f"sqlite:///{tmp_path / 'r.sqlite3'}")
        clock = Clock()
        store.clock = clock
        fake = FakeProvider(
            receipt_delay=0.0, duplicate_every=3, shuffle=True, repush_delay=0.05,
            undelivered_suffixes=("0002",), silent_suffixes=("0004",),
        )  # fmt: skip
        url = await fake.start()
        settings = fake.settings_for(SmsSettings(_env_file=None), url)
        async with SmsClient(settings) as client:
            deliveries = Deliveries(store, client, clock=clock, check_after=(120, 900))
            token = "t" * 24
            all_pushed = asyncio.Event()

            async def accept(items):
                stored = await deliveries.accept(items, "push")
                if deliveries.counts["stored"] >= 6:  # 5 pushed + 1 duplicate
                    all_pushed.set()
                return stored

            runner, base = await serve_receipts(ReceiptsEndpoint(token, accept))
            fake.receipts_url = f"{base}/receipts/{token}"
            job, _ = await store.create_job(kind=JobKind.FANOUT, created_by="U1", recipients=numbers(6))
            await send_job(store, client, job.id)
            await asyncio.wait_for(all_pushed.wait(), 10)
            await deliveries.match_now()
            before = await store.summary(job.id)
            assert await deliveries.sweep_now() == 0  # not due yet
            clock.now += 121
            swept = await deliveries.sweep_now()
            after = await store.summary(job.id)
            rows = {r.idx: r for r in await store.recipients(job.id)}
            await runner.cleanup()
        await fake.stop()
        await store.close()
        return before, swept, after, rows, deliveries.counts

    before, swept, after, rows, counts = run(go())
    assert (before.delivered, before.undelivered, before.waiting) == (4, 1, 1)
    assert swept == 1 and counts["queried"] == 1
    assert (after.delivered, after.undelivered, after.waiting) == (5, 1, 0)
    assert rows[2].delivery == Delivery.UNDELIVERED and rows[4].delivery == Delivery.DELIVERED
    assert counts["duplicates"] >= 1


async def _health() -> dict:
    return {"ok": True}


def test_the_push_endpoint_answers_after_storing_and_refuses_the_rest(caplog):
    stored: list[Receipt] = []
    failing: dict[str, Exception | None] = {"on": None}

    async def accept(items):
        if failing["on"] is not None:
            raise failing["on"]
        stored.extend(items)
        return len(items)

    async def go():
        served = [
            await serve_receipts(ReceiptsEndpoint("s" * 20, accept, max_body=2048)),
            await serve_receipts(ReceiptsEndpoint("l" * 20, accept)),
        ]
        runners, bases = [runner for runner, _ in served], [base for _, base in served]
        base = bases[0]
        one = [{"To": "6581000001", "Status": "1", "MessageId": "m1"}]
        async with httpx.AsyncClient(base_url=base) as http:
            ok = await http.post("/receipts/" + "s" * 20, json=one)
            wrong = await http.post("/receipts/" + "x" * 20, json=one)
            junk = await http.post("/receipts/" + "s" * 20, content=b"<xml/>")
            big = await http.post("/receipts/" + "s" * 20, json=one * 100)
            many = [{"To": f"65810{i:05d}", "Status": "1", "MessageId": f"x{i}"} for i in range(1000)]
            body = json.dumps(many).encode()

            async def in_pieces():  # the body arrives in several reads, as a large push over a network does
                for i in range(0, len(body), 8192):
                    yield body[i : i + 8192]
                    await asyncio.sleep(0.005)  # shapes the traffic; nothing is waited for

            large = await http.post(bases[1] + "/receipts/" + "l" * 20, content=in_pieces())
            failing["on"] = RuntimeError("a bug")
            down = await http.post("/receipts/" + "s" * 20, json=one)
            failing["on"] = DatabaseUnreachable("ConnectionRefusedError: refused")  # a restart
            away = await http.post("/receipts/" + "s" * 20, json=one)
        for runner in runners:
            await runner.cleanup()
        return ok, wrong, junk, big, down, large, away

    ok, wrong, junk, big, down, large, away = run(go())
    assert large.status_code == 200 and len(stored) == 1 + 1000
    assert (ok.status_code, ok.json()["code"]) == (200, 0)
    assert wrong.status_code == 404 and "s" * 20 not in wrong.text
    assert junk.status_code == 400 and junk.json()["code"] != 0
    assert big.status_code == 413
    assert down.status_code == 503 and "ref" in down.json()["msg"]
    # the database out of reach: pushed again later, and one warning line for it, not a traceback
    assert away.status_code == 503 and "push again" in away.json()["msg"]
    ref = away.json()["msg"].split("ref ", 1)[1].split(")", 1)[0]
    (logged,) = [r for r in caplog.records if f"ref={ref}" in r.getMessage()]
    assert logged.levelname == "WARNING" and logged.exc_info is None
    assert "database cannot be reached" in logged.getMessage()
    assert [r.message_id for r in stored[:2]] == ["m1", "x0"]


def test_the_queue_is_consumed_at_least_once_and_each_receipt_counts_once(tmp_path, monkeypatch):
    """Receipts through the fake MNS queue (temporary credentials from QueryTokenForMnsQueue, MNS's own
    signature, XML, JSON and base64 bodies): stored, then deleted. A crash between storing and deleting
    (here: the first delete fails) brings the messages back after their visibility timeout; they are
    stored again and change nothing."""

    class FirstDeleteFails:
        def __init__(self, queue):
            self.queue, self.failed = queue, False

        async def receive(self):
            return await self.queue.receive(wait=1)

        async def delete(self, handles):
            if not self.failed:
                self.failed = True
                raise RuntimeError("killed between storing and deleting")
            await self.queue.delete(handles)

    monkeypatch.setattr(deliveries_module, "QUEUE_RETRY", 0.05)  # the failed delete is retried at once

    async def go():
        from bot.sms import ReceiptQueue

        store = await open_store(f"sqlite:///{tmp_path / 'q.sqlite3'}")
        fake = FakeProvider(queue_name="sms-report", queue_visibility=0.3, undelivered_suffixes=("0001",))
        url = await fake.start()
        settings = fake.settings_for(
            SmsSettings(
                _env_file=None,
                RECEIPTS_QUEUE="sms-report",
                RECEIPTS_QUEUE_ENDPOINT=url,
                RECEIPTS_TOKEN_ENDPOINT=url,
            ),
            url,
        )
        queue = ReceiptQueue(settings)
        async with SmsClient(settings) as client:
            matched = asyncio.Event()

            class Observer:
                async def deliveries_changed(self, job_ids):
                    if (await store.summary(job.id)).waiting == 0:
                        matched.set()

            wrapped = FirstDeleteFails(queue)
            deliveries = Deliveries(store, client, Observer(), queue=wrapped, check_after=())
            job, _ = await store.create_job(kind=JobKind.BATCH, created_by="U1", recipients=numbers(4))
            await send_job(store, client, job.id)
            deliveries.start()
            await asyncio.wait_for(matched.wait(), 10)
            # the messages brought back are deleted once they are stored again
            await asyncio.wait_for(fake.queue_drained(), 10)
            await deliveries.stop()
            summary = await store.summary(job.id)
        await queue.aclose()
        await fake.stop()
        await store.close()
        return summary, deliveries.counts, wrapped.failed

    summary, counts, failed = run(go())
    assert failed and (summary.delivered, summary.undelivered, summary.waiting) == (3, 1, 0)
    assert counts["stored"] >= 8 and counts["matched"] == 4 and counts["duplicates"] >= 4
    assert counts["queue_failures"] == 1  # the failed delete, seen in /healthz
