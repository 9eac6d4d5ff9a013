"""Per-account rate limiting at the provider's limits: ≤ 1 batch call/s, single sends ≤ N/s.

A GCRA ("virtual scheduling") limiter measured on actual send times, so a late wake-up of the event loop
never turns into a burst above the limit. Intervals carry a small margin (SMS_RATE_MARGIN, default 2%)
for network jitter between our clock and the provider's; the burst tolerance is derived from that
margin so that any one-second window holds at most `rate` calls.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

MAX_LEAD = 0.05  # at most this early a grant before its slot (see `RateLimiter.prepared`)
# The shortest sleep: uvloop's timers count whole milliseconds and fire a shorter one at once, which would
# spin the loop between grants 0.5 ms apart. Sleeping a little longer loses nothing: the grants whose
# slots passed meanwhile go out at once, within the burst tolerance.
MIN_SLEEP = 0.001


class RateLimiter:
    def __init__(
        self,
        rate: float,
        *,
        margin: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        follow_sends: bool = False,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.interval = (1.0 + margin) / rate
        # Burst tolerance: with GCRA, any window of 1 s holds at most 1 + (1 + tau) / interval calls. Most
        # of the margin is kept for jitter (a request that leaves later after its grant than the next one
        # does): tau comes from a quarter of it, so half or more of the margin is never used for bursts.
        self.tau = max(0.0, (margin / 2 - (1.0 + margin) / rate) / 2)
        self._clock = clock
        self._tat = float("-inf")  # theoretical arrival time of the next call
        self._lock = asyncio.Lock()
        self.waited = 0.0
        # When the transport reports the moment a request actually left (see `sent`), count from then:
        # a request held up after its slot was granted (a busy event loop, a slow connect) must not
        # leave the next one too close behind it. Used for the 1/s batch limit, where one late
        # request would otherwise mean a throttled batch.
        self.follow_sends = follow_sends
        self.lead = 0.0

    async def acquire(self) -> float:
        """Wait until one more call is allowed, count it, and return its slot: the monotonic time from
        which it may be written (now, unless the limiter grants early, see `prepared`)."""
        lead = self.lead
        async with self._lock:
            while True:
                now = self._clock()
                slot = self._tat - self.tau
                wait = slot - lead - now
                if wait <= 0:
                    self._tat = max(self._tat, now) + self.interval
                    return max(slot, now)
                self.waited += wait
                await asyncio.sleep(max(wait, MIN_SLEEP) if self.tau >= MIN_SLEEP else wait)

    def prepared(self, took: float) -> None:
        """The caller needed `took` seconds between a grant and being ready to write (its own in-flight
        mark, signing). With `follow_sends`, the next grant comes that much before its slot, and the
        caller holds the request until the slot (`hold`): requests leave at the limit, not at the limit
        plus that work. Capped, so that a request is never marked long before it can leave."""
        if self.follow_sends:
            self.lead = min(MAX_LEAD, max(0.0, took))

    async def hold(self, slot: float) -> None:
        """Sleep until `slot` (no-op once it has come): a request granted early never leaves early."""
        wait = slot - self._clock()
        if wait > 0:
            await asyncio.sleep(wait)

    def sent(self, at: float) -> None:
        """The transport wrote a request granted by this limiter at monotonic time `at`."""
        if self.follow_sends:
            self._tat = max(self._tat, at + self.interval)


@dataclass
class AccountLimiter:
    single: RateLimiter
    batch: RateLimiter
    query: RateLimiter


_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, AccountLimiter]] = (
    weakref.WeakKeyDictionary()
)


def account_limiter(
    account: str, *, single_rate: float, batch_rate: float, query_rate: float, margin: float
) -> AccountLimiter:
    """The one limiter of `account` in this process (per event loop); created on first use."""
    loop = asyncio.get_running_loop()
    per_loop = _registry.setdefault(loop, {})
    limiter = per_loop.get(account)
    if limiter is None:
        limiter = AccountLimiter(
            single=RateLimiter(single_rate, margin=margin),
            batch=RateLimiter(batch_rate, margin=margin, follow_sends=True),
            query=RateLimiter(query_rate, margin=margin),
        )
        per_loop[account] = limiter
    return limiter
