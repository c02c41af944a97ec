"""Jobs, DaemonSets and StatefulSets against a real server, with the node double as the nodes."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.integration.node_double import EXIT_LABEL, Cluster, eventually, start_cluster, stop_cluster

from pinnace.client import NotFound


@pytest.fixture
async def cluster(client):
    cluster = await start_cluster(client, controllers=["job", "daemonset", "statefulset", "cronjob", "disruption",
                                                       "garbagecollector"],
                                  job_backoff_base=0.05)
    try:
        yield cluster
    finally:
        await stop_cluster(cluster)


def job(name: str, exit_code: str, **spec) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {EXIT_LABEL: exit_code}},
                                  "spec": {"restartPolicy": "Never",
                                           "containers": [{"name": "c", "image": "x", "command": ["true"]}]}},
                     **spec}}


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions") or () if c["type"] == type_), {})


async def test_job_reaches_backoff_limit(cluster: Cluster):
    client = cluster.client
    await client.create("batch/v1/jobs", job("flaky", "1", backoffLimit=2), namespace="default")

    async def failed():
        j = await client.get("batch/v1/jobs", "flaky", namespace="default")
        return j if condition(j, "Failed").get("reason") == "BackoffLimitExceeded" else None
    j = await eventually(failed, timeout=20)
    assert j["status"]["failed"] == 3 and j["status"].get("active", 0) == 0


async def test_job_completions_parallel_and_indexed(cluster: Cluster):
    client = cluster.client
    await client.create("batch/v1/jobs", job("batch", "0", completions=3, parallelism=2), namespace="default")
    await client.create("batch/v1/jobs", job("indexed", "0", completions=3, parallelism=3, completionMode="Indexed"),
                        namespace="default")

    async def complete(name):
        j = await client.get("batch/v1/jobs", name, namespace="default")
        return j if condition(j, "Complete").get("status") == "True" else None
    done = await eventually(lambda: complete("batch"))
    assert done["status"]["succeeded"] == 3 and done["status"].get("completionTime")
    indexed = await eventually(lambda: complete("indexed"))
    assert indexed["status"]["completedIndexes"] == "0-2"
    pods = await cluster.pods(selector="batch.kubernetes.io/job-name=indexed")
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1", "2"]


async def test_job_deadline_and_ttl(cluster: Cluster):
    client = cluster.client
    endless = job("endless", "0", activeDeadlineSeconds=1)
    del endless["spec"]["template"]["metadata"]["labels"][EXIT_LABEL]  # runs until stopped
    await client.create("batch/v1/jobs", endless, namespace="default")
    await client.create("batch/v1/jobs", job("short-lived", "0", ttlSecondsAfterFinished=0), namespace="default")

    async def deadline_exceeded():
        j = await client.get("batch/v1/jobs", "endless", namespace="default")
        return condition(j, "Failed").get("reason") == "DeadlineExceeded"
    await eventually(deadline_exceeded, timeout=15)

    async def collected():
        try:
            await client.get("batch/v1/jobs", "short-lived", namespace="default")
        except NotFound:
            return True
        return False
    await eventually(collected, timeout=15)


async def test_cronjob_runs_a_missed_schedule(cluster: Cluster):
    client = cluster.client
    cronjob = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
               "spec": {"schedule": "* * * * *", "suspend": True, "jobTemplate": job("x", "0")}}
    cronjob["spec"]["jobTemplate"].pop("apiVersion")
    cronjob["spec"]["jobTemplate"].pop("kind")
    await client.create("batch/v1/cronjobs", cronjob, namespace="default")
    import datetime as dt
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await client.patch("batch/v1/cronjobs", "tick", {"status": {"lastScheduleTime": earlier}}, namespace="default",
                       subresource="status")
    await client.patch("batch/v1/cronjobs", "tick", {"spec": {"suspend": False}}, namespace="default")

    async def ran():
        jobs = (await client.list("batch/v1/jobs", namespace="default"))["items"]
        mine = [j for j in jobs if j["metadata"]["name"].startswith("tick-")]
        c = await client.get("batch/v1/cronjobs", "tick", namespace="default")
        return len(mine) == 1 and (c.get("status") or {}).get("lastScheduleTime", "") > earlier
    await eventually(ran, timeout=15)


async def test_daemonset_follows_nodes(cluster: Cluster):
    client = cluster.client
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}},
                                "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    await client.create("apps/v1/daemonsets", ds, namespace="default")

    async def on_nodes(expected):
        pods = [p for p in await cluster.pods(selector="app=agent") if not p["metadata"].get("deletionTimestamp")]
        d = await client.get("apps/v1/daemonsets", "agent", namespace="default")
        return sorted(p["spec"]["nodeName"] for p in pods) == expected and (
            d.get("status") or {}).get("numberReady") == len(expected)
    await eventually(lambda: on_nodes(["node-1", "node-2"]))
    await cluster.nodes.add_node("node-3")
    await eventually(lambda: on_nodes(["node-1", "node-2", "node-3"]))
    await cluster.nodes.remove_node("node-2")
    await eventually(lambda: on_nodes(["node-1", "node-3"]))

    # A template change rolls through the nodes.
    await client.patch("apps/v1/daemonsets", "agent",
                       {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "y"}]}}}},
                       namespace="default", patch_type="strategic")

    async def updated():
        d = await client.get("apps/v1/daemonsets", "agent", namespace="default")
        pods = [p for p in await cluster.pods(selector="app=agent") if not p["metadata"].get("deletionTimestamp")]
        return (d.get("status") or {}).get("updatedNumberScheduled") == 2 and (
            {p["spec"]["containers"][0]["image"] for p in pods} == {"y"} and len(pods) == 2)
    await eventually(updated)
    revisions = (await client.list("apps/v1/controllerrevisions", namespace="default"))["items"]
    assert sorted(r["revision"] for r in revisions if r["metadata"]["name"].startswith("agent-")) == [1, 2]


async def test_statefulset_scales_in_order(cluster: Cluster):
    client = cluster.client
    events: list[tuple[str, str]] = []
    listing = await client.list("v1/pods", namespace="default")

    async def watch():
        async for kind, pod in client.watch("v1/pods", namespace="default", label_selector="app=db",
                                            resource_version=listing["metadata"]["resourceVersion"]):
            if kind in ("ADDED", "DELETED"):
                events.append((kind, pod["metadata"]["name"]))

    watcher = asyncio.create_task(watch())
    try:
        sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
               "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
        await client.create("apps/v1/statefulsets", sts, namespace="default")

        async def ready(count):
            s = await client.get("apps/v1/statefulsets", "db", namespace="default")
            return (s.get("status") or {}).get("readyReplicas") == count and (s.get("status") or {}).get("replicas") == count
        await eventually(lambda: ready(3))
        pod = await client.get("v1/pods", "db-1", namespace="default")
        assert pod["spec"]["hostname"] == "db-1" and pod["spec"]["subdomain"] == "db"
        await client.patch("apps/v1/statefulsets", "db", {"spec": {"replicas": 1}}, namespace="default")
        await eventually(lambda: ready(1))
        await eventually(lambda: _deleted(events, 2))

        # A rolling update replaces the remaining pod with the new revision.
        await client.patch("apps/v1/statefulsets", "db",
                           {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "y"}]}}}},
                           namespace="default", patch_type="strategic")

        async def rolled():
            s = await client.get("apps/v1/statefulsets", "db", namespace="default")
            status = s.get("status") or {}
            return status.get("updatedReplicas") == 1 and status.get("readyReplicas") == 1 and (
                status.get("currentRevision") == status.get("updateRevision"))
        await eventually(rolled)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert [name for kind, name in events if kind == "ADDED"][:3] == ["db-0", "db-1", "db-2"]
    assert [name for kind, name in events if kind == "DELETED"][:2] == ["db-2", "db-1"]
    with contextlib.suppress(NotFound):
        await client.delete("apps/v1/statefulsets", "db", namespace="default")


async def _deleted(events, count):
    return sum(1 for kind, _ in events if kind == "DELETED") >= count


async def test_pod_disruption_budget_status(cluster: Cluster):
    client = cluster.client
    for i in range(3):
        await client.create("v1/pods", {"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": f"guarded-{i}", "labels": {"app": "guarded"}},
                                        "spec": {"containers": [{"name": "c", "image": "x"}]}}, namespace="default")
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guard"},
           "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}}}
    await client.create("policy/v1/poddisruptionbudgets", pdb, namespace="default")

    async def allowed():
        p = await client.get("policy/v1/poddisruptionbudgets", "guard", namespace="default")
        status = p.get("status") or {}
        return status.get("currentHealthy") == 3 and status.get("disruptionsAllowed") == 1
    await eventually(allowed)


async def test_statefulset_claims_and_partitioned_update(cluster: Cluster):
    client = cluster.client
    claim = {"metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kv"},
           "spec": {"replicas": 2, "serviceName": "kv", "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": {"app": "kv"}}, "volumeClaimTemplates": [claim],
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                    "template": {"metadata": {"labels": {"app": "kv"}},
                                 "spec": {"containers": [{"name": "c", "image": "v1"}]}}}}
    await client.create("apps/v1/statefulsets", sts, namespace="default")

    async def ready(updated=None):
        s = await client.get("apps/v1/statefulsets", "kv", namespace="default")
        status = s.get("status") or {}
        return status.get("readyReplicas") == 2 and (updated is None or status.get("updatedReplicas") == updated)
    await eventually(ready)
    claims = (await client.list("v1/persistentvolumeclaims", namespace="default"))["items"]
    assert sorted(c["metadata"]["name"] for c in claims) == ["data-kv-0", "data-kv-1"]
    pod = await client.get("v1/pods", "kv-0", namespace="default")
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-kv-0"}} in pod["spec"]["volumes"]

    await client.patch("apps/v1/statefulsets", "kv",
                       {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}},
                       namespace="default", patch_type="strategic")
    await eventually(lambda: ready(updated=1))
    images = {p["metadata"]["name"]: p["spec"]["containers"][0]["image"]
              for p in await cluster.pods(selector="app=kv") if not p["metadata"].get("deletionTimestamp")}
    assert images == {"kv-0": "v1", "kv-1": "v2"}  # below the partition stays at the old revision
