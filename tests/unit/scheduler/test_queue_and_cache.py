"""Scheduling queue (priority, FIFO, back-off, unschedulable moves) and the cache (assume, confirm, forget)."""

import asyncio

import pytest

from pinnace.scheduler.cache import Cache
from pinnace.scheduler.framework import PodInfo
from pinnace.scheduler.queue import SchedulingQueue

from .builders import node, pod


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_queue(**kw):
    clock = Clock()
    return SchedulingQueue(clock=clock, **kw), clock


async def test_priority_then_fifo():
    q, clock = make_queue()
    order = []
    for name, prio in [("a", 0), ("b", 10), ("c", 0), ("d", 10)]:
        clock.now += 1
        pi = PodInfo(pod(name, priority=prio))
        order.append(pi)
        q.add(pi)
    popped = [(await q.pop()).pod_info.name for _ in range(4)]
    assert popped == ["b", "d", "a", "c"]


@pytest.mark.parametrize("attempts, seconds", [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)])
def test_backoff_doubles_to_ten_seconds(attempts, seconds):
    q, _ = make_queue()
    assert q.backoff_duration(attempts) == seconds


async def test_unschedulable_pod_waits_for_a_helpful_event():
    q, clock = make_queue(events_of=lambda qpi: frozenset({"Node/Add"}))
    q.add(PodInfo(pod("p")))
    qpi = await q.pop()
    q.add_unschedulable(qpi, q.scheduling_cycle)
    assert q.pending() == {"active": 0, "backoff": 0, "unschedulable": 1}
    assert q.move_all_to_active_or_backoff("Pod/Delete") == 0
    assert q.move_all_to_active_or_backoff("Node/Add") == 1
    # Still backing off (1 s after the first attempt), so it waits in back-off.
    assert q.pending() == {"active": 0, "backoff": 1, "unschedulable": 0}
    clock.now += 1.01
    assert q.flush_backoff_completed() == 1
    assert (await q.pop()).pod_info.name == "p"


async def test_event_during_the_cycle_sends_pod_to_backoff():
    q, _clock = make_queue()
    q.add(PodInfo(pod("p")))
    qpi = await q.pop()
    cycle = q.scheduling_cycle
    q.move_all_to_active_or_backoff("Node/Add")  # happens while "p" is being scheduled
    q.add_unschedulable(qpi, cycle)
    assert q.pending()["backoff"] == 1


async def test_leftover_unschedulable_pods_retry_after_five_minutes():
    q, clock = make_queue(events_of=lambda qpi: frozenset())
    q.add(PodInfo(pod("p")))
    qpi = await q.pop()
    q.add_unschedulable(qpi, q.scheduling_cycle)
    clock.now += 299
    assert q.flush_unschedulable_leftover() == 0
    clock.now += 2
    assert q.flush_unschedulable_leftover() == 1
    assert q.pending()["active"] == 1


async def test_errors_go_to_backoff_and_deleted_pods_vanish():
    q, _ = make_queue()
    q.add(PodInfo(pod("p")))
    qpi = await q.pop()
    q.add_unschedulable(qpi, q.scheduling_cycle, error=True)
    assert q.pending()["backoff"] == 1
    q.delete(qpi.uid)
    assert len(q) == 0
    # A pod deleted while being scheduled is not re-queued.
    q.add(PodInfo(pod("r")))
    qpi = await q.pop()
    q.delete(qpi.uid)
    q.add_unschedulable(qpi, q.scheduling_cycle)
    assert len(q) == 0


async def test_pop_waits_for_a_pod():
    q, _ = make_queue()
    waiter = asyncio.ensure_future(q.pop())
    await asyncio.sleep(0)
    assert not waiter.done()
    q.add(PodInfo(pod("late")))
    assert (await asyncio.wait_for(waiter, 1)).pod_info.name == "late"


async def test_update_of_queued_pod_replaces_it():
    q, _ = make_queue()
    p = pod("p", priority=1)
    q.add(PodInfo(p))
    changed = dict(p, spec=dict(p["spec"], priority=5))
    q.update(PodInfo(changed))
    assert len(q) == 1
    assert (await q.pop()).pod_info.priority == 5


def test_nominated_pods():
    q, _ = make_queue()
    pi = PodInfo(pod("p"))
    q.add_nominated(pi, "n1")
    assert q.nominated_pods("n1") == [pi] and q.has_nominated_pods()
    q.add_nominated(pi, "n2")
    assert q.nominated_pods("n1") == [] and q.nominated_pods("n2") == [pi]
    q.delete_nominated(pi.uid)
    assert not q.has_nominated_pods()


def test_cache_assume_confirm_forget_and_remove():
    cache = Cache()
    cache.add_node(node("n1", cpu="2"))
    p = pod("p", cpu="1", labels={"app": "web"}, ports=[{"containerPort": 80, "hostPort": 8080}])
    pi = PodInfo(p)
    cache.assume_pod(pi, "n1")
    info = cache.nodes["n1"]
    assert info.requested.milli_cpu == 1000 and cache.is_assumed(pi.uid)
    assert ("TCP", "0.0.0.0", 8080) in info.used_ports
    bound = dict(p, spec=dict(p["spec"], nodeName="n1"))
    cache.add_pod(PodInfo(bound))  # the informer confirms the binding
    assert not cache.is_assumed(pi.uid) and info.requested.milli_cpu == 1000 and len(info.pods) == 1
    cache.forget_pod(pi)  # no effect once confirmed
    assert info.requested.milli_cpu == 1000
    cache.remove_pod(pi.uid)
    assert info.requested.milli_cpu == 0 and not info.used_ports and not cache.label_groups


def test_cache_keeps_pods_of_nodes_not_yet_seen():
    cache = Cache()
    cache.add_pod(PodInfo(pod("p", cpu="1", node_name="late")))
    cache.add_node(node("late", cpu="2"))
    assert cache.nodes["late"].requested.milli_cpu == 1000


def test_node_list_round_robins_zones():
    cache = Cache()
    for name, zone in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("c1", "c")]:
        cache.add_node(node(name, zone=zone))
    assert [n.name for n in cache.node_list()] == ["a1", "b1", "c1", "a2", "a3"]
    cache.remove_node("b1")
    assert [n.name for n in cache.node_list()] == ["a1", "c1", "a2", "a3"]


def test_node_stats_track_taints_and_cordons():
    cache = Cache()
    cache.add_node(node("n1", unschedulable=True, taints=[{"key": "k", "effect": "NoSchedule"}]))
    assert cache.unschedulable_nodes == 1 and cache.tainted_nodes == 1
    cache.update_node(node("n1"))
    assert cache.unschedulable_nodes == 0 and cache.tainted_nodes == 0


def test_node_list_follows_zone_changes():
    cache = Cache()
    for name, zone in [("a1", "a"), ("a2", "a"), ("b1", "b")]:
        cache.add_node(node(name, zone=zone))
    assert [n.name for n in cache.node_list()] == ["a1", "b1", "a2"]
    cache.update_node(node("a2", zone="b"))
    assert [n.name for n in cache.node_list()] == ["a1", "a2", "b1"]
