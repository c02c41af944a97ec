"""OpenAPI v3/v2 documents: what kubectl needs from them, checked on the documents and with kubectl."""

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from tests.fixtures.kubectl_stub import KubectlStub, kubectl_version

from pinnace.api import protowire as pw
from pinnace.api.kinds import registry
from pinnace.apiserver import openapi

SERVICE = openapi.OpenAPIService(registry)


def test_index_lists_group_versions_with_hashes():
    index = orjson.loads(SERVICE.v3_index())
    assert index["paths"]["api/v1"]["serverRelativeURL"].startswith("/openapi/v3/api/v1?hash=")
    assert "apis/apps/v1" in index["paths"]
    assert "apis/batch/v1" in index["paths"]


def test_patch_operations_offer_field_validation_and_strategic_merge():
    doc = orjson.loads(SERVICE.v3_document("apis/apps/v1"))
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert patch["x-kubernetes-action"] == "patch"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]


def test_schemas_carry_kubernetes_extensions_and_gvk():
    schemas = orjson.loads(SERVICE.v3_document("api/v1"))["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "kind": "Pod", "version": "v1"}]
    assert "enum" not in pod["properties"]["kind"]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    spec = pod["properties"]["spec"]
    assert (
        spec["allOf"] == [{"$ref": "#/components/schemas/io.k8s.api.core.v1.PodSpec"}] and spec["description"]
    )
    assert schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"] == "int-or-string"
    assert schemas["io.k8s.api.core.v1.ServiceSpec"]["properties"]["type"]["type"] == "string"


def test_custom_resources_join_their_group_version():
    service = openapi.OpenAPIService(registry)
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
    }
    service.register_custom_schema("example.com", "v1", "Widget", "widgets", True, schema, ("status",))
    assert "apis/example.com/v1" in orjson.loads(service.v3_index())["paths"]
    doc = orjson.loads(service.v3_document("apis/example.com/v1"))
    widget = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget["x-kubernetes-group-version-kind"] == [
        {"group": "example.com", "version": "v1", "kind": "Widget"}
    ]
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    assert "/apis/example.com/v1/namespaces/{namespace}/widgets/{name}/status" in doc["paths"]
    service.unregister_custom_schema("example.com", "v1", "Widget")
    assert "apis/example.com/v1" not in orjson.loads(service.v3_index())["paths"]


def _gnostic_definitions(data: bytes) -> dict[str, bytes]:
    found = {}
    for number, _, value in pw.fields(data):
        if number == 9:  # Document.definitions
            for _, _, named in pw.fields(value):
                parts = {n: v for n, _, v in pw.fields(named)}
                found[parts[1].decode()] = parts[2]
    return found


def test_v2_protobuf_is_a_gnostic_document():
    data, etag = SERVICE.v2_bytes(True)
    assert etag.startswith('"')
    fields = {number: value for number, _, value in pw.fields(data)}
    assert fields[1] == b"2.0"
    definitions = _gnostic_definitions(data)
    pod = definitions["io.k8s.api.core.v1.Pod"]
    extensions = [dict((n, v) for n, _, v in pw.fields(v)) for n, _, v in pw.fields(pod) if n == 31]
    gvk = next(e for e in extensions if e[1] == b"x-kubernetes-group-version-kind")
    yaml_text = dict((n, v) for n, _, v in pw.fields(gvk[2]))[2]
    assert orjson.loads(yaml_text) == [{"group": "", "kind": "Pod", "version": "v1"}]


@pytest.fixture
async def http_client():
    app = web.Application()
    openapi.add_routes(app, registry)
    client = TestClient(TestServer(app))
    await client.start_server()
    yield client
    await client.close()


async def test_hash_urls_are_immutable_and_etagged(http_client):
    index = await (await http_client.get("/openapi/v3")).json()
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    response = await http_client.get(url)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "public, immutable"
    etag = response.headers["Etag"]
    assert (await http_client.get(url, headers={"If-None-Match": etag})).status == 304
    stale = await http_client.get("/openapi/v3/apis/apps/v1?hash=OLD", allow_redirects=False)
    assert stale.status == 301 and stale.headers["Location"] == url
    assert (await http_client.get("/openapi/v3/apis/nosuch/v1")).status == 404


async def test_v2_answers_protobuf_when_asked_and_json_otherwise(http_client):
    response = await http_client.get("/openapi/v2", headers={"Accept": openapi.V2_PROTOBUF})
    assert response.headers["Content-Type"] == openapi.V2_PROTOBUF_ALT
    assert (await response.read()).startswith(b"\x0a\x032.0")
    response = await http_client.get("/openapi/v2", headers={"Accept": "application/json"})
    assert (await response.json())["swagger"] == "2.0"


