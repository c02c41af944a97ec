"""A tiny in-memory Kubernetes API server for the client's unit tests.

Enough of the wire contract to exercise the client without the real server: discovery for a few
resources, get/list (with limit/continue)/create/update/merge-patch/delete, watch from a resourceVersion
with bookmarks and 410 for compacted history, and injected failures (`fail_next`) to test retries.
It is deliberately simple (no validation, no selectors beyond `metadata.name`) and is not pinnace's server.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

RESOURCES = {
    # group-version -> plural -> (kind, namespaced)
    "v1": {"pods": ("Pod", True), "nodes": ("Node", False), "namespaces": ("Namespace", False),
           "events": ("Event", True), "configmaps": ("ConfigMap", True)},
    "coordination.k8s.io/v1": {"leases": ("Lease", True)},
    "apps/v1": {"deployments": ("Deployment", True)},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(code: int, reason: str, message: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return web.Response(status=code, body=orjson.dumps(body), content_type="application/json")


@dataclass
class Injected:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None  # only requests with this method consume it


class FakeApiServer:
    def __init__(self) -> None:
        self.revision = 1
        self.compacted = 0
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.log: list[tuple[int, str, str, dict[str, Any]]] = []  # (rev, type, group-version/plural, object)
        self.changed = asyncio.Condition()
        self.fail_next: list[Injected] = []
        self.requests: list[tuple[str, str]] = []
        self.watches_open = 0
        self.watch_count = 0
        self.bookmark_interval = 0.2
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._watch_tasks: set[web.StreamResponse] = set()

    async def start(self, port: int | None = None) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        port = port or free_port()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    # -- state --------------------------------------------------------------------------------------

    async def write(self, event_type: str, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        meta = obj["metadata"]
        key = (resource, meta.get("namespace"), meta["name"])
        if event_type == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.log.append((self.revision, event_type, resource, obj))
        async with self.changed:
            self.changed.notify_all()
        return obj

    def compact(self) -> None:
        self.compacted = self.revision
        self.log = [e for e in self.log if e[0] > self.compacted]

    # -- HTTP ---------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        for i, injected in enumerate(self.fail_next):
            if injected.method in (None, request.method):
                del self.fail_next[i]
                body = injected.body or {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "code": injected.status, "reason": "", "message": "injected"}
                return web.Response(status=injected.status, body=orjson.dumps(body), headers=injected.headers,
                                    content_type="application/json")
        parts = [p for p in request.path.split("/") if p]
        if parts[:1] == ["api"]:
            group_version, rest = parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return status(404, "NotFound", "the server could not find the requested resource")
        if group_version not in RESOURCES:
            return status(404, "NotFound", "no such group")
        if not rest:
            resources = [{"name": plural, "kind": kind, "namespaced": namespaced, "singularName": "",
                          "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}
                         for plural, (kind, namespaced) in RESOURCES[group_version].items()]
            return web.json_response({"kind": "APIResourceList", "groupVersion": group_version,
                                      "resources": resources})
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, rest = rest[0], rest[1:]
        if plural not in RESOURCES[group_version]:
            return status(404, "NotFound", f"no resource {plural}")
        kind, namespaced = RESOURCES[group_version][plural]
        resource = f"{group_version}/{plural}"
        name = rest[0] if rest else None
        if request.method == "GET" and name is None:
            if request.query.get("watch") in ("true", "1"):
                return await self.watch(request, resource, namespace)
            return self.list(request, resource, namespace, kind)
        if request.method == "GET":
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                return status(404, "NotFound", f'{plural} "{name}" not found')
            return web.json_response(obj)
        if request.method == "POST":
            obj = orjson.loads(await request.read())
            meta = obj.setdefault("metadata", {})
            if namespaced:
                meta["namespace"] = namespace
            if (resource, meta.get("namespace"), meta["name"]) in self.objects:
                return status(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            obj.setdefault("kind", kind)
            obj.setdefault("apiVersion", group_version)
            return web.json_response(await self.write("ADDED", resource, obj), status=201)
        current = self.objects.get((resource, namespace, name))
        if current is None:
            return status(404, "NotFound", f'{plural} "{name}" not found')
        if request.method == "PUT":
            obj = orjson.loads(await request.read())
            rv = obj.get("metadata", {}).get("resourceVersion")
            if rv and rv != current["metadata"]["resourceVersion"]:
                return status(409, "Conflict", "the object has been modified")
            obj["metadata"]["uid"] = current["metadata"]["uid"]
            return web.json_response(await self.write("MODIFIED", resource, obj))
        if request.method == "PATCH":
            patch = orjson.loads(await request.read())
            merged = merge(orjson.loads(orjson.dumps(current)), patch)
            return web.json_response(await self.write("MODIFIED", resource, merged))
        if request.method == "DELETE":
            gone = orjson.loads(orjson.dumps(current))
            return web.json_response(await self.write("DELETED", resource, gone))
        return status(405, "MethodNotAllowed", "no")

    def _matches(self, resource: str, namespace: str | None, entry_resource: str, obj: dict[str, Any],
                 request: web.Request) -> bool:
        if entry_resource != resource:
            return False
        if namespace and obj["metadata"].get("namespace") != namespace:
            return False
        selector = request.query.get("fieldSelector", "")
        if selector.startswith("metadata.name="):
            return obj["metadata"]["name"] == selector.split("=", 1)[1]
        return True

    def list(self, request: web.Request, resource: str, namespace: str | None, kind: str) -> web.Response:
        items = [o for (r, _, _), o in sorted(self.objects.items(), key=lambda kv: kv[0])
                 if self._matches(resource, namespace, r, o, request)]
        offset = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0)
        meta: dict[str, Any] = {"resourceVersion": str(self.revision)}
        if limit and offset + limit < len(items):
            meta["continue"] = str(offset + limit)
            items = items[offset:offset + limit]
        else:
            items = items[offset:]
        # Like the real API, list items do not repeat kind/apiVersion.
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return web.json_response({"kind": f"{kind}List", "apiVersion": resource.rsplit("/", 1)[0],
                                  "metadata": meta, "items": items})

    async def watch(self, request: web.Request, resource: str, namespace: str | None) -> web.StreamResponse:
        rv = int(request.query.get("resourceVersion") or self.revision)
        bookmarks = request.query.get("allowWatchBookmarks") == "true"
        timeout = float(request.query.get("timeoutSeconds") or 3600)
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        self.watches_open += 1
        self.watch_count += 1
        try:
            if rv < self.compacted:
                error = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
                         "message": f"too old resource version: {rv} ({self.compacted})"}
                await response.write(orjson.dumps({"type": "ERROR", "object": error}) + b"\n")
                return response
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                snapshot = [e for e in self.log if e[0] > rv]
                for _rv, event_type, entry_resource, obj in snapshot:
                    if self._matches(resource, namespace, entry_resource, obj, request):
                        await response.write(orjson.dumps({"type": event_type, "object": obj}) + b"\n")
                if snapshot:
                    rv = snapshot[-1][0]
                if self.log and self.log[-1][0] > rv:
                    continue
                async with self.changed:
                    try:
                        await asyncio.wait_for(self.changed.wait(), self.bookmark_interval)
                    except TimeoutError:
                        if bookmarks:
                            bookmark = {"kind": "Bookmark", "metadata": {"resourceVersion": str(rv)}}
                            await response.write(orjson.dumps({"type": "BOOKMARK", "object": bookmark}) + b"\n")
            return response
        finally:
            self.watches_open -= 1


def merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge(target.get(key), value)
    return target
