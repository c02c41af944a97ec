"""Rate limiters: a token bucket for client QPS and the work queue's per-item retry back-off.

The work queue's default limiter is client-go's `DefaultControllerRateLimiter`: the larger of an
exponential per-item back-off (5 ms doubling to 1,000 s, reset by `forget`) and an overall token bucket
(10 retries/s, burst 100) so that many failing keys cannot together hammer the API server.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Protocol

from pinnace.client.clock import SYSTEM_CLOCK, Clock


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`. Reservations may drive it negative, which is
    how waiting callers queue up behind each other fairly without a lock."""

    def __init__(self, rate: float, burst: int, clock: Clock = SYSTEM_CLOCK) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = max(1, int(burst))
        self.clock = clock
        self._tokens = float(self.burst)
        self._last = clock.now()

    def _refill(self) -> None:
        now = self.clock.now()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now

    def reserve(self) -> float:
        """Take one token; return how many seconds the caller must wait before using it."""
        self._refill()
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await self.clock.sleep(delay)


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Record a failure of `item`; return the seconds to wait before retrying it."""
        ...

    def forget(self, item: Hashable) -> None:
        """`item` succeeded: its next failure starts the back-off from the beginning."""
        ...

    def num_requeues(self, item: Hashable) -> int: ...


class ItemExponentialFailureRateLimiter:
    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures > 64:  # 2**64 overflows any sane maximum; skip the float arithmetic
            return self.max_delay
        return min(self.base_delay * (2**failures), self.max_delay)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    def __init__(self, qps: float = 10.0, burst: int = 100, clock: Clock = SYSTEM_CLOCK) -> None:
        self.bucket = TokenBucket(qps, burst, clock)

    def when(self, item: Hashable) -> float:
        return self.bucket.reserve()

    def forget(self, item: Hashable) -> None:
        pass

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    def __init__(self, *limiters: RateLimiter) -> None:
        self.limiters = limiters

    def when(self, item: Hashable) -> float:
        # Every limiter must see the failure (so each updates its state), hence no short-circuit.
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock = SYSTEM_CLOCK) -> MaxOfRateLimiter:
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock))


def jittered_backoff(attempt: int, base: float, cap: float, jitter: float = 0.5) -> float:
    """Exponential back-off with multiplicative jitter, so that many clients that failed together
    (a restarted API server) do not all come back in the same instant."""
    delay = min(cap, base * (2 ** min(attempt, 32)))
    return delay * (1.0 + jitter * random.random())
