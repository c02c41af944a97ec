"""The ReplicaSet loop with a fake API: slow start, expectations, the ReplicaFailure condition."""

from __future__ import annotations

import pytest

from pinnace.client import InformerFactory, Invalid
from pinnace.controllers.replicaset import ReplicaSetController


class FakeClient:
    def __init__(self, fail_after: int | None = None) -> None:
        self.creates = 0
        self.fail_after = fail_after
        self.patches: list[dict] = []

    async def create(self, resource, obj, namespace=None):
        self.creates += 1
        if self.fail_after is not None and self.creates > self.fail_after:
            raise Invalid("pods is forbidden: exceeded quota")
        return {**obj, "metadata": {**obj["metadata"], "name": f"p{self.creates}"}}

    async def patch(self, resource, name, patch, **kwargs):
        self.patches.append(patch)
        return patch


RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
      "metadata": {"name": "rs", "namespace": "default", "uid": "u1", "generation": 2},
      "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "a"}},
               "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}}}


def controller(client: FakeClient) -> ReplicaSetController:
    rs = ReplicaSetController(client, InformerFactory(client))  # type: ignore[arg-type]
    rs.ensure_setup()
    return rs


async def test_creates_the_difference_once():
    client = FakeClient()
    rs = controller(client)
    assert await rs.manage_replicas(RS, []) is None
    assert client.creates == 10
    assert not rs.expectations.satisfied("default/rs")  # the 10 pods are not in the cache yet
    for _ in range(10):
        rs.expectations.creation_observed("default/rs")
    assert rs.expectations.satisfied("default/rs")


async def test_slow_start_stops_at_the_first_failing_batch_and_reports_it():
    client = FakeClient(fail_after=2)
    rs = controller(client)
    failure = await rs.manage_replicas(RS, [])
    assert isinstance(failure, Invalid)
    assert client.creates == 3  # batch 1 succeeds, batch 2 has a failure, batches 4 and 3 never run
    rs.expectations.creation_observed("default/rs", 2)  # the two pods that were made show up
    assert rs.expectations.satisfied("default/rs")  # failed and skipped creates are not waited for
    await rs.update_status(RS, [], str(failure))
    status = client.patches[-1]["status"]
    (condition,) = status["conditions"]
    assert condition["type"] == "ReplicaFailure" and condition["reason"] == "FailedCreate"
    assert "exceeded quota" in condition["message"] and status["observedGeneration"] == 2


@pytest.mark.parametrize("count", [0, 3])
async def test_status_counts(count):
    client = FakeClient()
    rs = controller(client)
    pods = [{"metadata": {"name": f"p{i}", "labels": {"app": "a"}},
             "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}} for i in range(count)]
    await rs.update_status(RS, pods, None)
    status = client.patches[-1]["status"]
    assert status["replicas"] == status["readyReplicas"] == status["availableReplicas"] == count
    assert status["fullyLabeledReplicas"] == count


def test_events_per_object_are_capped_like_kubernetes_spam_filter():
    class Recorder:
        def __init__(self):
            self.events = []

        def event(self, obj, type_, reason, message):
            self.events.append(message)

    recorder = Recorder()
    rs = ReplicaSetController(FakeClient(), InformerFactory(FakeClient()), recorder)  # type: ignore[arg-type]
    owner = {**RS, "metadata": {**RS["metadata"], "uid": "spam-test"}}
    for i in range(30):
        rs.record(owner, "Normal", "SuccessfulCreate", f"Created pod: p{i}")
    rs.record(owner, "Warning", "FailedCreate", "Error creating: quota")
    assert len(recorder.events) == 26  # 25 of one reason, and the other reason still gets through
