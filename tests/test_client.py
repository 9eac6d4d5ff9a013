"""SmsClient against the fake provider over real loopback HTTP."""

import asyncio
import itertools
import socket
import statistics

import httpx
import pytest

from bot.sms import (
    ConfigurationError,
    ConnectError,
    CredentialError,
    InvalidRequestError,
    OutcomeUnknownError,
    ProviderRejectedError,
    ServiceUnavailableError,
    SmsClient,
    ThrottledError,
    signing,
)
from bot.sms.limits import AccountLimiter, RateLimiter
from bot.sms.simulator import Fault

from .conftest import run, settings_for

# Measures the limiter's pacing and the pool's timing: runs alone, after the parallel pass (README,
# "Run the tests").
pytestmark = pytest.mark.serial

HK = "+852 5123 4567"


class RecordingSleep:
    """Records the backoff the client chose, then yields without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def _send(settings, **kwargs):
    sleep = kwargs.pop("sleep", None)
    extra = {"sleep": sleep} if sleep else {}
    async with SmsClient(settings, **extra) as client:
        return await client.send(to=HK, message="Hello, world! 你好 ~*'()+/", **kwargs), client


def test_send_is_signed_and_parsed(provider, sms_settings):
    resp, _ = run(_send(sms_settings, sender_id="Alicloud321", task_id="t-1", type="NOTIFY"))
    assert resp.ok and resp.message_id and resp.segments == 1
    assert resp.number_detail.country == "Hong Kong"
    (req,) = provider.sent()
    assert req.answered == "OK"  # the fake verified the signature
    assert req.params == {
        "To": "85251234567",
        "Message": "Hello, world! 你好 ~*'()+/",
        "From": "Alicloud321",
        "TaskId": "t-1",
        "Type": "NOTIFY",
    }
    assert req.headers["accept"] == "application/json"
    assert "accept" in req.headers["authorization"]


def test_batch_goes_as_a_signed_form_body(provider, sms_settings):
    async def go():
        async with SmsClient(sms_settings) as client:
            return await client.batch_send(to=["+852 5123 4567", "+65 8123 4567"], messages=["Hi A", "Hi B"])

    resp = run(go())
    assert resp.success_count == 2 and resp.failed_list == []
    (req,) = provider.sent("BatchSendMessageToGlobe")
    assert req.headers["content-type"] == signing.FORM_CONTENT_TYPE
    assert "content-type" in req.headers["authorization"]
    assert req.params["To"] == '["85251234567", "6581234567"]'


def test_single_send_goes_as_a_signed_form_body_even_when_long(provider, sms_settings):
    async def go():
        async with SmsClient(sms_settings) as client:
            return await client.send(to=HK, message="你" * 1000)

    assert run(go()).segments == 15
    (req,) = provider.sent()
    assert req.headers["content-type"] == signing.FORM_CONTENT_TYPE
    assert "content-type" in req.headers["authorization"]


def test_query(provider, sms_settings):
    async def go():
        async with SmsClient(sms_settings) as client:
            sent = await client.send(to=HK, message="hi")
            return sent, await client.query(sent.message_id)

    sent, status = run(go())
    assert status.message_id == sent.message_id and status.error_code == "DELIVERED"


def test_throttling_is_retried_with_a_fresh_nonce_honouring_retry_after(provider, sms_settings):
    provider.inject(Fault("throttle", retry_after_ms=1500))
    sleep = RecordingSleep()
    resp, client = run(_send(sms_settings, sleep=sleep))
    assert resp.ok
    first, second = provider.sent()
    assert first.answered == "Throttling.User" and second.answered == "OK"
    assert first.headers["x-acs-signature-nonce"] != second.headers["x-acs-signature-nonce"]
    assert sleep.delays and sleep.delays[0] >= 1.5
    assert client.stats["throttled"] == 1


def test_503_is_retried_then_gives_up_bounded(provider):
    settings = settings_for(provider, SMS_MAX_ATTEMPTS=3)
    provider.inject(Fault("unavailable", times=5))
    sleep = RecordingSleep()
    with pytest.raises(ServiceUnavailableError):
        run(_send(settings, sleep=sleep))
    assert len(provider.sent()) == 3
    assert len(sleep.delays) == 2


def test_retry_stops_at_the_time_bound(provider):
    settings = settings_for(provider, SMS_MAX_ATTEMPTS=10, SMS_RETRY_MAX_SECONDS=1.0)
    provider.inject(Fault("throttle", retry_after_ms=5000, times=3))
    with pytest.raises(ThrottledError):
        run(_send(settings, sleep=RecordingSleep()))
    assert len(provider.sent()) == 1  # a 5 s pause would pass the 1 s bound: no retry


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault("timeout", delay=1.0), "No answer from the provider in time"),
        (Fault("reset"), "The connection failed after the request was sent"),
        (Fault("internal"), "HTTP 500"),
        (Fault("garbage"), "could not be read (HTTP 200)"),
        (Fault("html502"), "could not be read (HTTP 502)"),
        (Fault("code", code="SYSTEM_ERROR"), "may or may not have been accepted"),
    ],
)
def test_outcome_unknown_is_never_retried(provider, fault, message):
    settings = settings_for(provider, SMS_READ_TIMEOUT=0.3, SMS_MAX_ATTEMPTS=5)
    provider.inject(fault)
    with pytest.raises(OutcomeUnknownError) as info:
        run(_send(settings, sleep=RecordingSleep()))
    assert message in str(info.value)
    assert str(info.value).count("may or may not") == 1  # said once, whatever the path
    assert len(provider.sent()) == 1  # exactly one request reached the provider


def test_non_ok_response_code_is_not_sent_and_not_retried(provider, sms_settings):
    provider.inject(Fault("code", code="INVALID_SENDERID"))
    with pytest.raises(ProviderRejectedError) as info:
        run(_send(sms_settings, sleep=RecordingSleep()))
    assert info.value.code == "INVALID_SENDERID"
    assert "sender ID is not approved" in info.value.message
    assert len(provider.sent()) == 1


def test_provider_refused_number(provider, sms_settings):
    provider.reset(reject_numbers=["85251234567"])
    with pytest.raises(ProviderRejectedError, match="not in a valid format"):
        run(_send(sms_settings))


def test_wrong_secret_is_a_credential_error(provider):
    settings = settings_for(provider, ALIBABA_CLOUD_ACCESS_KEY_SECRET="wrong")
    with pytest.raises(CredentialError) as info:
        run(_send(settings))
    assert info.value.code == "SignatureDoesNotMatch" and info.value.http_status == 400
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in info.value.message


def test_unknown_access_key(provider):
    settings = settings_for(provider, ALIBABA_CLOUD_ACCESS_KEY_ID="nobody")
    with pytest.raises(CredentialError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        run(_send(settings))


def test_missing_credentials_send_nothing(provider):
    settings = settings_for(provider, ALIBABA_CLOUD_ACCESS_KEY_ID="")
    with pytest.raises(ConfigurationError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        run(_send(settings))
    assert provider.received == []


def test_warm_up_opens_one_connection_and_sends_nothing(provider, sms_settings):
    async def go(settings):
        async with SmsClient(settings) as client:
            return await client.warm_up(), await client.warm_up()

    assert run(go(sms_settings)) == (1, 0)  # the second finds the first one open
    assert run(go(settings_for(provider, ALIBABA_CLOUD_ACCESS_KEY_SECRET=""))) == (0, 0)
    assert provider.received == []


def test_invalid_request_sends_nothing(provider, sms_settings):
    async def go():
        async with SmsClient(sms_settings) as client:
            await client.send(to="+86 138 0013 8000", message="hi")

    with pytest.raises(InvalidRequestError, match="Chinese-mainland"):
        run(go())
    assert provider.received == []


def test_connection_refused_is_not_sent_and_retried(provider):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = settings_for(provider, SMS_ENDPOINT=f"http://127.0.0.1:{port}", SMS_MAX_ATTEMPTS=3)
    sleep = RecordingSleep()
    with pytest.raises(ConnectError, match="nothing was sent"):
        run(_send(settings, sleep=sleep))
    assert len(sleep.delays) == 2


def test_batch_throttled_by_the_fake_when_faster_than_1_per_second(provider, sms_settings):
    fast = AccountLimiter(single=RateLimiter(1000), batch=RateLimiter(1000), query=RateLimiter(1000))
    settings = sms_settings.model_copy(update={"max_attempts": 1})

    async def go():
        async with SmsClient(settings, limiter=fast) as client:
            await client.batch_send(to=[HK], messages=["a"])
            await client.batch_send(to=[HK], messages=["b"])

    with pytest.raises(ThrottledError):
        run(go())
    assert [r.answered for r in provider.sent("BatchSendMessageToGlobe")] == ["OK", "Throttling.User"]


def test_client_limiter_keeps_batches_under_1_per_second(provider, sms_settings):
    async def go():
        async with SmsClient(sms_settings) as client:
            for _ in range(3):
                await client.batch_send(to=[HK], messages=["a"])

    run(go())
    times = [r.at for r in provider.sent("BatchSendMessageToGlobe")]
    assert all(r.answered == "OK" for r in provider.sent("BatchSendMessageToGlobe"))
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(times))


def test_slow_work_between_grant_and_write_does_not_slow_batches(provider, sms_settings):
    """The caller's in-flight mark (45 ms here) is done before the slot, not added to every gap: the
    batch limiter grants that much early and holds the request until its slot."""

    async def go():
        async with SmsClient(sms_settings) as client:

            async def slow_mark() -> None:
                await asyncio.sleep(0.045)

            for _ in range(5):
                await client.batch_send(to=[HK], messages=["a"], on_dispatch=slow_mark)
            return client.limiter.batch.interval

    interval = run(go())
    times = [r.at for r in provider.sent("BatchSendMessageToGlobe")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 1.0 for g in gaps), gaps
    # Without the early grant every gap is interval + 45 ms; the first gap learns the mark's length.
    # The median leaves room for this machine's jitter in when the provider sees a request.
    assert statistics.median(gaps[1:]) < interval + 0.025, gaps


def test_a_limiter_granting_early_never_lets_a_call_leave_before_its_slot(monkeypatch):
    now = [100.0]

    async def go() -> list[tuple[float, float]]:
        limiter = RateLimiter(1, margin=0.02, clock=lambda: now[0], follow_sends=True)
        limiter.prepared(0.2)  # capped
        assert limiter.lead == 0.05
        out = []
        for _ in range(3):
            slot = await limiter.acquire()
            granted = now[0]
            await limiter.hold(slot)
            out.append((granted, now[0]))
            limiter.sent(now[0])
        return out

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)  # the limiter's own waits, on the fake clock
    calls = run(go())
    written = [w for _, w in calls]
    assert [round(b - a, 6) for a, b in itertools.pairwise(written)] == [1.02, 1.02]
    assert [round(w - g, 6) for g, w in calls] == [0.0, 0.05, 0.05]  # granted early, written on the slot


def test_the_single_send_limiter_never_sleeps_less_than_a_millisecond_and_keeps_its_rate(monkeypatch):
    """uvloop fires a timer shorter than a millisecond at once: sleeping 0.5 ms between grants would spin
    the loop. Sleeping a millisecond grants the calls whose slots passed meanwhile at once."""
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    async def go() -> list[float]:
        limiter = RateLimiter(2000, margin=0.02, clock=lambda: now[0])
        granted = []
        for _ in range(4000):
            await limiter.acquire()
            granted.append(now[0])
        return granted

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    granted = run(go())
    assert sleeps and min(sleeps) >= 0.001
    assert len(sleeps) < 2100  # one wake-up per millisecond or so, not one per grant
    per_second = [sum(1 for t in granted if s <= t < s + 1.0) for s in (0.0, 0.5, 1.0)]
    assert max(per_second) <= 2000
    assert min(per_second) >= 1940  # 2,000/s less the 2% margin, and no rate lost to the longer sleeps


def test_fake_rejects_replayed_nonce_and_stale_clock(provider):
    params = {"To": "85251234567", "Message": "hi"}
    host = provider.url.removeprefix("http://")

    def post(**sign_kwargs):
        headers = signing.sign(
            method="POST",
            host=host,
            action="SendMessageToGlobe",
            version="2018-05-01",
            access_key_id="testid",
            access_key_secret="testsecret",
            query=params,
            **sign_kwargs,
        )
        return httpx.post(provider.url + "/?" + signing.wire_query(params), headers=headers)

    nonce = signing.new_nonce()
    assert post(nonce=nonce).status_code == 200
    replay = post(nonce=nonce)
    assert replay.status_code == 400 and replay.json()["Code"] == "SignatureNonceUsed"
    stale = post(date="2020-01-01T00:00:00Z")
    assert stale.status_code == 400 and stale.json()["Code"] == "InvalidTimeStamp.Expired"


def test_fake_checks_the_signature_of_the_decoded_query(provider):
    """Spaces go on the wire as '+' but are signed as %20: a signature over '+' must fail."""
    host = provider.url.removeprefix("http://")
    params = {"To": "85251234567", "Message": "a b"}
    headers = signing.sign(
        method="POST",
        host=host,
        action="SendMessageToGlobe",
        version="2018-05-01",
        access_key_id="testid",
        access_key_secret="testsecret",
        query={"To": "85251234567", "Message": "a+b"},
    )
    resp = httpx.post(provider.url + "/?" + signing.wire_query(params), headers=headers)
    assert resp.json()["Code"] == "SignatureDoesNotMatch"


@pytest.mark.parametrize(
    ("error", "outcome", "attempts"),
    [(httpx.ReadTimeout, OutcomeUnknownError, 1), (httpx.ConnectError, ConnectError, 3)],
)
def test_another_transport_is_judged_by_its_exceptions(sms_settings, error, outcome, attempts):
    """Only our transport marks when a request was written; with another one (here httpx's mock), a
    read timeout may have left and is never retried; a connect error certainly did not and is."""
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise error("scripted", request=request)

    async def go():
        settings = sms_settings.model_copy(update={"max_attempts": 3})
        async with SmsClient(settings, transport=httpx.MockTransport(handler), sleep=RecordingSleep()) as sms:
            await sms.send(to="+852 5123 4567", message="hi")

    with pytest.raises(outcome):
        run(go())
    assert len(calls) == attempts
