"""The scheduler against a real API server, with nodes as plain API objects (no node agents)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pinnace.scheduler.scheduler import Scheduler

pytestmark = pytest.mark.timeout(60)

NOT_HELPFUL = "Preemption is not helpful for scheduling"


def node(name: str, cpu: str = "2", memory: str = "4Gi", labels: dict | None = None, taints: list | None = None,
         pods: int = 110) -> dict:
    allocatable = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": allocatable, "capacity": allocatable,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def pod(name: str, cpu: str | None = None, labels: dict | None = None, **spec: Any) -> dict:
    container: dict[str, Any] = {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
            "spec": {"containers": [container], **spec}}


async def add_nodes(client, *nodes: dict) -> None:
    for n in nodes:
        created = await client.create("v1/nodes", n)
        if not (created.get("status") or {}).get("allocatable"):
            created["status"] = n["status"]
            await client.update_status("v1/nodes", created)


async def eventually(check, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s; last: {result!r}")
        await asyncio.sleep(interval)


async def bound_node(client, name: str) -> str | None:
    return (await client.get("v1/pods", name, namespace="default"))["spec"].get("nodeName")


async def wait_bound(client, name: str) -> str:
    async def check():
        return await bound_node(client, name)
    return await eventually(check)


async def wait_unschedulable(client, name: str) -> str:
    """The PodScheduled=False/Unschedulable message once the scheduler gave up on the pod."""
    async def check():
        p = await client.get("v1/pods", name, namespace="default")
        for c in (p.get("status") or {}).get("conditions") or ():
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                return c["message"]
        return None
    return await eventually(check)


async def events_for(client, name: str, reason: str) -> list[str]:
    events = await client.list("v1/events", namespace="default",
                               field_selector=f"involvedObject.name={name},reason={reason}")
    return [e["message"] for e in events["items"]]


@pytest.fixture
async def scheduler(client):
    started: list[Scheduler] = []

    async def start(config: dict | None = None, leader_elect: bool = False) -> Scheduler:
        s = Scheduler(client, config, leader_elect=leader_elect)
        await s.start()
        started.append(s)
        await asyncio.wait_for(s.ready.wait(), 20)
        return s

    yield start
    for s in started:
        await s.stop()


async def test_binds_pods_and_records_scheduled_events(client, scheduler):
    await add_nodes(client, node("n1"), node("n2"))
    await scheduler()
    await client.create("v1/pods", pod("web", cpu="500m"))
    chosen = await wait_bound(client, "web")
    assert chosen in ("n1", "n2")

    async def scheduled_event():
        return await events_for(client, "web", "Scheduled")
    assert await eventually(scheduled_event) == [f"Successfully assigned default/web to {chosen}"]


async def test_resources_exhausted_leave_pod_pending_with_the_kubernetes_message(client, scheduler):
    await add_nodes(client, node("n1", cpu="1", taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
                    node("n2", cpu="1"), node("n3", cpu="1"))
    await scheduler()
    await client.create("v1/pods", pod("big", cpu="2"))
    expected = ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu. "
                f"preemption: 0/3 nodes are available: 1 {NOT_HELPFUL}, 2 No preemption victims found for incoming pod.")
    assert await wait_unschedulable(client, "big") == expected

    async def failed_event():
        return await events_for(client, "big", "FailedScheduling")
    assert (await eventually(failed_event))[0] == expected
    assert await bound_node(client, "big") is None
    # A node that fits arrives: the pod is moved back from the unschedulable queue at once.
    await add_nodes(client, node("n4", cpu="4"))
    assert await wait_bound(client, "big") == "n4"


async def test_required_anti_affinity_spreads_three_replicas_and_leaves_the_fourth_pending(client, scheduler):
    await add_nodes(client, node("n1"), node("n2"), node("n3"))
    await scheduler()
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    for i in range(4):
        await client.create("v1/pods", pod(f"web-{i}", labels={"app": "web"}, affinity=anti))
    message = await wait_unschedulable(client, "web-3")
    placed = [await bound_node(client, f"web-{i}") for i in range(3)]
    assert sorted(placed) == ["n1", "n2", "n3"]
    assert message.startswith("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.")


async def test_topology_spread_across_zones(client, scheduler):
    zones = {"n-a1": "a", "n-a2": "a", "n-b1": "b", "n-c1": "c"}
    await add_nodes(client, *(node(n, labels={"topology.kubernetes.io/zone": z}) for n, z in zones.items()))
    await scheduler()
    constraint = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchLabels": {"app": "spread"}}}]
    for i in range(6):
        await client.create("v1/pods", pod(f"s-{i}", labels={"app": "spread"}, topologySpreadConstraints=constraint))
    counts = {"a": 0, "b": 0, "c": 0}
    for i in range(6):
        counts[zones[await wait_bound(client, f"s-{i}")]] += 1
    assert counts == {"a": 2, "b": 2, "c": 2}


async def test_taints_and_tolerations(client, scheduler):
    gpu_taint = [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
    await add_nodes(client, node("plain", cpu="1"), node("gpu", cpu="8", taints=gpu_taint))
    await scheduler()
    tolerant = [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}]
    await client.create("v1/pods", pod("trainer", cpu="4", tolerations=tolerant))
    await client.create("v1/pods", pod("intolerant", cpu="4"))
    assert await wait_bound(client, "trainer") == "gpu"
    message = await wait_unschedulable(client, "intolerant")
    assert message.startswith("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {gpu: true}.")


async def test_cordoned_node_takes_no_pods_until_uncordoned(client, scheduler):
    await add_nodes(client, node("only"))
    await client.patch("v1/nodes", "only", {"spec": {"unschedulable": True}})
    await scheduler()
    await client.create("v1/pods", pod("waiting"))
    message = await wait_unschedulable(client, "waiting")
    assert message.startswith("0/1 nodes are available: 1 node(s) were unschedulable.")
    await client.patch("v1/nodes", "only", {"spec": {"unschedulable": False}})
    assert await wait_bound(client, "waiting") == "only"


async def test_preemption_evicts_a_lower_priority_pod(client, scheduler):
    await add_nodes(client, node("n1", cpu="1"))
    await scheduler()
    await client.create("v1/pods", pod("low", cpu="800m", priority=0))
    assert await wait_bound(client, "low") == "n1"
    await client.create("v1/pods", pod("high", cpu="800m", priority=1000))

    async def nominated():
        p = await client.get("v1/pods", "high", namespace="default")
        return (p.get("status") or {}).get("nominatedNodeName")
    assert await eventually(nominated) == "n1"

    async def victim_evicted():
        try:
            victim = await client.get("v1/pods", "low", namespace="default")
        except Exception:
            return True  # already gone
        return bool(victim["metadata"].get("deletionTimestamp"))
    assert await eventually(victim_evicted)
    # With no node agent to confirm the graceful deletion, finish it the way a kubelet would.
    try:
        await client.delete("v1/pods", "low", namespace="default", grace_period_seconds=0)
    except Exception:
        pass
    assert await wait_bound(client, "high") == "n1"
    assert await eventually(lambda: events_for(client, "low", "Preempted"))


async def test_two_profiles(client, scheduler):
    await add_nodes(client, node("big", cpu="8", memory="16Gi"), node("small", cpu="2", memory="4Gi"))
    await scheduler({"profiles": [
        {"schedulerName": "default-scheduler"},
        {"schedulerName": "packer",
         "pluginConfig": [{"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "MostAllocated"}}}],
         "plugins": {"score": {"disabled": [{"name": "NodeResourcesBalancedAllocation"}]}}},
    ]})
    await client.create("v1/pods", pod("spreader", cpu="1"))
    await client.create("v1/pods", pod("packed", cpu="1", schedulerName="packer"))
    await client.create("v1/pods", pod("elsewhere", cpu="1", schedulerName="someone-else"))
    assert await wait_bound(client, "spreader") == "big"
    assert await wait_bound(client, "packed") == "small"
    await asyncio.sleep(0.3)
    assert await bound_node(client, "elsewhere") is None  # another scheduler's pod is left alone


async def test_leader_election_holds_the_lease(client, scheduler):
    await add_nodes(client, node("n1"))
    s = await scheduler(leader_elect=True)
    assert s.elector is not None and s.elector.is_leader
    lease = await client.get("coordination.k8s.io/v1/leases", "kube-scheduler", namespace="kube-system")
    assert lease["spec"]["holderIdentity"] == s.elector.identity
    await client.create("v1/pods", pod("led"))
    assert await wait_bound(client, "led") == "n1"


async def test_preemption_by_priority_class_spares_pdb_protected_pods(client, scheduler):
    await add_nodes(client, node("n1", cpu="1"), node("n2", cpu="1"))
    await client.create("scheduling.k8s.io/v1/priorityclasses", {
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "critical"},
        "value": 100000})
    pdb = await client.create("policy/v1/poddisruptionbudgets", {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}})
    pdb["status"] = {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1,
                     "observedGeneration": 1}
    await client.update_status("policy/v1/poddisruptionbudgets", pdb)
    await scheduler()
    await client.create("v1/pods", pod("db", cpu="800m", labels={"app": "db"}, nodeName="n1"))
    await client.create("v1/pods", pod("batch", cpu="800m", labels={"app": "batch"}, nodeName="n2"))
    await client.create("v1/pods", pod("urgent", cpu="800m", priorityClassName="critical"))

    async def nominated():
        p = await client.get("v1/pods", "urgent", namespace="default")
        return (p.get("status") or {}).get("nominatedNodeName")
    assert await eventually(nominated) == "n2"
    db = await client.get("v1/pods", "db", namespace="default")
    assert not db["metadata"].get("deletionTimestamp")
