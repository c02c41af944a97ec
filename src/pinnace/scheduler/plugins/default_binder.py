"""DefaultBinder: bind through the API server's `pods/binding` subresource, as Kubernetes does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import CycleState, PodInfo, Status, error

NAME = "DefaultBinder"


class DefaultBinder:
    name = NAME

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        self.handle = handle

    async def bind(self, state: CycleState, pod: PodInfo, node_name: str) -> Status | None:
        client = getattr(self.handle, "client", None)
        if client is None:
            return error("DefaultBinder: no API client")
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        await client.post_subresource("v1/pods", pod.name, "binding", body, namespace=pod.namespace)
        return None
