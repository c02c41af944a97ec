"""CustomResourceDefinitions: a CRD makes its kind served, validated, printed and watched."""

from __future__ import annotations

import json
import time

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              color: {type: string, default: blue}
          status:
            type: object
            properties:
              ready: {type: boolean}
"""


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_crd_serves_its_kind(kubectl):
    assert "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created" in ok(kubectl("apply", "-f", "-", input=CRD))
    ok(kubectl("wait", "--for=condition=established", "crd/widgets.example.com", "--timeout=20s"))
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}, "status": {"ready": True}}
    deadline = time.monotonic() + 10
    while True:  # kubectl's discovery cache learns the new kind on its next miss
        result = kubectl("create", "-f", "-", input=json.dumps(widget))
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert ok(result) == "widget.example.com/w1 created\n"
    out = ok(kubectl("get", "widgets"))
    assert out.splitlines()[0].split() == ["NAME", "SIZE"] and out.splitlines()[1].split() == ["w1", "3"]
    created = json.loads(ok(kubectl("get", "wd", "w1", "-o", "json")))
    assert created["spec"] == {"size": 3, "color": "blue"}  # defaulted from the schema
    assert "status" not in created  # the status subresource owns status
    result = kubectl("create", "-f", "-", input=json.dumps({**widget, "metadata": {"name": "w2"}, "spec": {"size": 0}}))
    assert result.returncode == 1 and "spec.size" in result.stderr
    result = kubectl("create", "-f", "-", input=json.dumps({**widget, "metadata": {"name": "w3"}, "spec": {"size": 1, "shape": "round"}}))
    assert result.returncode == 1 and 'unknown field "spec.shape"' in result.stderr
    assert "widget.example.com/w1 patched" in ok(kubectl("patch", "widget", "w1", "--type=merge", "-p", '{"spec":{"size":5}}'))
    assert json.loads(ok(kubectl("get", "widget", "w1", "-o", "json")))["spec"]["size"] == 5
    resources = ok(kubectl("api-resources", "--api-group=example.com")).splitlines()
    assert resources[1].split() == ["widgets", "wd", "example.com/v1", "true", "Widget"]
    out = ok(kubectl("patch", "widget", "w1", "--subresource=status", "--type=merge", "-p", '{"status":{"ready":true}}'))
    assert "patched" in out
    status_now = json.loads(ok(kubectl("get", "widget", "w1", "-o", "json")))
    assert status_now["status"] == {"ready": True} and status_now["spec"]["size"] == 5
    crd = json.loads(ok(kubectl("get", "crd", "widgets.example.com", "-o", "json")))
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"
    ok(kubectl("delete", "crd", "widgets.example.com"))
    result = kubectl("get", "--raw", "/apis/example.com/v1/namespaces/default/widgets/w1")
    assert result.returncode == 1


async def test_custom_objects_are_listed_and_watched(api_server):
    import asyncio

    import aiohttp
    import orjson
    import yaml

    crd = yaml.safe_load(CRD)
    crd["spec"]["scope"] = "Cluster"
    async with aiohttp.ClientSession(base_url=api_server.insecure_url) as http:
        async with http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd) as response:
            assert response.status == 201
        path = "/apis/example.com/v1/widgets"
        for _ in range(50):
            async with http.get(path) as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.05)
        async with http.get(f"{path}?watch=true&resourceVersion=0&timeoutSeconds=5") as watch:
            async with http.post(path, json={"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "c1"}, "spec": {"size": 1}}) as response:
                assert response.status == 201
            event = orjson.loads(await asyncio.wait_for(watch.content.readline(), 5))
        assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "c1"
        async with http.get(path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}) as response:
            table = await response.json()
        assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size"]
        assert table["rows"][0]["cells"] == ["c1", 1]
