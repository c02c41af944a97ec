"""ReplicaSets and Deployments against a real API server, with the node double playing the nodes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.integration.node_double import Cluster, deployment, eventually, start_cluster, stop_cluster

from pinnace.controllers.rollout import REVISION


@pytest.fixture
async def cluster(client):
    cluster = await start_cluster(client, controllers=["replicaset", "replicationcontroller", "deployment"])
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


async def rollout_done(cluster: Cluster, name: str, replicas: int) -> dict | None:
    d = await cluster.client.get("apps/v1/deployments", name, namespace="default")
    status = d.get("status") or {}
    if (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas") == replicas and status.get("availableReplicas") == replicas
            and status.get("replicas") == replicas):
        return d
    return None


async def replica_sets(cluster: Cluster, name: str) -> list[dict]:
    return (await cluster.client.list("apps/v1/replicasets", namespace="default", label_selector=f"app={name}"))["items"]


async def test_replicaset_creates_replaces_and_adopts(cluster: Cluster):
    client = cluster.client
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "rs"}},
              "spec": {"containers": [{"name": "c", "image": "x"}]}}
    await client.create("v1/pods", orphan, namespace="default")
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "rs"}},
                   "template": {"metadata": {"labels": {"app": "rs"}},
                                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    await client.create("apps/v1/replicasets", rs, namespace="default")

    async def three_ready():
        r = await client.get("apps/v1/replicasets", "rs", namespace="default")
        s = r.get("status") or {}
        return s.get("readyReplicas") == 3 and s.get("availableReplicas") == 3 and s.get("observedGeneration") == 1
    await eventually(three_ready)
    pods = await cluster.pods(selector="app=rs")
    assert len(pods) == 3
    assert "orphan" in {p["metadata"]["name"] for p in pods}  # adopted, not duplicated
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)

    # A deleted pod is replaced.
    await client.delete("v1/pods", "orphan", namespace="default")
    await eventually(lambda: _names_without(cluster, "app=rs", "orphan", 3))

    # A pod whose labels stop matching is released, and replaced.
    victim = (await cluster.pods(selector="app=rs"))[0]["metadata"]["name"]
    await client.patch("v1/pods", victim, {"metadata": {"labels": {"app": "other"}}}, namespace="default")

    async def released():
        pod = await client.get("v1/pods", victim, namespace="default")
        return not pod["metadata"].get("ownerReferences") and len(await cluster.pods(selector="app=rs")) == 3
    await eventually(released)

    # Scale down removes surplus pods.
    await client.patch("apps/v1/replicasets", "rs", {"spec": {"replicas": 1}}, namespace="default")
    await eventually(lambda: _count(cluster, "app=rs", 1))


async def _names_without(cluster: Cluster, selector: str, name: str, count: int) -> bool:
    pods = [p for p in await cluster.pods(selector=selector) if not p["metadata"].get("deletionTimestamp")]
    return len(pods) == count and name not in {p["metadata"]["name"] for p in pods}


async def _count(cluster: Cluster, selector: str, count: int) -> bool:
    pods = [p for p in await cluster.pods(selector=selector) if not p["metadata"].get("deletionTimestamp")]
    return len(pods) == count


async def test_replication_controller(cluster: Cluster):
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
          "spec": {"replicas": 2, "selector": {"app": "rc"},
                   "template": {"metadata": {"labels": {"app": "rc"}},
                                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    await cluster.client.create("v1/replicationcontrollers", rc, namespace="default")

    async def ready():
        r = await cluster.client.get("v1/replicationcontrollers", "rc", namespace="default")
        return (r.get("status") or {}).get("readyReplicas") == 2
    await eventually(ready)


async def test_deployment_rolls_out_updates_without_unavailability_and_rolls_back(cluster: Cluster):
    client = cluster.client
    spec = {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}}}
    await client.create("apps/v1/deployments", deployment("web", 10, "app:1", **spec), namespace="default")
    first = await eventually(lambda: rollout_done(cluster, "web", 10), timeout=30)
    assert first["metadata"]["annotations"][REVISION] == "1"
    (rs1,) = await replica_sets(cluster, "web")
    template_hash = rs1["metadata"]["labels"]["pod-template-hash"]
    assert rs1["metadata"]["name"] == f"web-{template_hash}"
    available = next(c for c in first["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"

    # Watch readiness continuously while the template changes: never fewer than 10 ready pods.
    lowest = 10
    stop = asyncio.Event()

    async def observe():
        nonlocal lowest
        while not stop.is_set():
            pods = await cluster.pods(selector="app=web")
            ready = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp") and any(
                c["type"] == "Ready" and c["status"] == "True" for c in (p.get("status") or {}).get("conditions") or ()))
            lowest = min(lowest, ready)
            await asyncio.sleep(0.02)

    observer = asyncio.create_task(observe())
    try:
        await client.patch("apps/v1/deployments", "web",
                           {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "app:2"}]}}}},
                           namespace="default", patch_type="strategic")
        second = await eventually(lambda: rollout_done(cluster, "web", 10), timeout=40)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await observer
    assert lowest >= 10
    assert second["metadata"]["annotations"][REVISION] == "2"
    sets = {rs["metadata"]["name"]: rs for rs in await replica_sets(cluster, "web")}
    assert sets[rs1["metadata"]["name"]]["spec"]["replicas"] == 0
    pods = await cluster.pods(selector="app=web")
    assert {p["spec"]["containers"][0]["image"] for p in pods if not p["metadata"].get("deletionTimestamp")} == {"app:2"}

    # Rollback the way `kubectl rollout undo` does: put the old template back (without the hash label).
    old_template = sets[rs1["metadata"]["name"]]["spec"]["template"]
    old_template["metadata"]["labels"].pop("pod-template-hash")
    await client.patch("apps/v1/deployments", "web", [{"op": "replace", "path": "/spec/template", "value": old_template}],
                       namespace="default", patch_type="json")
    third = await eventually(lambda: rollout_done(cluster, "web", 10), timeout=40)
    assert third["metadata"]["annotations"][REVISION] == "3"
    sets = {rs["metadata"]["name"]: rs for rs in await replica_sets(cluster, "web")}
    assert len(sets) == 2  # the old ReplicaSet was re-used, not re-made
    assert sets[rs1["metadata"]["name"]]["metadata"]["annotations"][REVISION] == "3"
    assert sets[rs1["metadata"]["name"]]["spec"]["replicas"] == 10


async def test_recreate_scale_and_pause(cluster: Cluster):
    client = cluster.client
    await client.create("apps/v1/deployments", deployment("re", 3, strategy={"type": "Recreate"}), namespace="default")
    await eventually(lambda: rollout_done(cluster, "re", 3), timeout=30)
    await client.patch("apps/v1/deployments", "re",
                       {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "app:2"}]}}}},
                       namespace="default", patch_type="strategic")
    await eventually(lambda: rollout_done(cluster, "re", 3), timeout=30)
    await client.patch("apps/v1/deployments", "re", {"spec": {"replicas": 5}}, namespace="default",
                       subresource="scale")
    await eventually(lambda: rollout_done(cluster, "re", 5), timeout=30)

    # Paused: template changes wait; resuming rolls them out.
    await client.patch("apps/v1/deployments", "re", {"spec": {"paused": True}}, namespace="default")
    await client.patch("apps/v1/deployments", "re",
                       {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "app:3"}]}}}},
                       namespace="default", patch_type="strategic")

    async def paused_condition():
        d = await client.get("apps/v1/deployments", "re", namespace="default")
        progressing = next((c for c in (d.get("status") or {}).get("conditions") or () if c["type"] == "Progressing"), {})
        return progressing.get("reason") == "DeploymentPaused"
    await eventually(paused_condition)
    assert len(await replica_sets(cluster, "re")) == 2
    await client.patch("apps/v1/deployments", "re", {"spec": {"paused": False}}, namespace="default")
    await eventually(lambda: rollout_done(cluster, "re", 5), timeout=30)
    assert len(await replica_sets(cluster, "re")) == 3


async def test_progress_deadline_exceeded(client):
    # No node agents: pods never become ready, so the rollout cannot progress.
    from pinnace.controllers.manager import ControllerManager

    manager = ControllerManager(client, controllers=["replicaset", "deployment"], leader_elect=False)
    await manager.start()
    try:
        await client.create("apps/v1/deployments", deployment("stuck", 1, progressDeadlineSeconds=1),
                            namespace="default")

        async def timed_out():
            d = await client.get("apps/v1/deployments", "stuck", namespace="default")
            progressing = next((c for c in (d.get("status") or {}).get("conditions") or ()
                                if c["type"] == "Progressing"), {})
            return progressing.get("reason") == "ProgressDeadlineExceeded" and progressing.get("status") == "False"
        await eventually(timed_out, timeout=15)
    finally:
        await manager.stop()


async def test_rollover_and_revision_history_limit(cluster: Cluster):
    client = cluster.client
    await client.create("apps/v1/deployments", deployment("roll", 4, revisionHistoryLimit=1), namespace="default")
    await eventually(lambda: rollout_done(cluster, "roll", 4), timeout=30)
    for image in ("app:2", "app:3"):  # the second change lands mid-rollout: everything else becomes old
        await client.patch("apps/v1/deployments", "roll",
                           {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": image}]}}}},
                           namespace="default", patch_type="strategic")
    done = await eventually(lambda: rollout_done(cluster, "roll", 4), timeout=40)
    assert done["metadata"]["annotations"][REVISION] == "3"
    pods = [p for p in await cluster.pods(selector="app=roll") if not p["metadata"].get("deletionTimestamp")]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"app:3"}

    async def trimmed():
        sets = await replica_sets(cluster, "roll")
        return len(sets) == 2  # the new one plus revisionHistoryLimit=1 old one
    await eventually(trimmed)


async def test_scaling_mid_rollout_is_proportional(cluster: Cluster):
    client = cluster.client
    spec = {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}}
    await client.create("apps/v1/deployments", deployment("prop", 10, "app:1", **spec), namespace="default")
    await eventually(lambda: rollout_done(cluster, "prop", 10), timeout=30)
    cluster.nodes.set_binding(False)  # new pods stay Pending: the rollout stalls half-way
    await client.patch("apps/v1/deployments", "prop",
                       {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "app:2"}]}}}},
                       namespace="default", patch_type="strategic")

    async def stalled():
        sizes = sorted(rs["spec"]["replicas"] for rs in await replica_sets(cluster, "prop"))
        return sizes if sizes == [5, 8] else None  # 13 pods in all (10 + surge 3), 8 old ones still available
    await eventually(stalled)
    await client.patch("apps/v1/deployments", "prop", {"spec": {"replicas": 20}}, namespace="default",
                       subresource="scale")

    async def spread():
        sizes = sorted(rs["spec"]["replicas"] for rs in await replica_sets(cluster, "prop"))
        return sizes if sum(sizes) == 23 else None  # 20 + maxSurge 3
    sizes = await eventually(spread)
    assert sizes == [9, 14]  # 5 and 8 scaled by 23/13, each keeping its share
    cluster.nodes.set_binding(True)
    await eventually(lambda: rollout_done(cluster, "prop", 20), timeout=40)
