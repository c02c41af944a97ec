"""Leader election, the event recorder and the Controller base against the in-memory API server."""

import asyncio
import contextlib

import pytest

from pinnace.client import Client, Controller, EventRecorder, InformerFactory, LeaderElector

from .fake_apiserver import FakeApiServer
from .test_informer import pod, until

FAST = {"lease_duration": 1.5, "renew_deadline": 1.0, "retry_period": 0.1}


async def test_one_leader_among_three_and_failover_on_release(fake_client: Client):
    leading: dict[str, int] = {}

    def work(name):
        async def lead():
            leading[name] = leading.get(name, 0) + 1
            await asyncio.Event().wait()
        return lead

    electors = [LeaderElector(fake_client, "test", namespace="default", identity=f"c{i}", **FAST) for i in range(3)]
    tasks = {e.identity: asyncio.ensure_future(e.run(work(e.identity))) for e in electors}
    try:
        await until(lambda: sum(e.is_leader for e in electors) == 1)
        await asyncio.sleep(0.5)
        assert sum(e.is_leader for e in electors) == 1
        first = next(e for e in electors if e.is_leader)
        tasks[first.identity].cancel()  # a clean stop releases the lease: a successor takes over at once
        with contextlib.suppress(asyncio.CancelledError):
            await tasks[first.identity]
        loop = asyncio.get_running_loop()
        start = loop.time()
        await until(lambda: any(e.is_leader for e in electors if e is not first))
        assert loop.time() - start < FAST["lease_duration"]
        lease = await fake_client.get("coordination.k8s.io/v1/leases", "test", "default")
        assert lease["spec"]["holderIdentity"] != first.identity
        assert lease["spec"]["leaseTransitions"] >= 1
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_leader_cut_off_from_the_server_stops_before_the_lease_expires(fake_api: FakeApiServer):
    # Two clients; the leader's one can be broken independently by pointing it at a dead port.
    leader_client = Client(fake_api.url, qps=None, max_retries=0)
    other_client = Client(fake_api.url, qps=None, max_retries=0)
    stopped_at = None
    loop = asyncio.get_running_loop()

    def on_stopped():
        nonlocal stopped_at
        stopped_at = loop.time()

    leader = LeaderElector(leader_client, "cut", namespace="default", identity="leader",
                           on_stopped_leading=on_stopped, **FAST)
    other = LeaderElector(other_client, "cut", namespace="default", identity="other", **FAST)
    work_cancelled = asyncio.Event()

    async def lead():
        try:
            await asyncio.Event().wait()
        finally:
            work_cancelled.set()

    leader_task = asyncio.ensure_future(leader.run(lead))
    await until(lambda: leader.is_leader)
    other_task = asyncio.ensure_future(other.run())
    try:
        await asyncio.sleep(0.3)
        leader_client.server = "http://127.0.0.1:9"  # the leader loses its connection
        cut_at = loop.time()
        await until(lambda: other.is_leader, timeout=5)
        took_over_at = loop.time()
        assert work_cancelled.is_set()
        assert stopped_at is not None and stopped_at < took_over_at
        assert took_over_at - cut_at <= FAST["lease_duration"] + 2 * FAST["retry_period"] + 0.5
    finally:
        for task in (leader_task, other_task):
            task.cancel()
        await asyncio.gather(leader_task, other_task, return_exceptions=True)
        await leader_client.close()
        await other_client.close()


async def test_leader_election_rejects_inconsistent_timings(fake_client: Client):
    with pytest.raises(ValueError):
        LeaderElector(fake_client, "x", lease_duration=1, renew_deadline=2, retry_period=0.5)


async def test_repeated_events_are_aggregated(fake_api: FakeApiServer, fake_client: Client):
    recorder = EventRecorder(fake_client, component="scheduler", host="h")
    target = await fake_client.create("v1/pods", pod("p"))
    for _ in range(3):
        recorder.event(target, "Warning", "FailedScheduling", "0/3 nodes are available")
    recorder.event(target, "Normal", "Scheduled", "Successfully assigned default/p to n1")
    await recorder.flush()
    events = [o for (r, _, _), o in fake_api.objects.items() if r == "v1/events"]
    assert len(events) == 2
    failed = next(e for e in events if e["reason"] == "FailedScheduling")
    assert failed["count"] == 3
    assert failed["involvedObject"] == {"kind": "Pod", "apiVersion": "v1", "namespace": "default", "name": "p",
                                        "uid": target["metadata"]["uid"],
                                        "resourceVersion": target["metadata"]["resourceVersion"]}
    assert failed["source"] == {"component": "scheduler", "host": "h"}
    assert failed["metadata"]["namespace"] == "default"
    assert failed["lastTimestamp"] >= failed["firstTimestamp"]
    await recorder.close()


