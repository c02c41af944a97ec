"""Identities: ServiceAccount tokens from TokenRequest used through the official client's in-cluster
config, bound-token revocation, and NodeRestriction for node credentials."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes
import pytest
from kubernetes.config.incluster_config import InClusterConfigLoader
from tests.integration.security_users import cert_kubeconfig, kubectl_as

from pinnace.apiserver.security import issue_node_credentials

SETUP = """
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: lister, namespace: apps}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-lister, namespace: apps}
rules: [{apiGroups: [""], resources: [pods], verbs: [list, get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lister, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-lister}
subjects: [{kind: ServiceAccount, name: lister, namespace: apps}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: apps}
spec:
  serviceAccountName: lister
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""


def _in_cluster_api(api_server, tmp_path: Path, token: str) -> kubernetes.client.CoreV1Api:
    """What `load_incluster_config()` does in a pod, with the projected files written here."""
    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(token)
    (mount / "ca.crt").write_bytes(api_server.ca_path.read_bytes())
    (mount / "namespace").write_text("apps")
    host, port = api_server.url.removeprefix("https://").rsplit(":", 1)
    configuration = kubernetes.client.Configuration()
    InClusterConfigLoader(
        token_filename=str(mount / "token"), cert_filename=str(mount / "ca.crt"),
        environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
    ).load_and_set(configuration)
    return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))


def test_pod_bound_token_with_the_official_in_cluster_client(api_server, kubectl, tmp_path: Path) -> None:
    applied = kubectl("apply", "-f", "-", input=SETUP)
    assert applied.returncode == 0, applied.stderr
    pod = json.loads(kubectl("get", "pod", "client", "-n", "apps", "-o", "json").stdout)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"expirationSeconds": 3600,
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "client",
                                           "uid": pod["metadata"]["uid"]}}}
    created = kubectl("create", "--raw", "/api/v1/namespaces/apps/serviceaccounts/lister/token", "-f", "-",
                      input=json.dumps(request))
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["status"]["token"]
    header, claims = (json.loads(__import__("base64").urlsafe_b64decode(part + "==")) for part in token.split(".")[:2])
    assert header["alg"] == "ES256"
    assert claims["sub"] == "system:serviceaccount:apps:lister"
    assert claims["kubernetes.io"]["pod"] == {"name": "client", "uid": pod["metadata"]["uid"]}
    assert claims["exp"] - claims["iat"] == 3600

    api = _in_cluster_api(api_server, tmp_path, token)
    pods = api.list_namespaced_pod("apps")
    assert [p.metadata.name for p in pods.items] == ["client"]
    with pytest.raises(kubernetes.client.ApiException) as denied:
        api.list_namespaced_pod("default")
    assert denied.value.status == 403
    assert 'User \\"system:serviceaccount:apps:lister\\" cannot list resource \\"pods\\"' in denied.value.body or \
        'User "system:serviceaccount:apps:lister" cannot list resource "pods"' in denied.value.body

    # TokenReview agrees; deleting the pod revokes the bound token.
    review = kubectl("create", "--raw", "/apis/authentication.k8s.io/v1/tokenreviews", "-f", "-", input=json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}))
    assert review.returncode == 0, review.stderr
    status = json.loads(review.stdout)["status"]
    assert status["authenticated"] and status["user"]["username"] == "system:serviceaccount:apps:lister"
    assert kubectl("delete", "pod", "client", "-n", "apps", "--grace-period=0", "--force").returncode == 0
    with pytest.raises(kubernetes.client.ApiException) as revoked:
        api.list_namespaced_pod("apps")
    assert revoked.value.status == 401


def test_kubectl_create_token_and_whoami(api_server, kubectl, tmp_path: Path) -> None:
    assert kubectl("create", "serviceaccount", "bot").returncode == 0
    token = kubectl("create", "token", "bot", "--duration=15m")
    assert token.returncode == 0, token.stderr
    from tests.integration.security_users import token_kubeconfig

    bot = kubectl_as(token_kubeconfig(api_server, tmp_path, "bot", token.stdout.strip()), tmp_path)
    whoami = bot("auth", "whoami")
    assert "system:serviceaccount:default:bot" in whoami.stdout and "system:serviceaccounts:default" in whoami.stdout
    too_short = kubectl("create", "token", "bot", "--duration=1m")
    assert too_short.returncode != 0 and "may not specify a duration less than 10 minutes" in too_short.stderr
    assert bot("get", "pods").returncode != 0  # no binding: authenticated, then refused
    assert kubectl("delete", "serviceaccount", "bot").returncode == 0
    assert "Unauthorized" in bot("get", "pods").stderr  # the account is gone: so is the token


NODES = """
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: n2, namespace: kube-node-lease}
spec: {holderIdentity: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: on-n2, namespace: default}
spec:
  nodeName: n2
  containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""


def test_node_restriction(api_server, kubectl, tmp_path: Path) -> None:
    import asyncio

    assert kubectl("apply", "-f", "-", input=NODES).returncode == 0
    cert, key = asyncio.run(issue_node_credentials(api_server, "n1", tmp_path / "pki"))
    assert cert.exists() and key.exists()
    n1 = kubectl_as(cert_kubeconfig(api_server, tmp_path, "system:node:n1", ("system:nodes",)), tmp_path)
    own = n1("apply", "-f", "-", input="apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {a: b}}\n")
    assert own.returncode == 0, own.stderr
    assert n1("label", "node", "n1", "zone=z1").returncode == 0
    other = n1("label", "node", "n2", "zone=z1")
    assert other.returncode != 0 and 'node "n1" is not allowed to modify node "n2"' in other.stderr
    assert "forbidden" in n1("delete", "node", "n2").stderr  # RBAC: nodes never delete Nodes
    lease = n1("apply", "-f", "-", input="apiVersion: coordination.k8s.io/v1\nkind: Lease\n"
                                          "metadata: {name: n1, namespace: kube-node-lease}\nspec: {holderIdentity: n1}\n")
    assert lease.returncode == 0, lease.stderr
    stolen = n1("patch", "lease", "n2", "-n", "kube-node-lease", "--type=merge", "-p", '{"spec":{"holderIdentity":"n1"}}')
    assert "can only access node lease with the same name" in stolen.stderr
    status = n1("patch", "pod", "on-n2", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Failed"}}')
    assert 'node "n1" can only update pods with spec.nodeName set to itself' in status.stderr
    created = n1("run", "sneaky", "--image=busybox", "--overrides", '{"spec":{"nodeName":"n1"}}')
    assert "can only create mirror pods" in created.stderr
    # The same rules hold for the other node, and an admin is not restricted.
    assert kubectl("label", "node", "n1", "checked=yes").returncode == 0