@pytest.mark.parametrize(
    "minor, extra",
    [
        (32, []),
        (27, []),
        (27, ["--output=plaintext-openapiv2"]),  # reads the gnostic protobuf v2 document
    ],
)
async def test_kubectl_explain_reads_the_documents(minor, extra):
    kubectl = kubectl_version(minor)
    if kubectl is None:
        pytest.skip(f"kubectl 1.{minor} is not installed")
    async with KubectlStub(setup=lambda app: openapi.add_routes(app, registry)) as stub:
        code, out = await stub.run_kubectl(kubectl, ["explain", "deployment.spec.strategy", *extra])
    assert code == 0, out
    assert "rollingUpdate" in out and "Rolling update config params" in out


def _resolve(schemas, node):
    while True:
        if "allOf" in node:
            node = node["allOf"][0]
        elif "$ref" in node:
            node = schemas[node["$ref"].rsplit("/", 1)[-1]]
        else:
            return node


def test_lean_document_keeps_what_kubectl_apply_reads():
    full = orjson.loads(SERVICE.v3_document("apis/apps/v1"))
    lean = orjson.loads(SERVICE.v3_document("apis/apps/v1", lean=True))
    assert len(SERVICE.v3_document("apis/apps/v1", lean=True)) < len(SERVICE.v3_document("apis/apps/v1")) / 5
    patch = lean["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    schemas = lean["components"]["schemas"]
    deployment = next(
        s
        for s in schemas.values()
        if s.get("x-kubernetes-group-version-kind", [{}])[0].get("kind") == "Deployment"
    )
    pod_spec = _resolve(
        schemas,
        _resolve(schemas, _resolve(schemas, deployment["properties"]["spec"])["properties"]["template"])[
            "properties"
        ]["spec"],
    )
    containers = pod_spec["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    ports = _resolve(schemas, containers["items"])["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "containerPort"
    strategy = _resolve(schemas, deployment["properties"]["spec"])["properties"]["strategy"]
    assert strategy["x-kubernetes-patch-strategy"] == "retainKeys"
    assert full["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]["description"]


async def test_kubectl_commands_other_than_explain_get_the_lean_variant(http_client):
    apply_index = await (
        await http_client.get("/openapi/v3", headers={"Kubectl-Command": "kubectl apply"})
    ).json()
    explain_index = await (
        await http_client.get("/openapi/v3", headers={"Kubectl-Command": "kubectl explain"})
    ).json()
    plain_index = await (await http_client.get("/openapi/v3")).json()
    lean_url = apply_index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    full_url = explain_index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert lean_url != full_url == plain_index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    # A hash names its variant whoever asks, so HTTP caches never mix them up.
    lean = await (await http_client.get(lean_url)).json()
    full = await (await http_client.get(full_url, headers={"Kubectl-Command": "kubectl apply"})).json()
    assert "description" not in lean["components"]["schemas"].get("a", {})
    assert "io.k8s.api.apps.v1.Deployment" in full["components"]["schemas"]


async def test_kubectl_explain_custom_resource():
    kubectl = kubectl_version(32)
    if kubectl is None:
        pytest.skip("kubectl 1.32 is not installed")
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "description": "Widget wishes.",
                "properties": {"size": {"type": "integer", "description": "How big."}},
            }
        },
    }

    def setup(app):
        openapi.add_routes(app, registry).register_custom_schema(
            "example.com", "v1", "Widget", "widgets", True, schema, ("status",)
        )

    async with KubectlStub(
        setup=setup, extra_resources={"example.com/v1": [("widgets", "Widget", True)]}
    ) as stub:
        code, out = await stub.run_kubectl(kubectl, ["explain", "widgets.spec"])
    assert code == 0, out
    assert "Widget wishes." in out and "How big." in out


# --- the lean document, read as kubectl reads it ------------------------------------------------

_MERGE_KEY = "x-kubernetes-patch-merge-key"
_STRATEGY = "x-kubernetes-patch-strategy"
_SCALARS = ("string", "integer", "number", "boolean")


def _kubectl_resolve(schemas, node):
    """strategicpatch.resolve: `allOf[0]`, then one `$ref`."""
    if node.get("allOf"):
        node = node["allOf"][0]
    if "$ref" in node:
        node = schemas[node["$ref"].rsplit("/", 1)[-1]]  # a dangling ref is an error in kubectl too
    return node


def _kubectl_lookup(schemas, schema, key, is_slice):
    """PatchMetaFromOpenAPIV3.LookupPatchMetadataFor{Struct,Slice}: (subschema, (merge key, strategy)) or None."""
    properties = schema.get("properties") or {}
    if key not in properties:
        return None  # "unable to find api field"
    sub = properties[key]
    meta = (sub.get(_MERGE_KEY), sub.get(_STRATEGY))
    if is_slice and isinstance(sub.get("items"), dict):
        sub = sub["items"]
    return _kubectl_resolve(schemas, sub), meta


def _full_target(schemas, node):
    for _ in range(8):
        if node.get("allOf"):
            node = node["allOf"][0]
        elif "$ref" in node:
            node = schemas[node["$ref"].rsplit("/", 1)[-1]]
        else:
            return node
    return node


