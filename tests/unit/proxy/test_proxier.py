"""Proxy wiring with fake informers: syncing on events, batching, health, userspace port annotations."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from pinnace.proxy.model import build_service_ports
from pinnace.proxy.proxier import USERSPACE_PORTS_ANNOTATION, Proxy, ProxyConfig


class FakeInformer:
    def __init__(self):
        self.items = {}
        self.handlers = []

    def add_handler(self, on_add=None, on_update=None, on_delete=None):
        self.handlers.append((on_add, on_update, on_delete))

    def list(self):
        return list(self.items.values())

    def get(self, key):
        return self.items.get(key)

    def put(self, obj):
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        old = self.items.get(key)
        self.items[key] = obj
        for on_add, on_update, _ in self.handlers:
            on_update(old, obj) if old else on_add(obj)


class FakeFactory:
    def __init__(self):
        self.informers = {}

    def informer(self, resource):
        return self.informers.setdefault(resource, FakeInformer())

    async def start(self):
        pass

    async def wait_synced(self):
        pass

    async def stop(self):
        pass


class FakeClient:
    def __init__(self, factory):
        self.factory = factory
        self.patches = []

    async def patch(self, resource, name, patch, namespace=None, patch_type=None):
        self.patches.append((name, patch))
        informer = self.factory.informer(resource)
        obj = json.loads(json.dumps(informer.get(f"{namespace}/{name}")))
        obj["metadata"].setdefault("annotations", {}).update(patch["metadata"]["annotations"])
        informer.put(obj)
        return obj


def service(name="web", cluster_ip="10.43.0.5", **spec):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": cluster_ip, "ports": [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}}


def endpoint_slice(service_name, ips, ready=True):
    return {
        "metadata": {"name": f"{service_name}-x", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


@pytest.fixture
async def proxy():
    factory = FakeFactory()
    client = FakeClient(factory)
    proxy = Proxy(client, ProxyConfig(mode="userspace", healthz_port=0, min_sync_interval=0.2), factory=factory)
    factory.informer("v1/services").put(service())
    factory.informer("discovery.k8s.io/v1/endpointslices").put(endpoint_slice("web", ["127.0.0.2"]))
    await proxy.start()
    yield proxy
    await proxy.stop()


async def eventually(predicate, timeout=2.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_publishes_userspace_ports_annotation_once(proxy):
    await eventually(lambda: proxy.client.patches)
    annotation = proxy.services.get("default/web")["metadata"]["annotations"][USERSPACE_PORTS_ANNOTATION]
    host, port = json.loads(annotation)["http/TCP"].rsplit(":", 1)
    assert (host, int(port)) == proxy.backend.addresses()["default/web:http/TCP"]
    await asyncio.sleep(0.5)
    assert len(proxy.client.patches) == 1  # the echo of our own patch changes nothing


async def test_readiness_change_is_applied_promptly_and_batched(proxy):
    before = proxy.sync_count
    slices = proxy.factory.informer("discovery.k8s.io/v1/endpointslices")
    for ip in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
        slices.put(endpoint_slice("web", [ip]))
    await eventually(lambda: proxy.backend.relays["default/web:http/TCP"].balancer.endpoints[0].ip == "127.0.0.5",
                     timeout=1.0)
    assert proxy.sync_count - before <= 2  # three events, at most two syncs


async def test_healthz_and_metrics(proxy):
    host, port = proxy.healthz_address
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["mode"] == "userspace"
        async with session.get(f"http://{host}:{port}/metrics") as response:
            text = await response.text()
    assert "pinnace_proxy_sync_total" in text and "pinnace_proxy_last_sync_timestamp_seconds" in text
    assert 'pinnace_proxy_rules{mode="userspace"} 1' in text


def test_selector_less_service_falls_back_to_endpoints_when_no_slice_exists():
    endpoints = {"metadata": {"name": "ext", "namespace": "default"},
                 "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "notReadyAddresses": [{"ip": "192.0.2.11"}],
                              "ports": [{"name": "http", "port": 443, "protocol": "TCP"}]}]}
    [sp] = build_service_ports([service("ext")], [], [endpoints])
    assert [(e.ip, e.port, e.ready) for e in sp.endpoints] == [("192.0.2.10", 443, True), ("192.0.2.11", 443, False)]
    [sp] = build_service_ports([service("ext")], [endpoint_slice("ext", ["192.0.2.12"])], [endpoints])
    assert [e.ip for e in sp.endpoints] == ["192.0.2.12"]  # slices win when present


def test_headless_and_external_name_services_are_not_proxied():
    assert build_service_ports([service("h", cluster_ip="None"),
                                {"metadata": {"name": "e", "namespace": "default"},
                                 "spec": {"type": "ExternalName", "externalName": "example.com"}}], []) == []
