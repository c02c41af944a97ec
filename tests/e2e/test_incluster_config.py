"""A pod reaches the API server with its projected ServiceAccount token, as in-cluster clients do.

The whole path is real: the ServiceAccount admission adds the `kube-api-access-*` volume, a node agent
holding a node's certificate (so NodeRestriction applies) fetches a token bound to the pod and writes
it next to `ca.crt` and `namespace`, the container gets `KUBERNETES_SERVICE_HOST`/`PORT`, and the
proxy's iptables rules carry `10.43.0.1:443` to the API server's node address. The official Python
client's `load_incluster_config()` then lists pods, allowed or refused by RBAC.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys

import psutil
import pytest

from pinnace.apiserver.security import issue_node_credentials
from pinnace.client import Client, Forbidden
from pinnace.kubelet.agent import Kubelet
from pinnace.kubelet.testing import container, kubelet_config, pod, stop_and_clean, wait_for
from pinnace.proxy.proxier import Proxy, ProxyConfig


def node_address() -> str | None:
    """This host's first non-loopback IPv4 address: what a pod can reach the API server on."""
    for name, addresses in psutil.net_if_addrs().items():
        if name == "lo" or name.startswith(("pn", "veth", "docker", "cni")):
            continue
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


NODE_ADDRESS = node_address()
LIST_PODS = (
    "from kubernetes import client, config; config.load_incluster_config(); "
    "print('pods:', len(client.CoreV1Api().list_namespaced_pod('default').items))"
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables-restore"),
                       reason="needs root (pod network namespaces, bind mounts) and iptables"),
    pytest.mark.skipif(NODE_ADDRESS is None, reason="no non-loopback IPv4 address for pods to reach"),
    # Pods cannot reach the host's loopback: the server listens on every address and its `kubernetes`
    # endpoints carry the node's (what `pinnace up` does as root).
    pytest.mark.parametrize("api_server", [{"bind_address": "0.0.0.0", "advertise_address": NODE_ADDRESS}],
                            indirect=True),
]


@pytest.fixture
async def node(api_server, client, tmp_path):
    """A node agent with its own node credentials, and the service proxy in iptables mode."""
    config = kubelet_config(tmp_path / "node")
    cert, key = await issue_node_credentials(api_server, config.node_name, tmp_path / "pki")
    node_client = Client(api_server.url, ca_file=str(api_server.ca_path), cert_file=str(cert), key_file=str(key))
    kubelet = Kubelet(node_client, config)
    proxy = Proxy(client, ProxyConfig(mode="iptables", node_name=config.node_name, healthz_port=None))
    try:
        await proxy.start()
        await kubelet.start()
        yield kubelet
    finally:
        try:
            await stop_and_clean(kubelet)
        finally:
            await proxy.stop()
            await proxy.cleanup()
            await node_client.close()


async def cluster_basics(client, api_server) -> None:
    """What the controller manager would have made: the `default` ServiceAccount and the CA ConfigMap."""
    await client.create("v1/serviceaccounts", {"metadata": {"name": "default", "namespace": "default"}})
    await client.create("v1/configmaps", {"metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
                                          "data": {"ca.crt": api_server.ca_path.read_text()}})


async def finished(client, node, name: str, **spec) -> tuple[str, str]:
    await client.create("v1/pods", pod(name, [container("c", sys.executable, "-c", LIST_PODS)],
                                       nodeName=node.node_name, restartPolicy="Never", **spec))
    done = await wait_for(client, name, lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), timeout=25)
    log = await client.get_subresource("v1/pods", name, "log", namespace="default", decode=False)
    return done["status"]["phase"], log.decode() if isinstance(log, bytes) else str(log)


async def test_pod_lists_pods_with_its_token_only_once_rbac_allows(client, api_server, node):
    endpoints = await client.get("v1/endpoints", "kubernetes", namespace="default")
    assert endpoints["subsets"][0]["addresses"] == [{"ip": NODE_ADDRESS}]
    await cluster_basics(client, api_server)

    # Without service links a container still gets KUBERNETES_SERVICE_HOST/PORT, as in Kubernetes.
    phase, log = await finished(client, node, "denied", enableServiceLinks=False)
    assert phase == "Failed", log
    assert "(403)" in log and 'system:serviceaccount:default:default' in log, log

    await client.create("rbac.authorization.k8s.io/v1/roles", {
        "metadata": {"name": "pod-reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
    })
    await client.create("rbac.authorization.k8s.io/v1/rolebindings", {
        "metadata": {"name": "default-reads-pods", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
    })
    phase, log = await finished(client, node, "allowed")
    assert phase == "Succeeded", log
    assert "pods: 2" in log.splitlines(), log  # "denied" and itself

    # The node may ask for tokens of its own pods only (NodeRestriction).
    await client.create("v1/pods", pod("elsewhere", [container("c", "sleep", "1")], nodeName="another-node"))
    elsewhere = await client.get("v1/pods", "elsewhere", namespace="default")
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": "elsewhere", "uid": elsewhere["metadata"]["uid"]}}}
    with pytest.raises(Forbidden, match="scheduled on a different node"):
        await node.client.post_subresource("v1/serviceaccounts", "default", "token", request, namespace="default")
    with pytest.raises(Forbidden, match="not bound to a pod"):
        await node.client.post_subresource("v1/serviceaccounts", "default", "token",
                                           {**request, "spec": {}}, namespace="default")
