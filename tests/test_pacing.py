"""Fan-out and batch helpers against the fake provider, which throttles anything over its limits."""

import asyncio
import itertools
import json

import pytest

from bot.sms import Hooks, SmsClient, Status, batch_send_all, fan_out
from bot.sms.simulator import Fault

from .conftest import run, settings_for
from .harness import fast_batches

# Measures pacing against the provider's limits: runs alone, after the parallel pass (README,
# "Run the tests").
pytestmark = pytest.mark.serial


def numbers(n: int, prefix: str = "658123") -> list[str]:
    return [f"{prefix}{i:04d}" for i in range(n)]


def test_fan_out_at_the_single_send_limit_without_throttling(provider):
    provider.reset(single_rate=200)
    settings = settings_for(provider, SMS_SINGLE_RATE=200)
    progress: list[tuple[int, int]] = []
    before: list[int] = []

    async def go():
        async with SmsClient(settings) as client:
            reqs = [client.send_request(to=n, message=f"hi {i}") for i, n in enumerate(numbers(300))]

            async def mark(indices):
                before.extend(indices)

            hooks = Hooks(before_send=mark, on_progress=lambda d, t: progress.append((d, t)))
            return await fan_out(client, reqs, hooks=hooks)

    outcomes = run(go())
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 300
    assert provider.counts["throttled"] == 0
    assert sorted(provider.numbers_sent()) == sorted(numbers(300))
    assert sorted(before) == list(range(300))
    assert progress[-1] == (300, 300)
    assert all(o.message_id and o.segments == 1 for o in outcomes)
    assert outcomes[5].to == "6581230005" and outcomes[5].index == 5


def test_fan_out_reports_each_recipient(provider, sms_settings):
    provider.reset(reject_numbers=["6581230001"])
    provider.inject(Fault("timeout", delay=1.0))  # the first request to arrive times out
    settings = sms_settings.model_copy(update={"read_timeout": 0.3})

    async def go():
        async with SmsClient(settings) as client:
            reqs = [client.send_request(to=n, message="hi") for n in numbers(3)]
            return await fan_out(client, reqs, concurrency=1)

    first, second, third = run(go())
    assert first.status == Status.UNKNOWN and "may or may not" in first.error
    assert second.status == Status.FAILED and second.code == "MOBILE_NUMBER_ILLEGAL"
    assert third.status == Status.ACCEPTED
    assert len(provider.sent()) == 3


def test_batch_chunks_in_order_at_1_per_second_with_personal_messages(provider, sms_settings):
    to = numbers(2500)
    messages = [f"Hello {n[-4:]}" for n in to]
    provider.reset(reject_numbers=[to[7], to[1500]])
    results = []

    async def go():
        async with SmsClient(sms_settings) as client:
            return await batch_send_all(
                client, to, messages, type="MKT", hooks=Hooks(on_results=results.append)
            )

    outcomes = run(go())
    calls = provider.sent("BatchSendMessageToGlobe")
    assert [len(json.loads(c.params["To"])) for c in calls] == [1000, 1000, 500]
    assert all(b.at - a.at >= 1.0 for a, b in itertools.pairwise(calls))
    assert provider.counts["throttled"] == 0
    # Messages reach the provider in the same order as the numbers.
    sent_to = [n for c in calls for n in json.loads(c.params["To"])]
    sent_msg = [m for c in calls for m in json.loads(c.params["Message"])]
    assert sent_to == to and sent_msg == messages
    statuses = {o.index: o.status for o in outcomes}
    assert statuses[7] == statuses[1500] == Status.FAILED
    assert sum(1 for s in statuses.values() if s == Status.ACCEPTED) == 2498
    assert sum(len(g) for g in results) == 2500


