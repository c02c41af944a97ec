"""What users do with kubectl works because the controllers keep status and history current."""

from __future__ import annotations

import asyncio

import pytest
from tests.integration.node_double import deployment, eventually, start_cluster, stop_cluster


@pytest.fixture
async def cluster(client):
    cluster = await start_cluster(client, controllers=["replicaset", "deployment", "garbagecollector"])
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


async def run(kubectl, *args: str, timeout: float = 60):
    # kubectl blocks; the controllers run on this event loop, so kubectl runs in a thread.
    result = await asyncio.to_thread(kubectl, *args, timeout=timeout)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


async def test_rollout_status_history_undo_scale(cluster, kubectl):
    client = cluster.client
    body = deployment("web", 3, "app:1")
    body["metadata"]["annotations"] = {"kubernetes.io/change-cause": "first"}
    await client.create("apps/v1/deployments", body, namespace="default")
    out = await run(kubectl, "rollout", "status", "deployment/web", "--timeout=60s")
    assert 'deployment "web" successfully rolled out' in out

    await run(kubectl, "set", "image", "deployment/web", "main=app:2")
    await run(kubectl, "annotate", "deployment/web", "kubernetes.io/change-cause=second", "--overwrite")
    assert "successfully rolled out" in await run(kubectl, "rollout", "status", "deployment/web", "--timeout=60s")
    history = await run(kubectl, "rollout", "history", "deployment/web")
    assert "1         first" in history and "2         second" in history

    await run(kubectl, "rollout", "undo", "deployment/web")
    assert "successfully rolled out" in await run(kubectl, "rollout", "status", "deployment/web", "--timeout=60s")
    history = await run(kubectl, "rollout", "history", "deployment/web")
    lines = [line.split()[0] for line in history.splitlines()[2:] if line.strip()]
    assert lines == ["2", "3"]
    pods = [p for p in await cluster.pods(selector="app=web") if not p["metadata"].get("deletionTimestamp")]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {"app:1"}

    await run(kubectl, "scale", "deployment/web", "--replicas=5")
    assert "successfully rolled out" in await run(kubectl, "rollout", "status", "deployment/web", "--timeout=60s")
    assert len([p for p in await cluster.pods(selector="app=web") if not p["metadata"].get("deletionTimestamp")]) == 5

    await run(kubectl, "rollout", "pause", "deployment/web")
    await run(kubectl, "set", "image", "deployment/web", "main=app:3")  # waits while paused

    async def paused():
        d = await client.get("apps/v1/deployments", "web", namespace="default")
        reasons = {c["type"]: c.get("reason") for c in (d.get("status") or {}).get("conditions") or ()}
        return reasons.get("Progressing") == "DeploymentPaused"
    await eventually(paused)
    assert len((await client.list("apps/v1/replicasets", namespace="default", label_selector="app=web"))["items"]) == 2
    await run(kubectl, "rollout", "resume", "deployment/web")
    assert "successfully rolled out" in await run(kubectl, "rollout", "status", "deployment/web", "--timeout=60s")
    await run(kubectl, "rollout", "restart", "deployment/web")
    assert "successfully rolled out" in await run(kubectl, "rollout", "status", "deployment/web", "--timeout=60s")
    assert len((await client.list("apps/v1/replicasets", namespace="default", label_selector="app=web"))["items"]) == 4


async def test_delete_cascade_foreground_and_orphan(cluster, kubectl):
    client = cluster.client
    await client.create("apps/v1/deployments", deployment("fg", 2), namespace="default")
    await client.create("apps/v1/deployments", deployment("or", 2), namespace="default")
    await run(kubectl, "rollout", "status", "deployment/fg", "--timeout=60s")
    await run(kubectl, "rollout", "status", "deployment/or", "--timeout=60s")

    await run(kubectl, "delete", "deployment/fg", "--cascade=foreground", "--timeout=60s")
    assert not await cluster.pods(selector="app=fg")  # kubectl waited for the owner, which went last

    await run(kubectl, "delete", "deployment/or", "--cascade=orphan", "--timeout=60s")

    async def orphaned():
        sets = (await client.list("apps/v1/replicasets", namespace="default", label_selector="app=or"))["items"]
        return len(sets) == 1 and not sets[0]["metadata"].get("ownerReferences")
    await eventually(orphaned)
    assert len(await cluster.pods(selector="app=or")) == 2


async def test_daemonset_and_statefulset_rollouts(client, kubectl):
    cluster = await start_cluster(client, controllers=["daemonset", "statefulset"])
    try:
        labels = {"matchLabels": {"app": "agent"}}
        template = {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}
        await client.create("apps/v1/daemonsets", {"apiVersion": "apps/v1", "kind": "DaemonSet",
                                                   "metadata": {"name": "agent"},
                                                   "spec": {"selector": labels, "template": template}},
                            namespace="default")
        db_template = {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}
        await client.create("apps/v1/statefulsets", {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                                     "metadata": {"name": "db"},
                                                     "spec": {"replicas": 2, "serviceName": "db",
                                                              "selector": {"matchLabels": {"app": "db"}},
                                                              "template": db_template}},
                            namespace="default")
        for target in ("daemonset/agent", "statefulset/db"):
            out = await run(kubectl, "rollout", "status", target, "--timeout=60s")
            assert "successfully rolled out" in out or "roll out complete" in out, out
            await run(kubectl, "set", "image", target, "c=v2")
            out = await run(kubectl, "rollout", "status", target, "--timeout=60s")
            assert "successfully rolled out" in out or "roll out complete" in out, out
            history = await run(kubectl, "rollout", "history", target)
            assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
            await run(kubectl, "rollout", "undo", target)
            out = await run(kubectl, "rollout", "status", target, "--timeout=60s")
            assert "successfully rolled out" in out or "roll out complete" in out, out
        pods = [p for p in await cluster.pods() if not p["metadata"].get("deletionTimestamp")]
        assert {p["spec"]["containers"][0]["image"] for p in pods} == {"v1"}
    finally:
        await stop_cluster(cluster)
