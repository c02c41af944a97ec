"""The review APIs (authentication.k8s.io, authorization.k8s.io) in discovery, as kubectl sees them:
`kubectl api-resources` lists them (aggregated discovery, v2 for kubectl 1.32, v2beta1 for 1.27), and
`kubectl auth can-i` / `kubectl auth whoami` still work with them listed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from tests.integration.security_users import cert_kubeconfig, kubectl_as

from pinnace.apiserver.discovery import AGGREGATED_TYPES

REVIEWS = {
    "authentication.k8s.io/v1": {"tokenreviews": ("false", "TokenReview"),
                                 "selfsubjectreviews": ("false", "SelfSubjectReview")},
    "authorization.k8s.io/v1": {"subjectaccessreviews": ("false", "SubjectAccessReview"),
                                "selfsubjectaccessreviews": ("false", "SelfSubjectAccessReview"),
                                "selfsubjectrulesreviews": ("false", "SelfSubjectRulesReview"),
                                "localsubjectaccessreviews": ("true", "LocalSubjectAccessReview")},
}


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("version", ["1.32", "1.27"])
def test_kubectl_api_resources_lists_the_review_groups(kubectl, version):
    for group_version, resources in REVIEWS.items():
        group = group_version.split("/")[0]
        out = ok(kubectl("api-resources", f"--api-group={group}", "-o", "wide", version=version))
        rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
        assert set(rows) == set(resources), out
        for name, (namespaced, kind) in resources.items():
            row = rows[name]
            assert row[1] == group_version and row[2] == namespaced and row[3] == kind, row
            assert row[4].strip("[]") == "create", row
    # the verbs filter sees them too; `get` never lists a create-only kind
    assert "tokenreviews" in ok(kubectl("api-resources", "--verbs=create", version=version))
    assert "tokenreviews" not in ok(kubectl("api-resources", "--verbs=get", version=version))


@pytest.mark.parametrize("version", ["1.32", "1.27"])
def test_kubectl_auth_still_works(api_server, kubectl, tmp_path: Path, version):
    assert ok(kubectl("auth", "can-i", "create", "pods", version=version)).strip() == "yes"
    assert "*.*" in ok(kubectl("auth", "can-i", "--list", "-n", "default", version=version))
    if version == "1.32":  # SelfSubjectReview: whoami is new in kubectl 1.27 as alpha, beta later
        assert "system:masters" in ok(kubectl("auth", "whoami", version=version))
    alice = kubectl_as(cert_kubeconfig(api_server, tmp_path, "alice", ("devs",)), tmp_path)
    refused = alice("auth", "can-i", "create", "pods")
    assert refused.returncode == 1 and refused.stdout.strip() == "no"
    assert "alice" in ok(alice("auth", "whoami"))
    assert "selfsubjectaccessreviews.authorization.k8s.io" in ok(alice("auth", "can-i", "--list"))
    assert "tokenreviews" in ok(alice("api-resources", "--api-group=authentication.k8s.io"))


async def test_aggregated_documents_over_http(api_server, client):
    """Both aggregated versions, with their exact Content-Type, carry the review groups."""
    import aiohttp

    headers = {"Authorization": f"Bearer {api_server.admin_token}"}
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        for content_type in AGGREGATED_TYPES.values():
            async with session.get(f"{api_server.url}/apis", headers={"Accept": content_type}) as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == content_type
                body = orjson.loads(await response.read())
            items = {i["metadata"]["name"]: i for i in body["items"]}
            for group_version, resources in REVIEWS.items():
                group = group_version.split("/")[0]
                [served] = items[group]["versions"]
                assert {r["resource"] for r in served["resources"]} == set(resources)
            async with session.get(f"{api_server.url}/apis") as response:
                legacy = orjson.loads(await response.read())
            assert [g["name"] for g in legacy["groups"]] == list(items)
