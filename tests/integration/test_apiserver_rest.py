"""The REST API over real HTTP: verbs, selectors, paging, Status bodies, subresources, watch."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp
import orjson
import pytest

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def pod(name: str, labels: dict | None = None, **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}], **spec},
    }


@pytest.fixture
async def http(api_server):
    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as session:
        yield session


async def call(http, method: str, path: str, body: object = None, **kwargs):
    if body is not None and not isinstance(body, bytes | str):
        kwargs["data"] = orjson.dumps(body)
        kwargs.setdefault("headers", {}).setdefault("Content-Type", "application/json")
    elif body is not None:
        kwargs["data"] = body
    async with http.request(method, path, **kwargs) as response:
        raw = await response.read()
        return response.status, (orjson.loads(raw) if raw[:1] in (b"{", b"[") else raw), response.headers, raw


PODS = "/api/v1/namespaces/default/pods"


async def test_not_found_is_a_go_shaped_status_body(http):
    status, _, headers, raw = await call(http, "GET", f"{PODS}/nosuch")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert raw == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \\"nosuch\\" not found",'
        b'"reason":"NotFound","details":{"name":"nosuch","kind":"pods"},"code":404}\n'
    )


async def test_create_get_update_delete_a_configmap(http):
    path = "/api/v1/namespaces/default/configmaps"
    status, created, _, _ = await call(http, "POST", path, {"metadata": {"name": "c1"}, "data": {"a": "1"}})
    assert status == 201
    meta = created["metadata"]
    assert created["kind"] == "ConfigMap" and meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    status, body, _, _ = await call(http, "POST", path, {"metadata": {"name": "c1"}})
    assert status == 409 and body["reason"] == "AlreadyExists"
    created["data"]["a"] = "2"
    status, updated, _, _ = await call(http, "PUT", f"{path}/c1", created)
    assert status == 200 and updated["data"] == {"a": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, body, _, _ = await call(http, "PUT", f"{path}/c1", created)  # stale resourceVersion
    assert status == 409 and body["reason"] == "Conflict"
    status, body, _, _ = await call(http, "DELETE", f"{path}/c1")
    assert status == 200 and body["status"] == "Success"
    status, _, _, _ = await call(http, "GET", f"{path}/c1")
    assert status == 404


async def test_generate_name_and_generation_bumps_only_on_spec_changes(http):
    path = "/apis/apps/v1/namespaces/default/deployments"
    deployment = {
        "metadata": {"generateName": "web-"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "nginx"}]}},
        },
    }
    status, created, _, _ = await call(http, "POST", path, deployment)
    assert status == 201
    name = created["metadata"]["name"]
    assert name.startswith("web-") and len(name) == len("web-") + 5
    assert created["metadata"]["generation"] == 1
    assert created["spec"]["replicas"] == 1
    assert created["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": "25%"}
    assert created["spec"]["revisionHistoryLimit"] == 10 and created["spec"]["progressDeadlineSeconds"] == 600
    created["metadata"]["labels"] = {"x": "y"}
    _, labelled, _, _ = await call(http, "PUT", f"{path}/{name}", created)
    assert labelled["metadata"]["generation"] == 1
    labelled["spec"]["replicas"] = 3
    _, scaled, _, _ = await call(http, "PUT", f"{path}/{name}", labelled)
    assert scaled["metadata"]["generation"] == 2
    # The main resource ignores status; the status subresource changes only status.
    scaled["status"] = {"replicas": 3}
    _, ignored, _, _ = await call(http, "PUT", f"{path}/{name}", scaled)
    assert "replicas" not in (ignored.get("status") or {})
    ignored["status"] = {"replicas": 3, "observedGeneration": 2}
    ignored["spec"]["replicas"] = 7
    status, written, _, _ = await call(http, "PUT", f"{path}/{name}/status", ignored)
    assert status == 200 and written["status"]["replicas"] == 3 and written["spec"]["replicas"] == 3


async def test_deployment_selector_must_match_template_and_is_immutable(http):
    path = "/apis/apps/v1/namespaces/default/deployments"
    bad = {
        "metadata": {"name": "d"},
        "spec": {
            "selector": {"matchLabels": {"app": "other"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}},
        },
    }
    status, body, _, _ = await call(http, "POST", path, bad)
    assert status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.template.metadata.labels"
    bad["spec"]["selector"]["matchLabels"]["app"] = "web"
    _, created, _, _ = await call(http, "POST", path, bad)
    created["spec"]["selector"] = {"matchLabels": {"app": "web", "extra": "1"}}
    created["spec"]["template"]["metadata"]["labels"]["extra"] = "1"
    status, body, _, _ = await call(http, "PUT", f"{path}/d", created)
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.selector"


async def test_invalid_names_and_missing_fields_are_422_with_causes(http):
    status, body, _, _ = await call(http, "POST", PODS, pod("Bad_Name"))
    assert status == 422
    assert body["message"].startswith('Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"')
    status, body, _, _ = await call(http, "POST", PODS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}]}})
    assert status == 422
    assert {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"} in body["details"]["causes"]


async def test_field_validation_strict_warn_and_ignore(http):
    body = pod("p1")
    body["spec"]["containerz"] = []
    status, result, _, _ = await call(http, "POST", f"{PODS}?fieldValidation=Strict", body)
    assert status == 400 and result["message"] == 'strict decoding error: unknown field "spec.containerz"'
    status, result, headers, _ = await call(http, "POST", f"{PODS}?fieldValidation=Warn", body)
    assert status == 201 and "containerz" not in result["spec"]
    assert headers.getall("Warning") == ['299 - "unknown field \\"spec.containerz\\""']
    body["metadata"]["name"] = "p2"
    status, result, headers, _ = await call(http, "POST", f"{PODS}?fieldValidation=Ignore", body)
    assert status == 201 and "Warning" not in headers
    raw = b'{"metadata":{"name":"p3","name":"p3"},"spec":{"containers":[{"name":"a","image":"x"}]}}'
    status, result, _, _ = await call(http, "POST", f"{PODS}?fieldValidation=Strict", raw, headers={"Content-Type": "application/json"})
    assert status == 400 and 'duplicate field "name"' in result["message"]


async def test_malformed_bodies_and_unsupported_media(http):
    status, body, _, _ = await call(http, "POST", PODS, b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and body["reason"] == "BadRequest"
    status, body, _, _ = await call(http, "POST", PODS, b"a: [", headers={"Content-Type": "application/yaml"})
    assert status == 400
    status, body, _, _ = await call(http, "POST", PODS, b"x", headers={"Content-Type": "text/csv"})
    assert status == 415 and body["reason"] == "UnsupportedMediaType"
    status, body, _, _ = await call(http, "GET", PODS, headers={"Accept": "text/csv"})
    assert status == 406 and body["reason"] == "NotAcceptable"
    large = b'{"metadata":{"name":"large"},"data":{"a":"' + b"x" * (2 * 1024 * 1024) + b'"}}'
    status, body, _, _ = await call(http, "POST", "/api/v1/namespaces/default/configmaps", large, headers={"Content-Type": "application/json"})
    assert status == 201 and len(body["data"]["a"]) == 2 * 1024 * 1024  # read whole, in many chunks
    big = b'{"metadata":{"name":"big"},"data":{"a":"' + b"x" * (3 * 1024 * 1024) + b'"}}'
    status, body, _, _ = await call(http, "POST", "/api/v1/namespaces/default/configmaps", big, headers={"Content-Type": "application/json"})
    assert status == 413 and body["reason"] == "RequestEntityTooLarge"
    status, body, _, _ = await call(http, "PUT", PODS, pod("x"))
    assert status == 405 and body["reason"] == "MethodNotAllowed"


async def test_yaml_bodies_and_yaml_responses(http):
    manifest = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n"
    status, body, _, _ = await call(http, "POST", "/api/v1/namespaces/default/configmaps", manifest, headers={"Content-Type": "application/yaml"})
    assert status == 201 and body["data"] == {"k": "v"}
    status, raw, headers, _ = await call(http, "GET", "/api/v1/namespaces/default/configmaps/from-yaml", headers={"Accept": "application/yaml"})
    assert status == 200 and headers["Content-Type"].startswith("application/yaml") and b"name: from-yaml" in raw


async def test_missing_and_terminating_namespaces(http):
    status, body, _, _ = await call(http, "POST", "/api/v1/namespaces/nope/pods", pod("p"))
    assert status == 404 and body["message"] == 'namespaces "nope" not found'
    await call(http, "POST", "/api/v1/namespaces", {"metadata": {"name": "going"}})
    status, ns, _, _ = await call(http, "DELETE", "/api/v1/namespaces/going")
    assert status in (200, 202) and ns["status"]["phase"] == "Terminating"
    for _ in range(50):  # the namespace table follows the store's watch
        status, body, _, _ = await call(http, "POST", "/api/v1/namespaces/going/configmaps", {"metadata": {"name": "c"}})
        if status == 403:
            break
        await asyncio.sleep(0.02)
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == "unable to create new content in namespace going because it is being terminated"
    status, body, _, _ = await call(http, "PUT", "/api/v1/namespaces/going/finalize", {"metadata": {"name": "going"}, "spec": {"finalizers": []}})
    assert status == 200
    status, _, _, _ = await call(http, "GET", "/api/v1/namespaces/going")
    assert status == 404


async def test_label_and_field_selectors_are_parsed(http):
    await call(http, "POST", PODS, pod("a", {"app": "web", "tier": "front"}))
    await call(http, "POST", PODS, pod("b", {"app": "web", "tier": "back"}))
    await call(http, "POST", PODS, pod("c", {"app": "db"}, nodeName="n1"))

    async def names(query: str) -> list[str]:
        status, body, _, _ = await call(http, "GET", f"{PODS}?{query}")
        assert status == 200, body
        return sorted(p["metadata"]["name"] for p in body["items"])

    assert await names("labelSelector=app%3Dweb") == ["a", "b"]
    assert await names("labelSelector=app%3Dweb,tier!%3Dfront") == ["b"]
    assert await names("labelSelector=tier%20in%20(front,back)") == ["a", "b"]
    assert await names("labelSelector=tier%20notin%20(front)") == ["b", "c"]
    assert await names("labelSelector=!tier") == ["c"]
    assert await names("fieldSelector=spec.nodeName%3Dn1") == ["c"]
    assert await names("fieldSelector=metadata.namespace%3Ddefault,metadata.name%3Da") == ["a"]
    assert await names("fieldSelector=metadata.name%3Da,metadata.namespace%3Ddefault") == ["a"]
    assert await names("fieldSelector=status.phase!%3DRunning,spec.nodeName!%3Dn1") == ["a", "b"]
    status, body, _, _ = await call(http, "GET", f"{PODS}?fieldSelector=spec.bogus%3D1")
    assert status == 400 and body["message"] == "field label not supported: spec.bogus"
    status, body, _, _ = await call(http, "GET", "/api/v1/pods?labelSelector=app%3D%3D")
    assert status in (200, 400)


async def test_limit_continue_and_remaining_item_count(http):
    for i in range(5):
        await call(http, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"c{i}"}})
    status, page, _, _ = await call(http, "GET", "/api/v1/namespaces/default/configmaps?limit=2")
    assert [c["metadata"]["name"] for c in page["items"]] == ["c0", "c1"]
    assert page["metadata"]["remainingItemCount"] == 3 and page["metadata"]["continue"]
    seen = [c["metadata"]["name"] for c in page["items"]]
    while page["metadata"].get("continue"):
        token = page["metadata"]["continue"]
        await call(http, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": f"late{len(seen)}"}})
        _, page, _, _ = await call(http, "GET", f"/api/v1/namespaces/default/configmaps?limit=2&continue={token}")
        seen += [c["metadata"]["name"] for c in page["items"]]
    assert seen == ["c0", "c1", "c2", "c3", "c4"]  # one consistent snapshot, later writes unseen
    status, _body, _, _ = await call(http, "GET", "/api/v1/namespaces/default/configmaps?continue=garbage")
    assert status == 400


async def test_resource_version_match_exact_reads_the_past(http):
    path = "/api/v1/namespaces/default/configmaps"
    _, first, _, _ = await call(http, "POST", path, {"metadata": {"name": "a"}})
    rv = first["metadata"]["resourceVersion"]
    await call(http, "POST", path, {"metadata": {"name": "b"}})
    _, past, _, _ = await call(http, "GET", f"{path}?resourceVersion={rv}&resourceVersionMatch=Exact")
    assert [c["metadata"]["name"] for c in past["items"]] == ["a"] and past["metadata"]["resourceVersion"] == rv
    status, _body, _, _ = await call(http, "GET", f"{path}?resourceVersionMatch=Exact")
    assert status == 400


async def test_tables_and_partial_object_metadata(http):
    await call(http, "POST", PODS, pod("t1", {"app": "web"}, nodeName="node-1"))
    _status, table, headers, _ = await call(http, "GET", PODS, headers={"Accept": TABLE})
    assert headers["Content-Type"] == "application/json;as=Table;v=v1;g=meta.k8s.io"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"
    ]
    assert [c["priority"] for c in table["columnDefinitions"]][5:] == [1, 1, 1, 1]
    row = table["rows"][0]
    assert row["cells"][:4] == ["t1", "0/1", "Pending", 0] and row["cells"][6] == "node-1"
    assert row["object"]["kind"] == "PartialObjectMetadata" and row["object"]["metadata"]["labels"] == {"app": "web"}
    _, table, _, _ = await call(http, "GET", f"{PODS}?includeObject=Object", headers={"Accept": TABLE})
    assert table["rows"][0]["object"]["spec"]["nodeName"] == "node-1"
    accept = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
    _, partial, _, _ = await call(http, "GET", PODS, headers={"Accept": accept})
    assert partial["kind"] == "PartialObjectMetadataList" and partial["items"][0]["metadata"]["name"] == "t1"


async def test_service_cluster_ip_and_node_port_allocation_and_release(http):
    path = "/api/v1/namespaces/default/services"
    service = {"metadata": {"name": "web"}, "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}}
    status, created, _, _ = await call(http, "POST", path, service)
    assert status == 201
    spec = created["spec"]
    assert spec["clusterIP"].startswith("10.43.") and spec["clusterIPs"] == [spec["clusterIP"]]
    assert spec["sessionAffinity"] == "None" and spec["ports"][0]["targetPort"] == 80
    assert spec["ports"][0]["protocol"] == "TCP" and 30000 <= spec["ports"][0]["nodePort"] <= 32767
    taken = {"metadata": {"name": "copy"}, "spec": {"clusterIP": spec["clusterIP"], "ports": [{"port": 80}]}}
    status, body, _, _ = await call(http, "POST", path, taken)
    assert status == 422 and "provided IP is already allocated" in body["message"]
    created["spec"]["clusterIP"] = "10.43.99.99"
    status, body, _, _ = await call(http, "PUT", f"{path}/web", created)
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.clusterIP"
    await call(http, "DELETE", f"{path}/web")
    status, _, _, _ = await call(http, "POST", path, taken)
    assert status == 201  # released on delete


async def test_immutable_configmap_and_pod_spec(http):
    path = "/api/v1/namespaces/default/configmaps"
    _, cm, _, _ = await call(http, "POST", path, {"metadata": {"name": "frozen"}, "immutable": True, "data": {"a": "1"}})
    cm["data"]["a"] = "2"
    status, body, _, _ = await call(http, "PUT", f"{path}/frozen", cm)
    assert status == 422 and body["details"]["causes"][0]["field"] == "data"
    _, created, _, _ = await call(http, "POST", PODS, pod("p"))
    created["spec"]["containers"][0]["image"] = "nginx:1.28"
    status, updated, _, _ = await call(http, "PUT", f"{PODS}/p", created)
    assert status == 200
    updated["spec"]["restartPolicy"] = "Never"
    status, body, _, _ = await call(http, "PUT", f"{PODS}/p", updated)
    assert status == 422 and "pod updates may not change fields" in body["message"]


async def test_pod_defaults(http):
    _, created, _, _ = await call(http, "POST", PODS, pod("d", containers=[{"name": "a", "image": "busybox", "ports": [{"containerPort": 80}]}]))
    spec = created["spec"]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["terminationGracePeriodSeconds"] == 30 and spec["schedulerName"] == "default-scheduler"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert spec["containers"][0]["ports"][0]["protocol"] == "TCP"
    assert {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300} in spec["tolerations"]
    assert created["status"]["phase"] == "Pending"


async def test_pods_delete_gracefully_when_scheduled_and_at_once_when_not(http):
    await call(http, "POST", PODS, pod("unscheduled"))
    status, body, _, _ = await call(http, "DELETE", f"{PODS}/unscheduled")
    assert status == 200
    assert (await call(http, "GET", f"{PODS}/unscheduled"))[0] == 404
    await call(http, "POST", PODS, pod("running", nodeName="node-1"))
    status, body, _, _ = await call(http, "DELETE", f"{PODS}/running", {"propagationPolicy": "Background"})
    assert status == 200 and body["metadata"]["deletionTimestamp"] and body["metadata"]["deletionGracePeriodSeconds"] == 30
    status, still, _, _ = await call(http, "GET", f"{PODS}/running")
    assert status == 200 and still["metadata"]["deletionTimestamp"]
    # The node agent confirms with a zero grace period.
    status, _, _, _ = await call(http, "DELETE", f"{PODS}/running?gracePeriodSeconds=0")
    assert status == 200
    assert (await call(http, "GET", f"{PODS}/running"))[0] == 404


async def test_finalizers_and_foreground_deletion(http):
    path = "/api/v1/namespaces/default/configmaps"
    await call(http, "POST", path, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})
    status, body, _, _ = await call(http, "DELETE", f"{path}/held")
    assert status == 202 and body["metadata"]["deletionTimestamp"]
    _, held, _, _ = await call(http, "GET", f"{path}/held")
    held["metadata"]["finalizers"] = []
    status, _, _, _ = await call(http, "PUT", f"{path}/held", held)
    assert status == 200
    assert (await call(http, "GET", f"{path}/held"))[0] == 404
    await call(http, "POST", path, {"metadata": {"name": "fg"}})
    status, body, _, _ = await call(http, "DELETE", f"{path}/fg", {"propagationPolicy": "Foreground"})
    assert status == 202 and body["metadata"]["finalizers"] == ["foregroundDeletion"]
    await call(http, "POST", path, {"metadata": {"name": "orphan"}})
    _, body, _, _ = await call(http, "DELETE", f"{path}/orphan?propagationPolicy=Orphan")
    assert body["metadata"]["finalizers"] == ["orphan"]


async def test_delete_collection_with_label_selector(http):
    path = "/api/v1/namespaces/default/configmaps"
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        await call(http, "POST", path, {"metadata": {"name": name, "labels": {"app": app}}})
    status, body, _, _ = await call(http, "DELETE", f"{path}?labelSelector=app%3Dx")
    assert status == 200 and sorted(i["metadata"]["name"] for i in body["items"]) == ["a", "b"]
    _, left, _, _ = await call(http, "GET", path)
    assert [c["metadata"]["name"] for c in left["items"]] == ["c"]


async def test_scale_binding_and_eviction_subresources(http):
    path = "/apis/apps/v1/namespaces/default/replicasets"
    rs = {
        "metadata": {"name": "rs"},
        "spec": {"selector": {"matchLabels": {"app": "w"}},
                 "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}},
    }
    await call(http, "POST", path, rs)
    status, scale, _, _ = await call(http, "GET", f"{path}/rs/scale")
    assert status == 200 and scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "app=w"
    status, scale, _, _ = await call(http, "PATCH", f"{path}/rs/scale", b'{"spec":{"replicas":4}}',
                                     headers={"Content-Type": "application/merge-patch+json"})
    assert status == 200 and scale["spec"]["replicas"] == 4
    _, current, _, _ = await call(http, "GET", f"{path}/rs")
    assert current["spec"]["replicas"] == 4 and current["metadata"]["generation"] == 2

    await call(http, "POST", PODS, pod("bind-me"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bind-me"}, "target": {"kind": "Node", "name": "node-1"}}
    status, body, _, _ = await call(http, "POST", f"{PODS}/bind-me/binding", binding)
    assert status == 201 and body["status"] == "Success"
    _, bound, _, _ = await call(http, "GET", f"{PODS}/bind-me")
    assert bound["spec"]["nodeName"] == "node-1"
    assert any(c["type"] == "PodScheduled" and c["status"] == "True" for c in bound["status"]["conditions"])
    status, body, _, _ = await call(http, "POST", f"{PODS}/bind-me/binding", binding)
    assert status == 409

    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "bind-me", "namespace": "default"}}
    status, body, _, _ = await call(http, "POST", f"{PODS}/bind-me/eviction", eviction)
    assert status == 201 and body["status"] == "Success"
    _, evicted, _, _ = await call(http, "GET", f"{PODS}/bind-me")
    assert evicted["metadata"]["deletionTimestamp"]


async def test_eviction_respects_disruption_budgets(http):
    await call(http, "POST", PODS, pod("guarded", {"app": "g"}, nodeName="n"))
    pod_status = {"metadata": {"name": "guarded"}, "status": {"phase": "Running"}}
    _, current, _, _ = await call(http, "GET", f"{PODS}/guarded")
    current["status"] = pod_status["status"]
    await call(http, "PUT", f"{PODS}/guarded/status", current)
    pdb = {"metadata": {"name": "pdb"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "g"}}}}
    _, created, _, _ = await call(http, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets", pdb)
    created["status"] = {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1, "observedGeneration": 1}
    await call(http, "PUT", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/pdb/status", created)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "guarded", "namespace": "default"}}
    status, body, _headers, _ = await call(http, "POST", f"{PODS}/guarded/eviction", eviction)
    assert status == 429 and body["reason"] == "TooManyRequests"
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."


async def _watch_lines(http, query: str, count: int, timeout: float = 5.0) -> list[dict]:
    events = []
    async with http.get(f"{PODS}?watch=true&{query}") as response:
        assert response.status == 200
        async with asyncio.timeout(timeout):
            async for line in response.content:
                if line.strip():
                    events.append(orjson.loads(line))
                if len(events) >= count:
                    break
    return events


async def test_watch_initial_events_replay_and_selector_leaving(http):
    _, a, _, _ = await call(http, "POST", PODS, pod("a", {"app": "web"}))
    events = await _watch_lines(http, "resourceVersion=0&timeoutSeconds=1", 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    rv = a["metadata"]["resourceVersion"]
    watcher = asyncio.create_task(_watch_lines(http, f"resourceVersion={rv}&labelSelector=app%3Dweb", 3))
    await asyncio.sleep(0.2)
    _, b, _, _ = await call(http, "POST", PODS, pod("b", {"app": "web"}))
    b["metadata"]["labels"] = {"app": "other"}
    await call(http, "PUT", f"{PODS}/b", b)  # b leaves the selector: DELETED for this watcher
    await call(http, "DELETE", f"{PODS}/a")
    events = await watcher
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "b"), ("DELETED", "b"), ("DELETED", "a")
    ]
    # Replay from a resourceVersion sends only later events.
    replay = await _watch_lines(http, f"resourceVersion={rv}&timeoutSeconds=1", 3)
    assert [e["type"] for e in replay] == ["ADDED", "MODIFIED", "DELETED"]


async def test_watch_timeout_closes_the_stream_and_bookmarks_only_when_asked(api_server, http):
    api_server.config.bookmark_interval = 0.2
    events = []
    async with http.get(f"{PODS}?watch=true&timeoutSeconds=1&resourceVersion=1") as response:
        async for line in response.content:
            events.append(orjson.loads(line))
    assert events == []  # no bookmark unless allowWatchBookmarks
    async with http.get(f"{PODS}?watch=true&timeoutSeconds=1&allowWatchBookmarks=true&resourceVersion=1") as response:
        async for line in response.content:
            events.append(orjson.loads(line))
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["object"]["kind"] == "Pod" and events[0]["object"]["metadata"]["resourceVersion"]


async def test_watch_as_table_sends_one_row_per_event(http):
    async with http.get(f"{PODS}?watch=true&resourceVersion=0", headers={"Accept": TABLE}) as response:
        await call(http, "POST", PODS, pod("row"))
        line = await asyncio.wait_for(response.content.readline(), 5)
    event = orjson.loads(line)
    assert event["type"] == "ADDED" and event["object"]["kind"] == "Table"
    assert len(event["object"]["rows"]) == 1 and event["object"]["rows"][0]["cells"][0] == "row"


async def test_watch_from_a_compacted_revision_is_410_error_event(api_server, http):
    for i in range(3):
        await call(http, "POST", PODS, pod(f"p{i}"))
    revision = int((await call(http, "GET", PODS))[1]["metadata"]["resourceVersion"])
    compaction = asyncio.run_coroutine_threadsafe(api_server.store.compact(revision), api_server.loop)
    await asyncio.wrap_future(compaction)
    events = await _watch_lines(http, "resourceVersion=1", 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_discovery_documents(http):
    v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    _status, body, headers, _ = await call(http, "GET", "/apis", headers={"Accept": v2})
    assert headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    apps = next(g for g in body["items"] if g["metadata"]["name"] == "apps")
    deployments = next(r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments")
    assert deployments["shortNames"] == ["deploy"] and deployments["categories"] == ["all"]
    assert {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
            "verbs": ["get", "patch", "update"]} in deployments["subresources"]
    beta = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    _, body, headers, _ = await call(http, "GET", "/api", headers={"Accept": beta})
    assert headers["Content-Type"] == "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    assert body["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    _, legacy, headers, _ = await call(http, "GET", "/api/v1")
    eviction = next(r for r in legacy["resources"] if r["name"] == "pods/eviction")
    assert eviction["group"] == "policy" and eviction["version"] == "v1" and eviction["kind"] == "Eviction"
    _, groups, _, _ = await call(http, "GET", "/apis")
    autoscaling = next(g for g in groups["groups"] if g["name"] == "autoscaling")
    assert autoscaling["preferredVersion"]["version"] == "v2"
    _, version, _, _ = await call(http, "GET", "/version")
    assert (version["major"], version["minor"]) == ("1", "32")
    for path in ("/healthz", "/livez", "/readyz"):
        assert (await call(http, "GET", path))[0] == 200


async def test_metrics_count_requests_by_verb_and_resource(http):
    await call(http, "GET", PODS)
    _status, raw, _headers, _ = await call(http, "GET", "/metrics")
    text = raw.decode()
    assert 'apiserver_request_total{code="200",resource="pods",verb="LIST"}' in text
    assert 'apiserver_request_duration_seconds_bucket{resource="pods",verb="LIST",le="+Inf"}' in text


async def test_tls_requires_credentials(api_server):
    context = ssl.create_default_context(cafile=str(api_server.ca_path))
    async with aiohttp.ClientSession(base_url=api_server.url) as session:
        async with session.get("/api/v1/namespaces", ssl=context) as response:
            assert response.status == 401
            assert (await response.json())["reason"] == "Unauthorized"
        headers = {"Authorization": f"Bearer {api_server.admin_token}"}
        async with session.get("/api/v1/namespaces", ssl=context, headers=headers) as response:
            assert response.status == 200
        async with session.get("/version", ssl=context) as response:
            assert response.status == 200  # public, as in Kubernetes


async def test_client_certificates_signed_by_the_cluster_ca_authenticate(api_server, tmp_path):
    from pinnace.apiserver import certs

    ca_cert, ca_key = certs.load_ca(api_server.certs)

    def context_for(user: str, group: str) -> ssl.SSLContext:
        cert_pem, key_pem = certs.issue(ca_cert, ca_key, user, organizations=(group,))
        (tmp_path / f"{user}.crt").write_bytes(cert_pem)
        (tmp_path / f"{user}.key").write_bytes(key_pem)
        context = ssl.create_default_context(cafile=str(api_server.ca_path))
        context.load_cert_chain(tmp_path / f"{user}.crt", tmp_path / f"{user}.key")
        return context

    async with aiohttp.ClientSession(base_url=api_server.url) as session:
        async with session.get("/api/v1/namespaces", ssl=context_for("root", "system:masters")) as response:
            assert response.status == 200
        # Known but not granted anything: authenticated (not 401), then refused by authorization.
        async with session.get("/api/v1/namespaces", ssl=context_for("jane", "devs")) as response:
            assert response.status == 403 and '"jane"' in (await response.json())["message"]


async def test_service_account_tokens_authenticate(api_server, http):
    await call(http, "POST", "/api/v1/namespaces/default/serviceaccounts", {"metadata": {"name": "robot"}})
    status, body, _, _ = await call(http, "POST", "/api/v1/namespaces/default/serviceaccounts/robot/token",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    assert status == 201 and body["status"]["token"]
    context = ssl.create_default_context(cafile=str(api_server.ca_path))
    headers = {"Authorization": f"Bearer {body['status']['token']}"}
    async with aiohttp.ClientSession(base_url=api_server.url) as session:
        async with session.get("/api/v1/namespaces/default/pods", ssl=context, headers=headers) as response:
            # The token names the account (authorization then decides what it may do).
            assert response.status in (200, 403)
            if response.status == 403:
                assert "system:serviceaccount:default:robot" in (await response.json())["message"]


async def test_bootstrap_objects_exist(http):
    _, namespaces, _, _ = await call(http, "GET", "/api/v1/namespaces")
    assert {n["metadata"]["name"] for n in namespaces["items"]} >= {"default", "kube-system", "kube-public", "kube-node-lease"}
    _, service, _, _ = await call(http, "GET", "/api/v1/namespaces/default/services/kubernetes")
    assert service["spec"]["clusterIP"] == "10.43.0.1" and service["spec"]["ports"][0]["port"] == 443
    status, _, _, _ = await call(http, "GET", "/api/v1/namespaces/default/endpoints/kubernetes")
    assert status == 200


async def test_autoscaling_v1_and_v2_share_one_object(http):
    v1 = {"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                                                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}}
    status, created, _, _ = await call(http, "POST", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers", v1)
    assert status == 201 and created["spec"]["targetCPUUtilizationPercentage"] == 70
    _, v2, _, _ = await call(http, "GET", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web")
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
    v2["spec"]["behavior"] = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    await call(http, "PUT", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web", v2)
    _, back, _, _ = await call(http, "GET", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web")
    back["spec"]["maxReplicas"] = 9
    await call(http, "PUT", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web", back)
    _, v2, _, _ = await call(http, "GET", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web")
    assert v2["spec"]["maxReplicas"] == 9 and v2["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": 60}}
    assert "annotations" not in v2["metadata"]


async def test_wrong_types_are_400_like_a_decoding_error(http):
    body = pod("typed")
    body["spec"]["containers"][0]["image"] = 5
    status, result, _, _ = await call(http, "POST", PODS, body)
    assert status == 400 and result["reason"] == "BadRequest"
    assert result["message"].startswith('Pod in version "v1" cannot be handled as a Pod: spec.containers[0].image:')


async def test_a_list_by_name_never_names_a_revision_newer_than_what_it_read(api_server, http):
    # `kubectl wait` lists one object by name and watches from the list's resourceVersion: a write that
    # lands while the list's read is on its way back must still come through that watch.
    status, _, _, _ = await call(http, "POST", "/api/v1/namespaces/default/pods", pod("raced"))
    assert status == 201
    store = api_server.registry.store
    original_get = store.get

    async def racing_get(key):
        kv = await original_get(key)
        if key.endswith("/pods/default/raced"):
            store.get = original_get  # race once
            changed = orjson.loads(kv.value)
            changed["metadata"]["labels"] = {"changed": "yes"}
            await store.update(key, orjson.dumps(changed), kv.mod_revision)
            await asyncio.sleep(0.3)  # the watch cache takes the write in before this read returns
        return kv

    store.get = racing_get
    try:
        status, listed, _, _ = await call(http, "GET", "/api/v1/namespaces/default/pods",
                                          params={"fieldSelector": "metadata.name=raced"})
    finally:
        store.get = original_get
    assert status == 200
    assert not listed["items"][0]["metadata"].get("labels")  # the read was older than the write
    params = {"watch": "true", "fieldSelector": "metadata.name=raced", "timeoutSeconds": "2",
              "resourceVersion": listed["metadata"]["resourceVersion"]}
    async with http.get("/api/v1/namespaces/default/pods", params=params) as response:
        events = [orjson.loads(line) async for line in response.content if line.strip()]
    assert [(e["type"], e["object"]["metadata"].get("labels")) for e in events] == [("MODIFIED", {"changed": "yes"})]
