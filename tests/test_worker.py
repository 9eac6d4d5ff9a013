"""The worker's exactly-once rules, against the fake provider (no Slack)."""

from bot.core.store import NewRecipient, RecipientState, Store
from bot.core.worker import Worker
from bot.sms import SmsClient
from bot.sms.phone import parse_number

from .conftest import run


class Boom(Exception):
    pass


def test_an_unexpected_error_leaves_no_recipient_queued(provider, sms_settings, tmp_path):
    """In-flight requests become unknown; the ones never sent become failed (retryable), none stay queued."""
    calls = []

    def fault(point: str) -> None:
        calls.append(point)
        if point == "before_store_results":
            raise Boom("a bug while storing the first answers")

    async def go():
        store = Store(tmp_path / "w.sqlite3")
        numbers = [parse_number(f"+65 8100 {i:04d}") for i in range(3)]
        job, _ = store.create_job(
            kind="single", created_by="U1", recipients=[NewRecipient(n, "hi") for n in numbers]
        )
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client, fault=fault)
            await worker.start()
            worker.submit(job.id)
            summary = await worker.wait(job.id)
            await worker.stop()
        states = [r.state for r in store.recipients(job.id)]
        store.close()
        return summary, states

    summary, states = run(go())
    assert RecipientState.QUEUED not in states and RecipientState.IN_FLIGHT not in states
    assert summary.pending == 0 and summary.unknown + summary.failed == 3
    assert len(provider.sent()) <= 3


def test_a_job_submitted_twice_runs_once(provider, sms_settings, tmp_path):
    async def go():
        store = Store(tmp_path / "w.sqlite3")
        job, _ = store.create_job(
            kind="single", created_by="U1", recipients=[NewRecipient(parse_number("+65 8100 0001"), "hi")]
        )
        async with SmsClient(sms_settings) as client:
            worker = Worker(store, client)
            assert await worker.start() == [job.id]  # resumed: it was queued
            worker.submit(job.id)  # and queued again
            summary = await worker.wait(job.id)
            await worker.stop()
        store.close()
        return summary

    assert run(go()).accepted == 1
    assert len(provider.sent()) == 1