def test_batch_without_keeping_hands_every_outcome_to_the_hook_and_returns_none(provider, sms_settings):
    """`keep=False` (the worker's large jobs): outcomes go to `on_results` as they come, none is held."""
    provider.reset(reject_numbers=["6581230002"])
    results = []

    async def go():
        async with SmsClient(sms_settings, limiter=fast_batches(provider, sms_settings)) as client:
            return await batch_send_all(
                client, numbers(5), ["x"] * 5, chunk_size=2, keep=False,
                hooks=Hooks(on_results=results.extend),
            )  # fmt: skip

    assert run(go()) == []
    assert sorted((o.index, o.status) for o in results) == [
        (0, Status.ACCEPTED), (1, Status.ACCEPTED), (2, Status.FAILED), (3, Status.ACCEPTED),
        (4, Status.ACCEPTED),
    ]  # fmt: skip
    assert len(provider.sent("BatchSendMessageToGlobe")) == 3


def test_batch_chunk_with_unknown_outcome_is_not_resent(provider, sms_settings):
    provider.inject(Fault("internal", action="BatchSendMessageToGlobe"))

    async def go():
        async with SmsClient(sms_settings, limiter=fast_batches(provider, sms_settings)) as client:
            return await batch_send_all(client, numbers(4), ["x"] * 4, chunk_size=2)

    outcomes = run(go())
    assert [o.status for o in outcomes] == [Status.UNKNOWN] * 2 + [Status.ACCEPTED] * 2
    assert len(provider.sent("BatchSendMessageToGlobe")) == 2


def test_batch_throttled_then_accepted(provider, sms_settings):
    provider.inject(Fault("throttle", action="BatchSendMessageToGlobe", retry_after_ms=50))

    async def go():
        async with SmsClient(sms_settings, limiter=fast_batches(provider, sms_settings)) as client:
            return await batch_send_all(client, numbers(2), ["x", "y"])

    assert [o.status for o in run(go())] == [Status.ACCEPTED] * 2
    assert [c.answered for c in provider.sent("BatchSendMessageToGlobe")] == ["Throttling.User", "OK"]


def test_batch_503_exhausted_is_failed_and_retryable(provider):
    settings = settings_for(provider, SMS_MAX_ATTEMPTS=2)
    provider.inject(Fault("unavailable", action="BatchSendMessageToGlobe", times=2, retry_after_ms=10))

    async def go():
        async with SmsClient(settings, limiter=fast_batches(provider, settings)) as client:
            return await batch_send_all(client, numbers(2), ["x", "y"])

    outcomes = run(go())
    assert [o.status for o in outcomes] == [Status.FAILED] * 2
    assert all(o.retryable for o in outcomes)


def test_batch_a_failing_before_send_stops_the_send(provider, sms_settings):
    """`before_send` sees each chunk when its turn comes. A hook that fails (say, the database is full)
    stops the send: that chunk and the later ones never go, and the error reaches the caller instead of
    turning into "unknown" outcomes for numbers never sent."""
    marked: list[tuple[int, int]] = []

    async def before_send(indices):
        marked.append((indices[0], indices[-1]))
        if len(marked) == 2:
            raise RuntimeError("the database is full")

    async def go():
        async with SmsClient(sms_settings, limiter=fast_batches(provider, sms_settings)) as client:
            await batch_send_all(
                client, numbers(5), ["x"] * 5, chunk_size=2, hooks=Hooks(before_send=before_send)
            )

    with pytest.raises(RuntimeError, match="database is full"):
        run(go())
    assert marked == [(0, 1), (2, 3)]
    sent = provider.sent("BatchSendMessageToGlobe")
    assert [json.loads(c.params["To"]) for c in sent] == [numbers(2)]


def test_batch_waiting_for_a_retry_is_not_in_flight(provider, sms_settings):
    """A throttled chunk certainly did not reach the provider: while its retry waits, its recipients are
    withdrawn (not in flight), and marked again just before the next attempt is written."""
    provider.inject(Fault("throttle", action="BatchSendMessageToGlobe"))
    events: list[tuple[str, int]] = []

    async def before_send(indices):
        events.append(("in_flight", len(indices)))

    async def withdraw(indices):
        events.append(("withdrawn", len(indices)))

    async def go():
        async with SmsClient(sms_settings, limiter=fast_batches(provider, sms_settings)) as client:
            return await batch_send_all(
                client, numbers(3), ["x"] * 3, hooks=Hooks(before_send=before_send, withdraw=withdraw)
            )

    outcomes = run(go())
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 3
    assert events == [("in_flight", 3), ("withdrawn", 3), ("in_flight", 3)]