def _compare_walks(full_schemas, full, lean_schemas, lean, path, depth=0):
    """Every lookup kubectl can make while diffing objects gives the same answer in both documents."""
    if depth > 10:
        return
    full_props = full.get("properties") or {}
    assert set(lean.get("properties") or {}) <= set(full_props), path
    if not full_props:
        assert not lean.get("properties"), path  # lookups below a map or a free-form object fail in both
    for key, sub in full_props.items():
        target = _full_target(full_schemas, sub)
        if target.get("type") in _SCALARS and not any(k in target for k in ("properties", "items")):
            continue  # a scalar's value is never looked up
        is_slice = sub.get("type") == "array" or "items" in sub
        want = _kubectl_lookup(full_schemas, full, key, is_slice)
        got = _kubectl_lookup(lean_schemas, lean, key, is_slice)
        assert got is not None, f"{path}.{key} is missing"
        assert got[1] == want[1], f"{path}.{key}: {got[1]} != {want[1]}"
        if is_slice and "merge" not in str(sub.get(_STRATEGY, "")).split(","):
            continue  # kubectl replaces the list whole; it never looks inside
        _compare_walks(full_schemas, want[0], lean_schemas, got[0], f"{path}.{key}", depth + 1)


def _schema_for(schemas, gvk):
    """kubectl's findResourceSchema: the first component whose GVK extension names the kind."""
    for schema in schemas.values():
        for candidate in schema.get("x-kubernetes-group-version-kind") or ():
            if (candidate.get("group", ""), candidate["version"], candidate["kind"]) == gvk:
                return schema
    return None


@pytest.mark.parametrize("gv", SERVICE.group_versions())
def test_lean_document_answers_every_patch_lookup_as_the_full_one(gv):
    full = orjson.loads(SERVICE.v3_document(gv))
    lean = orjson.loads(SERVICE.v3_document(gv, lean=True))
    full_schemas, lean_schemas = full["components"]["schemas"], lean["components"]["schemas"]
    kinds = 0
    for path, ops in full["paths"].items():
        patch = ops.get("patch")
        if patch is None or path.endswith(("/status", "/scale")):
            continue
        lean_patch = lean["paths"][path]["patch"]
        # What kubectl's field validation and patch-type checks read.
        assert lean_patch["x-kubernetes-group-version-kind"] == patch["x-kubernetes-group-version-kind"]
        assert [(p["name"], p["in"]) for p in lean_patch["parameters"]] == [("fieldValidation", "query")]
        smp = "application/strategic-merge-patch+json"
        assert (smp in lean_patch["requestBody"]["content"]) == (smp in patch["requestBody"]["content"])
        if smp not in patch["requestBody"]["content"]:
            continue
        gvk = tuple(patch["x-kubernetes-group-version-kind"][k] for k in ("group", "version", "kind"))
        lean_kind = _schema_for(lean_schemas, gvk)
        assert lean_kind is not None, gvk
        _compare_walks(full_schemas, _schema_for(full_schemas, gvk), lean_schemas, lean_kind, gvk[2])
        kinds += 1
    assert kinds or gv.startswith("apis/metrics")


def test_lean_document_keeps_status_and_drops_what_kubectl_never_reads():
    lean = orjson.loads(SERVICE.v3_document("api/v1", lean=True))
    schemas = lean["components"]["schemas"]
    pod = _schema_for(schemas, ("", "v1", "Pod"))
    conditions = _resolve(schemas, pod["properties"]["status"])["properties"]["conditions"]
    assert conditions[_MERGE_KEY] == "type"  # a manifest with a status still patches from v3
    spec = _resolve(schemas, pod["properties"]["spec"])["properties"]
    assert "restartPolicy" not in spec  # scalars are never looked up
    assert spec["tolerations"] == {}  # an atomic list: kubectl never looks inside
    assert spec["nodeSelector"] == {}  # a map: its values are never looked up
    ports = _resolve(schemas, spec["containers"]["items"])["properties"]["ports"]
    assert ports == {_MERGE_KEY: "containerPort", _STRATEGY: "merge"}  # its elements hold only scalars
    # Only kinds that take strategic merge patches are described, and nothing else with a GVK.
    described = {g["kind"] for s in schemas.values() for g in s.get("x-kubernetes-group-version-kind", ())}
    assert "DeleteOptions" not in described and "WatchEvent" not in described
    assert {"Pod", "Service", "ConfigMap"} <= described


def test_lean_document_of_custom_resources_has_no_schemas():
    service = openapi.OpenAPIService(registry)
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}},
    }
    service.register_custom_schema("example.com", "v1", "Widget", "widgets", True, schema, ("status",))
    lean = orjson.loads(service.v3_document("apis/example.com/v1", lean=True))
    patch = lean["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert "application/strategic-merge-patch+json" not in patch["requestBody"]["content"]
    assert lean["components"]["schemas"] == {}  # kubectl merge-patches custom resources without them
