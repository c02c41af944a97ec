"""The proxy against a real API server: Services and EndpointSlices written through the API.

iptables mode runs as root inside network namespaces the tests create; the EndpointSlices are
written by the tests themselves (keeping them is the controllers' job, not exercised here).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import aiohttp
import pytest

from pinnace.proxy.netns_lab import Lab
from pinnace.proxy.proxier import USERSPACE_PORTS_ANNOTATION, Proxy, ProxyConfig

PORT = 8080
root_only = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables-restore"),
                               reason="needs root and iptables")


def service(name, selector=None, **spec):
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": PORT, "protocol": "TCP"}],
                 **({"selector": selector} if selector else {}), **spec},
    }


def endpoint_slice(service_name, ips, ready=None, name=None):
    ready = ready if ready is not None else [True] * len(ips)
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service_name}-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": r}, "nodeName": "node-a"}
                      for ip, r in zip(ips, ready, strict=True)],
        "ports": [{"name": "http", "port": PORT, "protocol": "TCP"}],
    }


async def put_slice(client, eps):
    try:
        current = await client.get("discovery.k8s.io/v1/endpointslices", eps["metadata"]["name"], namespace="default")
    except Exception:
        return await client.create("discovery.k8s.io/v1/endpointslices", eps)
    eps = {**eps, "metadata": {**eps["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}}
    return await client.update("discovery.k8s.io/v1/endpointslices", eps)


async def applied(proxy, name, ips, timeout=5.0):
    """Wait until the proxy has programmed exactly these ready endpoint IPs for `name`; seconds taken."""
    started = time.monotonic()
    while True:
        ready = {e.ip for sp in proxy.service_ports if sp.name == name for e in sp.ready_endpoints}
        found = any(sp.name == name for sp in proxy.service_ports)
        if found and ready == set(ips):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"{name}: programmed {ready}, want {set(ips)}"
        await asyncio.sleep(0.01)


@pytest.fixture
async def lab_proxy(client):
    lab = Lab.create(backends=3)
    proxy = Proxy(client, ProxyConfig(mode="iptables", node_name="node-a", netns=lab.node, healthz_port=0))
    try:
        lab.serve(PORT)
        await proxy.start()
        yield lab, proxy
    finally:
        try:
            await proxy.stop()
            await proxy.cleanup()
        finally:
            lab.close()


@root_only
async def test_iptables_mode_end_to_end(client, lab_proxy):
    lab, proxy = lab_proxy
    blue, green = lab.backend_ips[:2], lab.backend_ips[2:]
    svc = await client.create("v1/services", service("web", selector={"app": "web", "version": "blue"}))
    cluster_ip = svc["spec"]["clusterIP"]
    await put_slice(client, endpoint_slice("web", blue))
    await applied(proxy, "web", blue)
    result = lab.run_client(lab.client, "connect", cluster_ip, "80", "40")
    assert result["errors"] == 0 and set(result["counts"]) == set(blue)

    # Readiness failure: the endpoint leaves the rotation within a second of the slice changing.
    await put_slice(client, endpoint_slice("web", blue, ready=[True, False]))
    assert await applied(proxy, "web", blue[:1]) < 1.0
    result = lab.run_client(lab.client, "connect", cluster_ip, "80", "20")
    assert result["counts"] == {blue[0]: 20}

    # Blue/green: the selector moves to green; the (test-written) slice follows, as the controller would.
    svc["spec"]["selector"] = {"app": "web", "version": "green"}
    await client.update("v1/services", svc)
    await put_slice(client, endpoint_slice("web", green))
    await applied(proxy, "web", green)
    result = lab.run_client(lab.client, "connect", cluster_ip, "80", "20")
    assert result["counts"] == {green[0]: 20}

    # No ready endpoint: refused at once.
    await put_slice(client, endpoint_slice("web", green, ready=[False]))
    await applied(proxy, "web", [])
    result = lab.run_client(lab.client, "connect", cluster_ip, "80", "2")
    assert result["counts"] == {"ConnectionRefusedError": 2}


@root_only
async def test_selector_less_service_with_user_written_endpoints(client, lab_proxy):
    lab, proxy = lab_proxy
    outside = lab.backend_ips[1]  # stands for an address outside the cluster
    svc = await client.create("v1/services", service("external-db", type="NodePort"))
    await client.create("v1/endpoints", {
        "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external-db", "namespace": "default"},
        "subsets": [{"addresses": [{"ip": outside}], "ports": [{"name": "http", "port": PORT}]}],
    })
    await applied(proxy, "external-db", [outside])
    result = lab.run_client(lab.client, "connect", svc["spec"]["clusterIP"], "80", "5")
    assert result["counts"] == {outside: 5}
    node_port = svc["spec"]["ports"][0]["nodePort"]
    result = lab.run_client(lab.node, "connect", lab.node_ip, str(node_port), "5")
    assert result["counts"] == {outside: 5}

    host, port = proxy.healthz_address
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://{host}:{port}/healthz") as response:
            assert response.status == 200
        async with session.get(f"http://{host}:{port}/metrics") as response:
            assert 'pinnace_proxy_rules{mode="iptables"}' in await response.text()


async def identity_servers(ips):
    async def identity(reader, writer):
        writer.write(writer.get_extra_info("sockname")[0].encode())
        await writer.drain()
        writer.close()

    servers = [await asyncio.start_server(identity, ips[0], 0)]
    port = servers[0].sockets[0].getsockname()[1]
    servers += [await asyncio.start_server(identity, ip, port) for ip in ips[1:]]
    return servers, port


async def fetch(address):
    reader, writer = await asyncio.open_connection(*address)
    try:
        return (await reader.read(100)).decode()
    finally:
        writer.close()


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare to drop privileges")
async def test_userspace_mode_as_an_unprivileged_user(client, kubeconfig):
    """`pinnace proxy` as uid nobody (a user namespace without privileges on the host): userspace mode,
    with each service port on a loopback port published in the Service's annotation."""
    backends = ["127.0.0.2", "127.0.0.3"]
    servers, port = await identity_servers(backends)
    prefix = ["unshare", "--user", "--map-user=65534", "--map-group=65534"] if os.geteuid() == 0 else []
    proc = await asyncio.create_subprocess_exec(
        *prefix, sys.executable, "-m", "pinnace.cli.main", "proxy", "--kubeconfig", str(kubeconfig),
        "--healthz-port", "0", "--min-sync-interval", "0.2", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"proxy running in userspace mode" in line, line + await proc.stderr.read(2000)
        await client.create("v1/services", service("web"))
        eps = endpoint_slice("web", backends)
        eps["ports"][0]["port"] = port
        await put_slice(client, eps)
        deadline = time.monotonic() + 10
        while True:
            svc = await client.get("v1/services", "web", namespace="default")
            annotation = (svc["metadata"].get("annotations") or {}).get(USERSPACE_PORTS_ANNOTATION)
            if annotation:
                break
            assert time.monotonic() < deadline, "no userspace port published"
            await asyncio.sleep(0.1)
        host, relay_port = json.loads(annotation)["http/TCP"].rsplit(":", 1)
        seen = set()
        deadline = time.monotonic() + 5
        while len(seen) < len(backends) and time.monotonic() < deadline:
            try:
                seen.add(await fetch((host, int(relay_port))))
            except ConnectionRefusedError:  # the port is published before the slice reached the proxy
                await asyncio.sleep(0.05)
        assert seen == set(backends)
        await put_slice(client, endpoint_slice("web", backends, ready=[False, False]) | {"ports": eps["ports"]})
        deadline = time.monotonic() + 2
        while True:  # refused (not hanging) once the proxy has seen the change
            try:
                _, writer = await asyncio.open_connection(host, int(relay_port))
            except ConnectionRefusedError:
                break
            writer.close()
            assert time.monotonic() < deadline, "connections still accepted without ready endpoints"
            await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        await proc.wait()
        for s in servers:
            s.close()