def test_fan_out_stops_when_withdrawing_before_a_retry_fails(provider, sms_settings):
    """A throttled single send waits to retry; when its withdrawal cannot be recorded, the send stops
    as for a failed mark: the retry is not written, that request gets no outcome (the caller still has
    it in flight), and the cause reaches the caller."""
    provider.inject(Fault("throttle", action="SendMessageToGlobe", retry_after_ms=50))

    async def withdraw(indices):
        raise ConnectionResetError(104, "the database went away")

    async def go():
        async with SmsClient(sms_settings) as client:
            reqs = [client.send_request(to=n, message="hi") for n in numbers(1)]
            return await fan_out(client, reqs, hooks=Hooks(withdraw=withdraw))

    with pytest.raises(ConnectionResetError, match="went away"):
        run(go())
    (only,) = provider.sent()  # the throttled attempt; its retry was never written
    assert only.answered == "Throttling.User" and provider.counts["throttled"] == 1


def test_fan_out_marks_after_the_grant_and_a_failing_mark_sends_nothing_more(provider):
    """Requests are marked in flight only once the limiter granted them, in groups; when marking fails,
    no request of that group or after it is written, and the cause reaches the caller."""
    provider.reset(single_rate=200)
    settings = settings_for(provider, SMS_SINGLE_RATE=200)
    marked: list[list[int]] = []

    async def before_send(indices):
        marked.append(list(indices))
        if sum(map(len, marked)) >= 20:
            raise RuntimeError("the database is full")

    async def go():
        async with SmsClient(settings) as client:
            reqs = [client.send_request(to=n, message="hi") for n in numbers(100)]
            return await fan_out(client, reqs, hooks=Hooks(before_send=before_send))

    with pytest.raises(RuntimeError, match="database is full"):
        run(go())
    written = sum(map(len, marked[:-1]))  # the failing group's requests never left
    assert 20 <= sum(map(len, marked)) < 100
    assert len(provider.sent("SendMessageToGlobe")) == written


def test_a_slow_mark_holds_the_next_grants_back_and_hands_them_over_at_most_mark_group_at_a_time(provider):
    """A crash right after a `before_send` call leaves its group marked but not written (reported
    unknown, never sent): however slow one call is, the next hands over at most MARK_GROUP."""
    from bot.sms.pacing import MARK_GROUP

    provider.reset(single_rate=400)
    settings = settings_for(provider, SMS_SINGLE_RATE=400)
    marked: list[list[int]] = []

    async def before_send(indices):
        marked.append(list(indices))
        if len(marked) == 2:
            await asyncio.sleep(0.25)  # a commit behind a busy database: 100 more are granted meanwhile

    async def go():
        async with SmsClient(settings) as client:
            reqs = [client.send_request(to=n, message="hi") for n in numbers(200)]
            return await fan_out(client, reqs, hooks=Hooks(before_send=before_send))

    outcomes = run(go())
    assert [o.status for o in outcomes] == [Status.ACCEPTED] * 200
    assert sorted(itertools.chain.from_iterable(marked)) == list(range(200))
    assert max(map(len, marked)) == MARK_GROUP  # the backlog after the slow call, in full groups
    assert sorted(provider.numbers_sent()) == sorted(numbers(200)) and provider.counts["throttled"] == 0


def test_an_unexpected_error_becomes_an_unknown_outcome_whose_reference_is_in_the_log(caplog):
    from bot.sms.pacing import outcome_from_error

    outcome = outcome_from_error(3, "85251234567", KeyError("surprise"))
    assert outcome.status == Status.UNKNOWN and outcome.index == 3
    ref = outcome.error.split("reference ", 1)[1].split(")", 1)[0]
    (record,) = [r for r in caplog.records if f"ref={ref}" in r.getMessage()]
    assert "85251234567" not in record.getMessage()  # the number is masked in the log
    assert outcome.error.count("may or may not") == 1
