"""RBAC through real kubectl: per-role allow/deny tables for users (client certificates, static
tokens) and ServiceAccounts, `kubectl auth can-i [--list]`, `kubectl auth whoami`, escalation."""

from __future__ import annotations

from pathlib import Path

from tests.integration.security_users import cert_kubeconfig, kubectl_as, token_kubeconfig

from pinnace.apiserver.security import load_token_file

TOKENS = "token-bob,bob,uid-bob,\"devs,qa\"\n"


def _token_file(tmp: Path) -> str:
    path = tmp / "tokens.csv"
    path.write_text(TOKENS)
    return str(path)


SETUP = """
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-edit, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: devs-view, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: Group, name: devs, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: team}
rules:
- {apiGroups: [""], resources: [pods, pods/log], verbs: [get, list]}
- {apiGroups: [""], resources: [configmaps], resourceNames: [allowed], verbs: [get]}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: robot-reads, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: robot, namespace: team}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: carol-admin}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: User, name: carol, apiGroup: rbac.authorization.k8s.io}]
"""

# (who, verb, resource, namespace flag, expected "yes"/"no")
CAN_I = [
    ("alice", "create", "deployments", "team", "yes"),
    ("alice", "delete", "secrets", "team", "yes"),
    ("alice", "list", "pods", "default", "no"),
    ("alice", "create", "roles", "team", "no"),  # edit holds no RBAC rights
    ("alice", "list", "nodes", None, "no"),
    ("bob", "list", "pods", "default", "yes"),  # through group devs
    ("bob", "get", "secrets", "default", "no"),  # view never reads secrets
    ("bob", "create", "pods", "default", "no"),
    ("robot", "get", "pods", "team", "yes"),
    ("robot", "get", "pods/log", "team", "yes"),
    ("robot", "delete", "pods", "team", "no"),
    ("robot", "get", "configmaps/allowed", "team", "yes"),
    ("robot", "get", "configmaps/other", "team", "no"),
    ("carol", "delete", "nodes", None, "yes"),
    ("nobody", "get", "pods", "default", "no"),
]


def test_role_tables_through_kubectl(api_server, kubectl, tmp_path: Path) -> None:
    api_server.security.static_tokens.update(load_token_file(_token_file(tmp_path)))
    applied = kubectl("apply", "-f", "-", input=SETUP)
    assert applied.returncode == 0, applied.stderr
    token = kubectl("create", "token", "robot", "-n", "team")
    assert token.returncode == 0, token.stderr
    users = {
        "alice": kubectl_as(cert_kubeconfig(api_server, tmp_path, "alice"), tmp_path),
        "bob": kubectl_as(token_kubeconfig(api_server, tmp_path, "bob", "token-bob"), tmp_path),
        "robot": kubectl_as(token_kubeconfig(api_server, tmp_path, "robot", token.stdout.strip()), tmp_path),
        "carol": kubectl_as(cert_kubeconfig(api_server, tmp_path, "carol", ("staff",)), tmp_path),
        "nobody": kubectl_as(cert_kubeconfig(api_server, tmp_path, "nobody"), tmp_path),
    }
    failures = []
    for who, verb, resource, namespace, expected in CAN_I:
        args = ["auth", "can-i", verb, resource] + (["-n", namespace] if namespace else [])
        result = users[who](*args)
        if result.stdout.strip() != expected:
            failures.append((who, verb, resource, namespace, expected, result.stdout.strip(), result.stderr.strip()))
    assert not failures

    # The real requests agree with can-i, and a 403 names user, verb and resource as Kubernetes does.
    denied = users["alice"]("get", "pods", "-n", "default")
    assert denied.returncode != 0
    assert 'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default"' in denied.stderr
    assert users["alice"]("create", "configmap", "c1", "-n", "team", "--from-literal=a=b").returncode == 0
    assert users["bob"]("get", "configmaps", "-n", "default").returncode == 0
    created = users["bob"]("create", "configmap", "c2", "-n", "default")
    assert "cannot create resource \"configmaps\"" in created.stderr
    assert users["robot"]("get", "pods", "-n", "team").returncode == 0
    assert 'User "system:serviceaccount:team:robot" cannot delete resource "pods"' in users["robot"](
        "delete", "pod", "x", "-n", "team").stderr
    nodes = users["nobody"]("get", "nodes")
    assert 'nodes is forbidden: User "nobody" cannot list resource "nodes" in API group "" at the cluster scope' in nodes.stderr