async def test_event_recreated_when_the_aggregated_one_was_deleted(fake_api: FakeApiServer, fake_client: Client):
    recorder = EventRecorder(fake_client, component="c")
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n1", "uid": "u"}}
    recorder.event(node, "Normal", "Ready", "node is ready")
    await recorder.flush()
    [(key, event)] = [(k, o) for k, o in fake_api.objects.items() if k[0] == "v1/events"]
    assert event["metadata"]["namespace"] == "default"  # cluster-scoped objects' events live in default
    del fake_api.objects[key]
    recorder.event(node, "Normal", "Ready", "node is ready")
    await recorder.flush()
    assert [o["count"] for k, o in fake_api.objects.items() if k[0] == "v1/events"] == [1]
    await recorder.close()


async def test_many_different_messages_are_combined(fake_api: FakeApiServer, fake_client: Client):
    recorder = EventRecorder(fake_client, component="c")
    target = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default", "uid": "u"}}
    for i in range(15):
        recorder.event(target, "Warning", "BackOff", f"attempt {i}")
    await recorder.flush()
    events = [o for k, o in fake_api.objects.items() if k[0] == "v1/events"]
    assert len(events) == 10
    combined = [e for e in events if e["message"].startswith("(combined from similar events)")]
    assert len(combined) == 1 and combined[0]["count"] == 6
    await recorder.close()


async def test_event_outside_a_loop_is_dropped_quietly(fake_client: Client):
    recorder = EventRecorder(fake_client, component="c")
    await asyncio.to_thread(recorder.event, {"metadata": {"name": "x"}}, "Normal", "R", "m")


class EchoController(Controller):
    name = "echo"
    watches = ("v1/pods",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reconciled: list[str] = []
        self.failures_left = 3

    async def reconcile(self, key: str) -> None:
        if key == "default/flaky" and self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("transient")
        self.reconciled.append(key)


async def test_controller_reconciles_keys_and_retries_failures(fake_client: Client, caplog):
    factory = InformerFactory(fake_client)
    controller = EchoController(fake_client, factory, workers=2)
    await fake_client.create("v1/pods", pod("a"))
    task = asyncio.ensure_future(controller.run())
    try:
        await until(lambda: "default/a" in controller.reconciled)
        assert controller.pods.get("default/a") is not None  # `watches` made an informer attribute
        await fake_client.create("v1/pods", pod("flaky"))
        await until(lambda: "default/flaky" in controller.reconciled)
        assert controller.failures_left == 0
        assert caplog.text.count("reconciling default/flaky failed") == 1  # logged once, not per retry
        assert controller.queue.num_requeues("default/flaky") == 0  # forgotten after success
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await factory.stop()


async def test_spam_filter_drops_a_runaway_loop(fake_api: FakeApiServer, fake_client: Client):
    recorder = EventRecorder(fake_client, component="c", spam_burst=5)
    target = {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "default", "uid": "u"}}
    for _ in range(20):
        recorder.event(target, "Warning", "BackOff", "restarting")
    await recorder.flush()
    [event] = [o for k, o in fake_api.objects.items() if k[0] == "v1/events"]
    assert event["count"] == 5
    assert recorder.dropped == 15
    await recorder.close()


async def test_controller_enqueue_helpers(fake_client: Client):
    controller = EchoController(fake_client, InformerFactory(fake_client))
    child = pod("child")
    child["metadata"]["ownerReferences"] = [
        {"kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": True},
        {"kind": "Deployment", "name": "d", "uid": "u2"},
    ]
    controller.enqueue_owner(child, "ReplicaSet")
    controller.enqueue_owner(child, "Deployment")  # not the controller: ignored
    controller.enqueue(child)
    controller.enqueue("default/child")  # deduplicated
    assert controller.queue.queued() == ["default/rs", "default/child"]
    controller.enqueue_after("default/later", 0.01)
    await until(lambda: "default/later" in controller.queue.queued())
    controller.queue.shutdown()
