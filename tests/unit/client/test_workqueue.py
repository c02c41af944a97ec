"""WorkQueue semantics with a fake clock: nothing here sleeps."""

import asyncio

import pytest

from pinnace.client import FakeClock, ItemExponentialFailureRateLimiter, TokenBucket, WorkQueue
from pinnace.client.clock import settle
from pinnace.client.ratelimit import BucketRateLimiter, MaxOfRateLimiter


def make_queue(clock=None):
    clock = clock or FakeClock()
    limiter = MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10, 100, clock))
    return WorkQueue("test", limiter, clock=clock), clock


async def test_adds_of_a_queued_key_are_deduplicated():
    queue, _ = make_queue()
    for key in ["a", "b", "a", "a", "b", "c"]:
        queue.add(key)
    assert queue.queued() == ["a", "b", "c"]
    assert [await queue.get() for _ in range(3)] == ["a", "b", "c"]
    assert queue.metrics.adds == 3


async def test_a_key_added_while_processing_comes_back_after_done_only():
    queue, _ = make_queue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # changed while a worker holds it
    assert len(queue) == 0  # not handed to a second worker meanwhile
    getter = asyncio.ensure_future(queue.get())
    await settle()
    assert not getter.done()
    queue.done(key)
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_two_workers_never_hold_the_same_key():
    queue, _ = make_queue()
    holding: set[str] = set()
    overlaps = 0

    async def worker():
        nonlocal overlaps
        while (key := await queue.get()) is not None:
            overlaps += key in holding
            holding.add(key)
            await asyncio.sleep(0)
            queue.add(key) if queue.metrics.processed < 50 else None
            holding.discard(key)
            queue.done(key)

    workers = [asyncio.ensure_future(worker()) for _ in range(4)]
    for key in "abc":
        queue.add(key)
    await settle(200)
    queue.shutdown()
    await asyncio.gather(*workers)
    assert overlaps == 0
    assert queue.metrics.processed >= 50


@pytest.mark.parametrize("failures, delay", [(1, 0.005), (2, 0.01), (3, 0.02), (11, 5.12), (30, 1000.0)])
def test_per_item_backoff_doubles_from_5ms_to_1000s(failures, delay):
    limiter = ItemExponentialFailureRateLimiter(0.005, 1000.0)
    for _ in range(failures - 1):
        limiter.when("k")
    assert limiter.when("k") == pytest.approx(delay)
    assert limiter.num_requeues("k") == failures
    limiter.forget("k")
    assert limiter.when("k") == pytest.approx(0.005)


def test_token_bucket_allows_burst_then_paces():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)  # reservations queue up behind each other


async def test_rate_limited_add_waits_for_the_backoff():
    queue, clock = make_queue()
    queue.add("k")
    key = await queue.get()
    queue.add_rate_limited(key)  # first failure: 5 ms
    queue.done(key)
    await settle()
    assert len(queue) == 0
    await clock.advance(0.004)
    assert len(queue) == 0
    await clock.advance(0.001)
    assert queue.queued() == ["k"]
    key = await queue.get()
    queue.add_rate_limited(key)  # second failure: 10 ms
    queue.done(key)
    await clock.advance(0.009)
    assert len(queue) == 0
    await clock.advance(0.001)
    assert queue.queued() == ["k"]
    assert queue.num_requeues("k") == 2
    assert queue.metrics.retries == 2
    queue.forget("k")
    assert queue.num_requeues("k") == 0
    queue.shutdown()


async def test_overall_bucket_limits_many_failing_keys():
    queue, clock = make_queue()
    for i in range(100):  # the burst
        queue.add_rate_limited(f"k{i}")
    queue.add_rate_limited("late")  # 101st retry in the same instant: 0.1 s at 10 qps
    await clock.advance(0.005)
    assert len(queue) == 100
    await clock.advance(0.09)
    assert "late" not in queue.queued()
    await clock.advance(0.006)
    assert "late" in queue.queued()
    queue.shutdown()


async def test_add_after_keeps_the_earliest_due_time_and_dedups():
    queue, clock = make_queue()
    queue.add_after("a", 10)
    queue.add_after("a", 2)
    queue.add_after("a", 5)
    queue.add_after("b", 1)
    await clock.advance(1)
    assert queue.queued() == ["b"]
    await clock.advance(1)
    assert queue.queued() == ["b", "a"]
    await clock.advance(10)
    assert queue.queued() == ["b", "a"]  # the later due times of "a" do not add it again
    queue.shutdown()


async def test_add_after_zero_is_immediate():
    queue, _ = make_queue()
    queue.add_after("a", 0)
    assert queue.queued() == ["a"]


async def test_shutdown_wakes_waiting_workers_with_none():
    queue, _ = make_queue()
    getters = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await settle()
    queue.shutdown()
    assert await asyncio.gather(*getters) == [None, None, None]
    queue.add("x")
    assert await queue.get() is None


async def test_shutdown_with_drain_waits_for_processing_keys():
    queue, _ = make_queue()
    queue.add("a")
    key = await queue.get()
    drain = asyncio.ensure_future(queue.shutdown_with_drain(timeout=5))
    await settle()
    assert not drain.done()
    queue.done(key)
    await asyncio.wait_for(drain, 1)


async def test_metrics_measure_wait_and_work_time():
    queue, clock = make_queue()
    queue.add("a")
    await clock.advance(2)
    key = await queue.get()
    await clock.advance(3)
    queue.done(key)
    m = queue.metrics
    assert m.wait_seconds_total == pytest.approx(2)
    assert m.work_seconds_total == pytest.approx(3)
    assert m.processed == 1 and m.depth == 0


async def test_cancelled_getter_does_not_swallow_a_key():
    queue, _ = make_queue()
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await settle()
    queue.add("a")
    first.cancel()
    await settle()
    assert second.done() and second.result() == "a"
