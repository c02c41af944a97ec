"""The `scale` subresource of custom resources, at the paths their CRD names.

A CRD version with `subresources.scale` serves an `autoscaling/v1` Scale, as kube-apiserver does:
- `spec.replicas` is read from and written to `specReplicasPath` (`.spec.replicas` for most kinds);
- `status.replicas` is read from `statusReplicasPath` (0 while it is absent);
- `status.selector` is read from `labelSelectorPath` when the CRD names one (a label selector in its
  string form, `app=web`, as the HorizontalPodAutoscaler wants it).
A write changes the object through the ordinary update path, so the CRD's schema validates the new
replica count, the generation moves, and a concurrent write is retried (a `resourceVersion` in a PUT
Scale is a precondition, a 409 when stale).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from aiohttp import web

from pinnace.api import crd as crds
from pinnace.apiserver.errors import ApiError, BadRequest, Conflict, Invalid, MethodNotAllowed, cause
from pinnace.apiserver.registry import object_of

if TYPE_CHECKING:
    from pinnace.apiserver.handlers import Output, ResourceHandlers, Target

_SEGMENT = re.compile(r"\.([^.\[\]]+)")


def scale_paths(crd: dict, version: str) -> dict:
    """The version's `subresources.scale` block (specReplicasPath, statusReplicasPath, labelSelectorPath)."""
    entry = crds.version_entry(crd, version) or {}
    return dict((entry.get("subresources") or {}).get("scale") or {})


def scale_of(obj: dict, paths: dict) -> dict:
    """The autoscaling/v1 Scale of a custom object."""
    meta = obj.get("metadata") or {}
    replicas = crds.json_path(obj, paths.get("specReplicasPath") or ".spec.replicas")
    current = crds.json_path(obj, paths.get("statusReplicasPath") or ".status.replicas")
    status: dict[str, Any] = {"replicas": current if isinstance(current, int) else 0}
    if paths.get("labelSelectorPath"):
        selector = crds.json_path(obj, paths["labelSelectorPath"])
        if isinstance(selector, str) and selector:
            status["selector"] = selector
    scale_meta = {
        key: meta[key]
        for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        if meta.get(key) is not None
    }
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": replicas if isinstance(replicas, int) else 0},
        "status": status,
    }


def set_path(obj: dict, path: str, value: Any) -> None:
    """Set the field a simple `.a.b.c` path names, creating the objects on the way."""
    names = _SEGMENT.findall(path)
    if not names:
        raise BadRequest(f"the scale path {path!r} is not a simple field path")
    node = obj
    for name in names[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[names[-1]] = value


def replicas_of(body: Any, name: str) -> int:
    replicas = ((body or {}).get("spec") or {}).get("replicas") if isinstance(body, dict) else None
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise Invalid.fields(
            "Scale",
            "autoscaling",
            name,
            [cause("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")],
        )
    return replicas


def _respond(scale: dict, output: Output) -> web.Response:
    if output.format == "yaml":
        return web.Response(
            body=yaml.safe_dump(scale, sort_keys=False).encode(), content_type="application/yaml"
        )
    response = web.Response(body=orjson.dumps(scale))
    response.content_type = "application/json"
    return response


async def handle(
    handlers: ResourceHandlers, request: web.Request, target: Target, output: Output, crd: dict
) -> web.Response:
    """GET, PUT and PATCH of `<custom resource>/<name>/scale`."""
    from pinnace.api import patch as patching
    from pinnace.apiserver.handlers import RequestState

    info, name = target.info, target.name or ""
    paths = scale_paths(crd, info.version)
    registry = handlers.registry
    method = request.method
    if method not in ("GET", "PUT", "PATCH"):
        raise MethodNotAllowed(
            f"the server does not allow this method on the requested resource ({method} scale)"
        )
    raw = b"" if method == "GET" else await handlers.read_body(request)
    content_type = request.headers.get("Content-Type", "application/json")
    dry_run = bool(request.query.getall("dryRun", []))
    validate = handlers.validator(info, request, b"", RequestState())
    for _attempt in range(5):
        kv = await registry.get_kv(info, target.namespace, name)
        obj = object_of(kv, info)
        scale = scale_of(obj, paths)
        if method == "GET":
            return _respond(scale, output)
        precondition = None
        if method == "PUT":
            body = handlers.decode_body(raw, content_type)
            precondition = (
                ((body or {}).get("metadata") or {}).get("resourceVersion")
                if isinstance(body, dict)
                else None
            )
            if precondition and precondition != obj["metadata"]["resourceVersion"]:
                raise Conflict.modified(info.plural, info.group, name)
        else:
            try:
                body = patching.apply_patch(
                    scale,
                    raw,
                    content_type,
                    group="autoscaling",
                    version="v1",
                    kind="Scale",
                    is_custom=False,
                    field_manager=request.query.get("fieldManager"),
                    force=request.query.get("force", "").lower() in ("true", "1"),
                    subresource="scale",
                )
            except patching.PatchError as error:
                status = error.status()
                raise ApiError(
                    status.get("message", ""), code=status["code"], reason=status.get("reason")
                ) from None
        replicas = replicas_of(body, name)
        if (
            replicas == scale["spec"]["replicas"]
            and crds.json_path(obj, paths.get("specReplicasPath") or ".spec.replicas") is not None
        ):
            return _respond(scale, output)
        set_path(obj, paths.get("specReplicasPath") or ".spec.replicas", replicas)
        try:
            updated, _ = await registry.update(
                info, target.namespace, name, obj, dry_run=dry_run, validate=validate, current=kv
            )
        except Conflict:
            if method == "PUT" and precondition:
                raise
            continue  # written meanwhile: scale the newer object
        return _respond(scale_of(updated, paths), output)
    raise Conflict.modified(info.plural, info.group, name)
