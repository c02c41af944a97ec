"""The Scheduler's cycle around the algorithm: assume, bind, un-assume on failure, report, preempt.

Uses a recording fake client and feeds informer events by hand; no server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pinnace.client import Conflict
from pinnace.scheduler.scheduler import Scheduler

from .builders import node, pod


class FakeInformer:
    def __init__(self) -> None:
        self.items: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        return self.items.get(key)

    def list(self) -> list[dict]:
        return list(self.items.values())


class FakeClient:
    def __init__(self) -> None:
        self.bindings: list[tuple[str, str]] = []
        self.patches: list[tuple[str, dict]] = []
        self.deleted: list[str] = []
        self.events: list[tuple[str, str, str]] = []
        self.fail_bindings = 0

    async def post_subresource(self, resource: str, name: str, subresource: str, body: dict,
                               namespace: str | None = None) -> dict:
        if self.fail_bindings:
            self.fail_bindings -= 1
            raise Conflict({"kind": "Status", "code": 409, "reason": "Conflict", "message": "busy"}, 409)
        self.bindings.append((name, body["target"]["name"]))
        return {}

    async def patch(self, resource: str, name: str, patch: Any, namespace: str | None = None, **kw: Any) -> dict:
        self.patches.append((name, patch))
        return {}

    async def delete(self, resource: str, name: str, namespace: str | None = None, **kw: Any) -> dict:
        self.deleted.append(name)
        return {}


def make_scheduler(nodes, config=None):
    client = FakeClient()
    s = Scheduler(client, config, leader_elect=False)
    s.recorder.event = lambda obj, type, reason, message: client.events.append(  # type: ignore[method-assign]
        (obj["metadata"]["name"], reason, message))
    s._pods = FakeInformer()
    for n in nodes:
        s._on_node_add(n)
    return s, client


def submit(s: Scheduler, p: dict) -> None:
    s._pods.items[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = p
    s._on_pod_add(p)


async def drain(s: Scheduler) -> None:
    while True:
        qpi = s.queue.pop_nowait()
        if qpi is None:
            break
        await s._binding_slots.acquire()
        if not s.schedule_one(qpi):
            s._binding_slots.release()
    while s._background:
        await asyncio.gather(*list(s._background), return_exceptions=True)


async def test_binds_and_reports_scheduled():
    s, client = make_scheduler([node("n1")])
    submit(s, pod("a", cpu="1"))
    await drain(s)
    assert client.bindings == [("a", "n1")]
    assert ("a", "Scheduled", "Successfully assigned default/a to n1") in client.events
    assert s.cache.nodes["n1"].requested.milli_cpu == 1000  # assumed until the informer confirms


async def test_failed_binding_un_assumes_and_requeues_with_backoff():
    s, client = make_scheduler([node("n1")])
    client.fail_bindings = 1
    submit(s, pod("a", cpu="1"))
    await drain(s)
    assert client.bindings == []
    assert s.cache.nodes["n1"].requested.milli_cpu == 0
    assert s.queue.pending()["backoff"] == 1
    s.queue.clock = lambda: 10**9  # back-off over
    s.queue.flush_backoff_completed()
    await drain(s)
    assert client.bindings == [("a", "n1")]


async def test_unschedulable_pod_gets_condition_and_event_once():
    s, client = make_scheduler([node("n1", cpu="1")])
    p = pod("big", cpu="2")
    submit(s, p)
    await drain(s)
    expected = ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
                "1 No preemption victims found for incoming pod.")
    assert client.events == [("big", "FailedScheduling", expected)]
    (_name, patch), = client.patches
    condition = patch["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"], condition["message"]) == (
        "PodScheduled", "False", "Unschedulable", expected)
    assert s.queue.pending()["unschedulable"] == 1
    # A pod deletion is an event NodeResourcesFit registered: the pod is retried, with the same message.
    s._pods.items["default/big"] = dict(p, status={"conditions": [condition]})
    s.queue.move_all_to_active_or_backoff("Pod/Delete")
    s.queue.clock = lambda: 10**9
    s.queue.flush_backoff_completed()
    await drain(s)
    assert len(client.patches) == 1  # nothing new to write


async def test_pods_for_other_schedulers_are_ignored():
    s, client = make_scheduler([node("n1")])
    submit(s, pod("x", scheduler_name="custom"))
    await drain(s)
    assert client.bindings == [] and len(s.queue) == 0


async def test_preemption_nominates_and_evicts():
    s, client = make_scheduler([node("n1", cpu="1")])
    victim = pod("victim", cpu="800m", priority=0, node_name="n1")
    s._on_pod_add(victim)
    submit(s, pod("vip", cpu="800m", priority=100))
    await drain(s)
    assert client.deleted == ["victim"]
    (_, patch), = client.patches
    assert patch["status"]["nominatedNodeName"] == "n1"
    assert ("victim", "Preempted") in [(n, r) for n, r, _ in client.events]
    assert [p.name for p in s.queue.nominated_pods("n1")] == ["vip"]
    # The victim goes away; the preemptor is retried and lands on its nominated node.
    s._on_pod_delete(victim)
    s.queue.clock = lambda: 10**9
    s.queue.flush_backoff_completed()
    await drain(s)
    assert client.bindings == [("vip", "n1")]


async def test_nominated_pod_keeps_its_room_from_lower_priority_pods():
    s, client = make_scheduler([node("n1", cpu="1")])
    vip = pod("vip", cpu="800m", priority=100)
    from pinnace.scheduler.framework import PodInfo

    s.queue.add_nominated(PodInfo(vip), "n1")
    submit(s, pod("small", cpu="500m", priority=0))
    await drain(s)
    assert client.bindings == []


async def test_binding_a_pod_confirmed_by_the_informer():
    s, _client = make_scheduler([node("n1")])
    p = pod("a", cpu="1")
    submit(s, p)
    await drain(s)
    bound = dict(p, spec=dict(p["spec"], nodeName="n1"))
    s._on_pod_update(p, bound)
    assert not s.cache.is_assumed(p["metadata"]["uid"])
    assert s.cache.nodes["n1"].requested.milli_cpu == 1000
    s._on_pod_delete(bound)
    assert s.cache.nodes["n1"].requested.milli_cpu == 0


async def test_permit_wait_then_allow():
    from pinnace.scheduler.framework import wait
    from pinnace.scheduler.registry import REGISTRY

    class Gate:
        name = "Gate"

        def __init__(self, args=None, handle=None) -> None:
            pass

        def permit(self, state, pod, node_name):
            return wait(5)

    REGISTRY["Gate"] = Gate
    try:
        s, client = make_scheduler([node("n1")], {"profiles": [{"plugins": {"permit": {"enabled": [{"name": "Gate"}]}}}]})
        p = pod("gated")
        submit(s, p)
        qpi = s.queue.pop_nowait()
        await s._binding_slots.acquire()
        assert s.schedule_one(qpi)
        await asyncio.sleep(0.01)
        assert client.bindings == []
        s.handle.get_waiting_pod(p["metadata"]["uid"]).allow("Gate")
        await asyncio.gather(*list(s._background))
        assert client.bindings == [("gated", "n1")]
    finally:
        del REGISTRY["Gate"]


async def test_sweep_requeues_a_pending_pod_nothing_holds():
    s, client = make_scheduler([node("n1")])
    p = pod("lost")
    s._pods.items["default/lost"] = p  # known to the informer, but its add never reached the queue
    assert s.requeue_orphans() == 1
    assert s.requeue_orphans() == 0  # now queued
    await drain(s)
    assert client.bindings == [("lost", "n1")]
