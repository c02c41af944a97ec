"""The leader election timing `pinnace server`, `pinnace scheduler` and `pinnace controller-manager` apply
(`--leader-elect-lease-duration` and friends): a short lease hands leadership over quickly when the
leader stops renewing without releasing (as when its process dies)."""

from __future__ import annotations

import asyncio
import time

from pinnace.cli.server import LeaderElected, LeaderElectionTiming


class Work:
    """A stand-in component: runs while leading, counts its starts."""

    def __init__(self) -> None:
        self.runs = 0
        self.running = asyncio.Event()
        self.stopped = False

    async def run(self) -> None:
        self.runs += 1
        self.running.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.running.clear()

    async def stop(self) -> None:
        self.stopped = True


async def test_short_lease_hands_leadership_over_quickly(client) -> None:
    timing = LeaderElectionTiming(lease_duration=2.0, renew_deadline=1.5, retry_period=0.25)
    first_work, second_work = Work(), Work()
    first = LeaderElected(first_work, client, "pinnace-test", "kube-system", timing, identity="first")
    second = LeaderElected(second_work, client, "pinnace-test", "kube-system", timing, identity="second")
    await first.start()
    await asyncio.wait_for(first_work.running.wait(), 10)
    await second.start()
    lease = await client.get("coordination.k8s.io/v1/leases", "pinnace-test", namespace="kube-system")
    assert lease["spec"]["leaseDurationSeconds"] == 2 and lease["spec"]["holderIdentity"] == "first"
    await asyncio.sleep(1.0)
    assert not second_work.running.is_set()  # one leader at a time

    # The leader dies without releasing its lease: the other takes over once the short lease ran out.
    first.elector.release_on_cancel = False
    died = time.monotonic()
    await first.stop()
    assert first_work.stopped and not first_work.running.is_set()
    await asyncio.wait_for(second_work.running.wait(), 10)
    took = time.monotonic() - died
    assert took < 2.0 + 1.5, took  # the lease duration plus a retry period or so, not the default 15 s
    lease = await client.get("coordination.k8s.io/v1/leases", "pinnace-test", namespace="kube-system")
    assert lease["spec"]["holderIdentity"] == "second" and lease["spec"]["leaseTransitions"] >= 1
    await second.stop()