def test_whoami_and_can_i_list(api_server, kubectl, tmp_path: Path) -> None:
    setup = """
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: default}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dana-cm, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects: [{kind: User, name: dana, apiGroup: rbac.authorization.k8s.io}]
"""
    assert kubectl("apply", "-f", "-", input=setup).returncode == 0
    dana = kubectl_as(cert_kubeconfig(api_server, tmp_path, "dana", ("testers",)), tmp_path)
    whoami = dana("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = __import__("json").loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == "dana" and "testers" in info["groups"] and "system:authenticated" in info["groups"]
    listed = dana("auth", "can-i", "--list", "-n", "default")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.splitlines()]
    assert ["configmaps", "[]", "[]", "[get", "list]"] in lines
    assert not any(line and line[0] == "pods" for line in lines)
    admin_whoami = kubectl("auth", "whoami")
    assert "system:admin" in admin_whoami.stdout and "system:masters" in admin_whoami.stdout
    # SubjectAccessReview as the admin, and impersonation with --as.
    assert kubectl("auth", "can-i", "list", "configmaps", "--as=dana").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "list", "secrets", "--as=dana").stdout.strip() == "no"
    refused = dana("get", "pods", "--as=system:admin")
    assert refused.returncode != 0 and "Forbidden" in refused.stderr


def test_escalation_is_prevented_and_bind_allows_it(api_server, kubectl, tmp_path: Path) -> None:
    setup = """
apiVersion: v1
kind: Namespace
metadata: {name: proj}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: erin-admin, namespace: proj}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: User, name: erin, apiGroup: rbac.authorization.k8s.io}]
"""
    assert kubectl("apply", "-f", "-", input=setup).returncode == 0
    erin = kubectl_as(cert_kubeconfig(api_server, tmp_path, "erin"), tmp_path)
    # erin is admin in proj: she may hand out edit there (she holds all of it) ...
    ok = erin("create", "rolebinding", "frank-edit", "--clusterrole=edit", "--user=frank", "-n", "proj")
    assert ok.returncode == 0, ok.stderr
    # ... but not cluster-admin, and not a Role with rights she lacks (nodes are cluster-wide).
    escalate = erin("create", "rolebinding", "frank-root", "--clusterrole=cluster-admin", "--user=frank", "-n", "proj")
    assert escalate.returncode != 0
    assert "is attempting to grant RBAC permissions not currently held" in escalate.stderr
    role = erin("create", "role", "nodes", "--verb=get", "--resource=nodes", "-n", "proj")
    assert "attempting to grant RBAC permissions not currently held" in role.stderr
    # The `bind` verb on a role lets a user grant it without holding it.
    grant = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: bind-cluster-admin}
rules: [{apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], verbs: [bind], resourceNames: [cluster-admin]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: erin-binds, namespace: proj}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: bind-cluster-admin}
subjects: [{kind: User, name: erin, apiGroup: rbac.authorization.k8s.io}]
"""
    assert kubectl("apply", "-f", "-", input=grant).returncode == 0
    again = erin("create", "rolebinding", "frank-root", "--clusterrole=cluster-admin", "--user=frank", "-n", "proj")
    assert again.returncode == 0, again.stderr
    # Revocation is immediate: deleting erin's binding takes her rights away on the next request.
    assert erin("get", "rolebindings", "-n", "proj").returncode == 0
    assert kubectl("delete", "rolebinding", "erin-admin", "-n", "proj").returncode == 0
    assert "forbidden" in erin("get", "rolebindings", "-n", "proj").stderr


def test_aggregated_cluster_roles_pick_up_labelled_rules(api_server, kubectl, tmp_path: Path) -> None:
    extra = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: nodes-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: gina-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: User, name: gina, apiGroup: rbac.authorization.k8s.io}]
"""
    assert kubectl("apply", "-f", "-", input=extra).returncode == 0
    # view aggregates into edit and admin too, as in Kubernetes.
    assert kubectl("auth", "can-i", "list", "nodes", "--as=gina").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "nodes", "--as=gina").stdout.strip() == "no"
    assert kubectl("auth", "can-i", "list", "nodes", "--as=someone").stdout.strip() == "no"
    # Removing the label takes the rules out of view again.
    assert kubectl("label", "clusterrole", "nodes-view", "rbac.authorization.k8s.io/aggregate-to-view-").returncode == 0
    assert kubectl("auth", "can-i", "list", "nodes", "--as=gina").stdout.strip() == "no"
