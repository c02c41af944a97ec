"""Bad input, tried and survived: generated requests against a real server.

Each test drives one kind of bad input with hypothesis and asserts what a client must always get:
an answer within seconds (no hang), never a 500, and for every rejection a proper `Status` body
whose `code` is the HTTP status. The budget is bounded for CI (`PINNACE_FUZZ_EXAMPLES`, default 120
examples per kind, about a minute in all); a longer run is the same suite with a larger number:

    PINNACE_FUZZ_EXAMPLES=5000 pytest --timeout 0 tests/integration/test_security_fuzz.py

(each watch example waits up to a second, so long runs need pytest-timeout lifted). What earlier
runs found stays pinned in `test_regressions_found_by_fuzzing`.
"""

from __future__ import annotations

import json
import os
import string
from collections import Counter
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("PINNACE_FUZZ_EXAMPLES", "120"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
TIMEOUT = 10  # seconds: any request slower than this counts as a hang
TRIED: Counter[str] = Counter()

JSON_LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30)
JSON = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=25)
NAMES = st.text(alphabet=string.ascii_letters + string.digits + "-._~%:/ \u00e9\x00", min_size=0, max_size=70)

MANIFESTS: dict[str, tuple[str, dict]] = {
    "pods": ("/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fz", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"],
                                 "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80}]}]}}),
    "configmaps": ("/api/v1/namespaces/default/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fz"}, "data": {"k": "v"}}),
    "deployments": ("/apis/apps/v1/namespaces/default/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "fz"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    "services": ("/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "fz"},
        "spec": {"selector": {"a": "b"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    "roles": ("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "fz"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    "secrets": ("/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fz"}, "data": {"k": "dg=="}}),
}


@pytest.fixture
def http(api_server) -> Any:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise override the cluster CA
    session.verify = str(api_server.ca_path)
    session.headers["Authorization"] = f"Bearer {api_server.admin_token}"
    base = api_server.url

    def call(method: str, path: str, kind: str, **kwargs: Any) -> requests.Response:
        TRIED[kind] += 1
        try:
            response = session.request(method, base + path, timeout=TIMEOUT, **kwargs)
        except requests.exceptions.Timeout:
            pytest.fail(f"{kind}: no answer in {TIMEOUT}s to {method} {path}")
        check(response, f"{kind}: {method} {path}")
        return response

    yield call
    session.close()


def check(response: requests.Response, what: str) -> None:
    assert response.status_code != 500 and response.status_code < 600, f"{what} -> {response.status_code}: {response.text[:500]}"
    if response.status_code >= 400 and response.request.method != "HEAD":  # HEAD answers carry no body
        try:
            status = response.json()
        except ValueError:
            pytest.fail(f"{what} -> {response.status_code} without a JSON Status: {response.text[:300]!r}")
        assert status.get("kind") == "Status" and status.get("code") == response.status_code, f"{what}: {status}"
        assert status.get("status") == "Failure" and isinstance(status.get("message", ""), str), f"{what}: {status}"


def mutate(base: Any, path: list, value: Any) -> Any:
    """`base` with the value at `path` (followed as far as it exists) replaced by `value`."""
    if not path or not isinstance(base, (dict, list)) or not base:
        return value
    if isinstance(base, dict):
        key = list(base)[path[0] % len(base)]
        return {**base, key: mutate(base[key], path[1:], value)}
    index = path[0] % len(base)
    return [*base[:index], mutate(base[index], path[1:], value), *base[index + 1:]]


def test_fuzz_manifests(http) -> None:
    """Valid manifests with one value anywhere replaced by arbitrary JSON, as JSON and YAML, created
    and replaced."""

    @SETTINGS
    @given(kind=st.sampled_from(sorted(MANIFESTS)), path=st.lists(st.integers(0, 50), max_size=6), value=JSON,
           yaml_body=st.booleans(), verb=st.sampled_from(["POST", "PUT"]))
    def run(kind: str, path: list[int], value: Any, yaml_body: bool, verb: str) -> None:
        url, manifest = MANIFESTS[kind]
        body = mutate(manifest, path, value)
        if yaml_body:
            import yaml

            data, content_type = yaml.safe_dump(body).encode(), "application/yaml"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        target = url if verb == "POST" else f"{url}/fz"
        response = http(verb, target, "manifests", data=data, headers={"Content-Type": content_type})
        if response.status_code in (200, 201):
            http("DELETE", f"{url}/fz?gracePeriodSeconds=0", "manifests")

    run()


def test_fuzz_raw_bodies(http) -> None:
    """Arbitrary bytes, broken JSON/YAML, deep nesting and protobuf-looking envelopes."""
    nesting = st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n) | st.integers(1, 3000).map(
        lambda n: ("a:\n" + "".join(" " * (i + 1) + "b:\n" for i in range(min(n, 300)))).encode()
    ) | st.integers(1, 3000).map(lambda n: b"{\"a\":" * n + b"1" + b"}" * n)
    bodies = st.binary(max_size=300) | st.binary(max_size=200).map(lambda b: b"k8s\x00" + b) | nesting | st.text(max_size=200).map(str.encode)
    content_types = st.sampled_from(["application/json", "application/yaml", "application/vnd.kubernetes.protobuf",
                                     "application/merge-patch+json", "text/plain", "", "application/json; charset=utf-16"])

    @SETTINGS
    @given(body=bodies, content_type=content_types, kind=st.sampled_from(sorted(MANIFESTS)),
           verb=st.sampled_from(["POST", "PUT", "PATCH"]))
    def run(body: bytes, content_type: str, kind: str, verb: str) -> None:
        url, _ = MANIFESTS[kind]
        target = url if verb == "POST" else f"{url}/fz"
        http(verb, target, "raw bodies", data=body, headers={"Content-Type": content_type})

    run()


def test_fuzz_patches(http) -> None:
    """JSON, merge, strategic and apply patches of arbitrary shape against an existing object."""
    url, manifest = MANIFESTS["deployments"]
    http("POST", url, "patches", json=manifest)
    ops = st.fixed_dictionaries({"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
                                 "path": st.text(alphabet="/abcdefgilmnprstu0123456789~-", max_size=30)},
                                optional={"value": JSON, "from": st.text(max_size=20)})
    patches = st.tuples(st.just("application/json-patch+json"), st.lists(ops, max_size=4) | JSON) | st.tuples(
        st.sampled_from(["application/merge-patch+json", "application/strategic-merge-patch+json",
                         "application/apply-patch+yaml"]),
        st.builds(lambda p, v: mutate(manifest, p, v), st.lists(st.integers(0, 50), max_size=6), JSON) | JSON)

    @SETTINGS
    @given(patch=patches, force=st.booleans())
    def run(patch: tuple[str, Any], force: bool) -> None:
        content_type, body = patch
        query = "?fieldManager=fuzz" + ("&force=true" if force and content_type.startswith("application/apply") else "")
        http("PATCH", f"{url}/fz{query}", "patches", data=json.dumps(body).encode(), headers={"Content-Type": content_type})

    run()


def test_fuzz_selectors_and_list_parameters(http) -> None:
    """labelSelector, fieldSelector, limit, continue, resourceVersion(Match) on lists."""
    text = st.text(alphabet=string.printable + "\u00e9!", max_size=60)

    @SETTINGS
    @given(labels=text | st.just("a in (b,c),!d,e notin (f)"), fields=text | st.just("metadata.name=x,status.phase!=y"),
           limit=st.one_of(st.none(), st.integers(-5, 10**12).map(str), text),
           cont=st.one_of(st.none(), text), rv=st.one_of(st.none(), st.integers(-1, 10**20).map(str), text),
           match=st.sampled_from([None, "Exact", "NotOlderThan", "bogus"]),
           resource=st.sampled_from(["/api/v1/pods", "/api/v1/namespaces/default/configmaps", "/apis/apps/v1/deployments",
                                     "/api/v1/nodes", "/api/v1/events"]))
    def run(labels: str, fields: str, limit: Any, cont: Any, rv: Any, match: Any, resource: str) -> None:
        params = {"labelSelector": labels, "fieldSelector": fields, "limit": limit, "continue": cont,
                  "resourceVersion": rv, "resourceVersionMatch": match}
        http("GET", resource, "selectors/list params", params={k: v for k, v in params.items() if v is not None})

    run()


def test_fuzz_watch_parameters(http) -> None:
    """Watches with arbitrary resourceVersion, bookmarks and initial-events settings: every one ends
    within its timeout, or is refused with a Status."""

    @SETTINGS
    @given(rv=st.one_of(st.none(), st.integers(-1, 10**20).map(str), st.text(max_size=12)),
           bookmarks=st.sampled_from([None, "true", "false", "x"]), initial=st.sampled_from([None, "true", "false"]),
           match=st.sampled_from([None, "NotOlderThan", "Exact", "x"]), timeout=st.sampled_from(["1", "0.5", "x", "-1"]),
           labels=st.sampled_from([None, "a=b", "a in (", "!!"]))
    def run(rv: Any, bookmarks: Any, initial: Any, match: Any, timeout: str, labels: Any) -> None:
        if timeout in ("-1",):
            timeout = "1"  # non-positive means the server's 30-minute default: a real long watch, not a hang
        params = {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": bookmarks, "sendInitialEvents": initial,
                  "resourceVersionMatch": match, "timeoutSeconds": timeout, "labelSelector": labels}
        http("GET", "/api/v1/namespaces/default/configmaps", "watch parameters",
             params={k: v for k, v in params.items() if v is not None})

    run()


def test_fuzz_paths_methods_and_headers(http) -> None:
    """Odd paths, names, methods, Accept and Content-Type headers."""
    segment = st.sampled_from(["api", "apis", "v1", "namespaces", "default", "pods", "apps", "status", "scale", "log",
                               "token", "binding", "eviction", "..", "%2e%2e", "", "x" * 300]) | NAMES
    accept = st.sampled_from(["application/json", "application/yaml", "application/json;as=Table;v=v1;g=meta.k8s.io",
                              "application/vnd.kubernetes.protobuf", "text/html", "*/*", "application/json;as=Foo",
                              "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", ";;;", ""])

    @SETTINGS
    @given(parts=st.lists(segment, min_size=1, max_size=7), method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
           accept=accept, body=st.one_of(st.none(), JSON))
    def run(parts: list[str], method: str, accept: str, body: Any) -> None:
        path = "/" + "/".join(requests.utils.quote(p, safe="%") for p in parts)
        data = json.dumps(body).encode() if body is not None else None
        response = http(method, path, "paths/methods/headers", data=data,
                        headers={"Accept": accept, "Content-Type": "application/json"})
        assert response.status_code < 500 or response.status_code in (503,), response.text[:300]

    run()


REGRESSIONS = [
    # (method, path, content type, body): each once answered 500 or dropped the connection.
    ("POST", "/api/v1/namespaces/default/configmaps", "application/json",
     b'{"metadata":{"name":"w"},"data":{"k":"v"},"\\u0001\\n":1}'),  # control characters in a Warning header
    ("POST", "/api/v1/namespaces/default/configmaps", "application/json",
     b'{"metadata":{"name":"e"},"":1}'),  # an unknown field named "" while dropping unknown fields
    ("POST", "/api/v1/namespaces/default/configmaps", "application/yaml",
     ("a:\n" + "".join(" " * (i + 1) + "b:\n" for i in range(255))).encode()),  # deep block YAML
    ("GET", "/api/v1/pods?limit=-1&labelSelector=a%3Db", "", b""),  # a negative limit with a selector
    ("POST", "/apis/apps/v1/namespaces/default/deployments", "application/json",
     b'{"metadata":{"name":"n"},"spec":null}'),  # null where defaulting expects an object
    ("POST", "/api/v1/namespaces/default/pods", "application/json",
     b'{"metadata":{"name":"n"},"spec":{"containers":[null]}}'),  # a null list element
    ("PATCH", "/apis/apps/v1/namespaces/default/deployments/fz?fieldManager=f", "application/apply-patch+yaml",
     b'{"apiVersion":"apps/v1","kind":"Deployment","metadata":null}'),  # server-side apply of metadata: null
    # An encoded newline in the path once missed every route: a plain-text 404, not a Status.
    ("GET", "/api/v1/componentstatuses/%0A", "", b""),
    ("DELETE", "/api/v1/namespaces/default/configmaps/a%0Ab", "", b""),
    ("GET", "/openapi/v3/api/v1%0A", "", b""),
]


@pytest.mark.parametrize("method, path, content_type, body", REGRESSIONS)
def test_regressions_found_by_fuzzing(http, method: str, path: str, content_type: str, body: bytes) -> None:
    url, manifest = MANIFESTS["deployments"]
    http("POST", url, "regressions", json=manifest)  # the object the apply patch targets
    response = http(method, path, "regressions", data=body or None,
                    headers={"Content-Type": content_type} if content_type else {})
    assert 200 <= response.status_code < 500


def test_zz_fuzz_summary(capsys) -> None:
    """Prints the requests tried per kind of bad input (pytest -s shows it)."""
    with capsys.disabled():
        for kind, count in sorted(TRIED.items()):
            print(f"fuzz: {kind}: {count} requests")
