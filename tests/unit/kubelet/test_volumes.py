"""Projected serviceAccountToken sources: the TokenRequest the node sends, reuse, refresh at 80%."""

from __future__ import annotations

import datetime

import pytest

from pinnace.kubelet import volumes
from pinnace.kubelet.volumes import VolumeError, VolumeManager


def token_pod(audience: str | None = None, seconds: int | None = 600) -> dict:
    source: dict = {"path": "token"}
    if audience:
        source["audience"] = audience
    if seconds:
        source["expirationSeconds"] = seconds
    return {
        "metadata": {"name": "p", "namespace": "team", "uid": "uid-1"},
        "spec": {"serviceAccountName": "robot", "containers": [], "volumes": [
            {"name": "kube-api-access-x", "projected": {"defaultMode": 0o644, "sources": [
                {"serviceAccountToken": source},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]}},
        ]},
    }


class FakeApi:
    """Answers TokenRequests with numbered tokens; `fail` makes the next ones fail."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        self.fail = False

    async def __call__(self, namespace: str, account: str, spec: dict) -> dict:
        self.requests.append((namespace, account, spec))
        if self.fail:
            raise VolumeError("the API server is away")
        expires = datetime.datetime.fromtimestamp(clock.now + spec["expirationSeconds"], datetime.UTC)
        return {"token": f"token-{len(self.requests)}", "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}


class Clock:
    now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


clock = Clock()


@pytest.fixture
def api(monkeypatch):
    monkeypatch.setattr(volumes.time, "time", clock.time)
    return FakeApi()


async def no_objects(resource: str, namespace: str, name: str) -> dict | None:
    return None


async def test_token_request_is_bound_to_the_pod_with_the_sources_audience_and_lifetime(api, tmp_path):
    manager = VolumeManager(tmp_path, no_objects, {}, False, request_token=api)
    pod = token_pod(audience="vault", seconds=1200)
    paths = await manager.setup(pod)
    directory = tmp_path / "pods" / "uid-1" / "volumes" / "kube-api-access-x"
    assert paths == {"kube-api-access-x": str(directory)}
    assert (directory / "token").read_text() == "token-1"
    assert (directory / "namespace").read_text() == "team"
    assert api.requests == [("team", "robot", {
        "expirationSeconds": 1200, "audiences": ["vault"],
        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "uid-1"},
    })]


async def test_token_is_reused_until_80_percent_of_its_life_then_replaced(api, tmp_path):
    manager = VolumeManager(tmp_path, no_objects, {}, False, request_token=api)
    token_file = tmp_path / "pods" / "uid-1" / "volumes" / "kube-api-access-x" / "token"
    pod = token_pod(seconds=1000)
    start = clock.now
    await manager.setup(pod)
    clock.now = start + 790
    await manager.setup(pod)
    assert (len(api.requests), token_file.read_text()) == (1, "token-1")
    clock.now = start + 810
    await manager.setup(pod)
    assert (len(api.requests), token_file.read_text()) == (2, "token-2")


async def test_failed_refresh_keeps_the_valid_token_and_an_expired_one_fails_the_mount(api, tmp_path):
    manager = VolumeManager(tmp_path, no_objects, {}, False, request_token=api)
    pod = token_pod(seconds=1000)
    start = clock.now
    await manager.setup(pod)
    api.fail = True
    clock.now = start + 900
    await manager.setup(pod)  # still valid for 100 s: kept, tried again at the next refresh
    clock.now = start + 1001
    with pytest.raises(VolumeError, match="away"):
        await manager.setup(pod)


async def test_teardown_forgets_the_pods_tokens(api, tmp_path):
    manager = VolumeManager(tmp_path, no_objects, {}, False, request_token=api)
    await manager.setup(token_pod())
    manager.teardown("uid-1")
    await manager.setup(token_pod())
    assert len(api.requests) == 2
