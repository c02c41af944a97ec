"""Leader election between two processes, and event aggregation, against a real API server."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator

import pytest

from pinnace.apiserver.server import ApiServer, ServerConfig
from pinnace.client import Client, EventRecorder

LEASE = {"lease_duration": 2.0, "renew_deadline": 1.4, "retry_period": 0.25}

CANDIDATE = """
import asyncio, signal, sys
from pinnace.client import Client, LeaderElector

# A shell that started the test run in the background leaves SIGINT ignored, and children inherit that:
# Ctrl-C must reach this candidate whatever started the run.
signal.signal(signal.SIGINT, signal.default_int_handler)

async def main(kubeconfig, identity, lease_duration, renew_deadline, retry_period):
    client = await Client.from_kubeconfig(kubeconfig)

    async def lead():
        print("LEADING", identity, flush=True)
        await asyncio.Event().wait()

    elector = LeaderElector(client, "failover-test", namespace="default", identity=identity,
                            lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period,
                            on_stopped_leading=lambda: print("STOPPED", identity, flush=True))
    print("READY", identity, flush=True)
    await elector.run(lead)

kubeconfig, identity, *timings = sys.argv[1:]
asyncio.run(main(kubeconfig, identity, *map(float, timings)))
"""


@pytest.fixture
async def server() -> AsyncIterator[ApiServer]:
    with tempfile.TemporaryDirectory(prefix="pinnace-client-") as data_dir:
        api = ApiServer(ServerConfig(data_dir=data_dir, port=0, bind_address="127.0.0.1"))
        await api.start()
        try:
            yield api
        finally:
            await api.stop()


class Candidate:
    def __init__(self, process: asyncio.subprocess.Process, identity: str) -> None:
        self.process = process
        self.identity = identity
        self.lines: list[tuple[float, str]] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await self.process.stdout.readline():
            self.lines.append((loop.time(), line.decode().strip()))

    def said(self, word: str) -> float | None:
        return next((t for t, line in self.lines if line.startswith(word)), None)

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.returncode is None:
            self.process.send_signal(sig)
            await self.process.wait()
        await self.reader


async def start_candidate(server: ApiServer, identity: str) -> Candidate:
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CANDIDATE, str(server.kubeconfig_path), identity,
        *(str(LEASE[k]) for k in ("lease_duration", "renew_deadline", "retry_period")),
        stdout=asyncio.subprocess.PIPE, env=env)
    return Candidate(process, identity)


async def until(condition, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_leader_failover_between_processes_within_lease_duration_plus_retry(server: ApiServer):
    first = await start_candidate(server, "first")
    await until(lambda: first.said("LEADING") is not None)
    second = await start_candidate(server, "second")
    try:
        await until(lambda: second.said("READY") is not None)
        await asyncio.sleep(LEASE["lease_duration"] + 0.5)
        assert second.said("LEADING") is None  # one leader at a time
        await first.kill()  # no chance to release the lease
        killed_at = asyncio.get_running_loop().time()
        await until(lambda: second.said("LEADING") is not None)
        took = second.said("LEADING") - killed_at
        assert took <= LEASE["lease_duration"] + LEASE["retry_period"] + 0.5, took
    finally:
        await first.kill()
        await second.kill()


async def test_graceful_stop_hands_over_at_once(server: ApiServer):
    first = await start_candidate(server, "first")
    await until(lambda: first.said("LEADING") is not None)
    second = await start_candidate(server, "second")
    try:
        await until(lambda: second.said("READY") is not None)
        await asyncio.sleep(0.3)
        await first.kill(signal.SIGINT)  # asyncio.run cancels the elector, which releases the lease
        stopped_at = asyncio.get_running_loop().time()
        await until(lambda: second.said("LEADING") is not None)
        assert second.said("LEADING") - stopped_at < LEASE["lease_duration"]
        assert first.said("STOPPED") is not None
    finally:
        await first.kill()
        await second.kill()


async def test_events_are_aggregated_as_kubectl_describe_shows_them(server: ApiServer):
    client = await Client.from_kubeconfig(server.kubeconfig_path)
    recorder = EventRecorder(client, component="scheduler")
    try:
        target = await client.create("v1/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ev", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}})
        for _ in range(4):
            recorder.event(target, "Warning", "FailedScheduling", "0/1 nodes are available")
        recorder.event(target, "Normal", "Scheduled", "Successfully assigned default/ev to n1")
        await recorder.flush()
        events = (await client.list("v1/events", namespace="default",
                                    field_selector="involvedObject.name=ev"))["items"]
        by_reason = {e["reason"]: e for e in events}
        assert len(events) == 2
        assert by_reason["FailedScheduling"]["count"] == 4
        assert by_reason["Scheduled"]["count"] == 1
        failed = by_reason["FailedScheduling"]
        assert failed["involvedObject"]["uid"] == target["metadata"]["uid"]
        assert failed["source"]["component"] == "scheduler"
        assert failed["type"] == "Warning"
        assert failed["firstTimestamp"] <= failed["lastTimestamp"]
    finally:
        await recorder.close()
        await client.close()
