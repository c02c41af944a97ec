"""metrics.k8s.io/v1beta1: NodeMetrics and PodMetrics for `kubectl top`, read from the kubelets.

Kubernetes serves this group through metrics-server, an aggregated API server that scrapes every
kubelet's `/stats/summary` and keeps the last window in memory. pinnace serves it from the API server
itself and scrapes on demand: a request reads the summaries of the nodes it needs, in parallel, with
the API server's kubelet client certificate. CPU is the kubelet's rate since its previous scrape, so a
node scraped for the first time (or not for a minute) is read twice half a second apart, the way
metrics-server reports nothing until it holds two points; requests within a second of a scrape are
answered from it. `window` is the time between the two reads
the rate came from; memory is the working set, in `Ki` as metrics-server prints it.

A node whose kubelet cannot be reached answers 503 for a `get` (of the node or of a pod on it); a
`list` leaves such nodes out with a warning, as metrics-server does, and answers 503 only when no
node could be read at all.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from typing import Any

import aiohttp
import orjson
import yaml
from aiohttp import web

from pinnace.api.kinds import ResourceInfo
from pinnace.api.selectors import SelectorError, parse_field_selector, parse_label_selector
from pinnace.apiserver.errors import BadRequest, MethodNotAllowed, NotFound, ServiceUnavailable
from pinnace.apiserver.node_proxy import KubeletUnreachable, kubelet_client_certificate, kubelet_get

log = logging.getLogger(__name__)

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
NODE_METRICS = ResourceInfo(GROUP, VERSION, "NodeMetrics", "nodes", "", False, verbs=("get", "list"))
POD_METRICS = ResourceInfo(GROUP, VERSION, "PodMetrics", "pods", "", True, verbs=("get", "list"))
INFOS = (NODE_METRICS, POD_METRICS)
# A scrape older than this is too old to take a CPU rate from: read the node twice instead.
_FRESH_SECONDS = 60.0
_RESAMPLE_GAP = 0.5
# Requests within this long of a scrape are answered from it, as metrics-server answers from memory.
_REUSE_SECONDS = 1.0


def lookup(plural: str) -> ResourceInfo | None:
    return {"nodes": NODE_METRICS, "pods": POD_METRICS}.get(plural)


def cpu_quantity(nanocores: int | float | None) -> str:
    return f"{int(nanocores or 0)}n"


def memory_quantity(size: int | float | None) -> str:
    return f"{int(size or 0) // 1024}Ki"


def _window(seconds: float) -> str:
    """A Go duration string as metrics-server writes it ("10.062s")."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetricsApi:
    """The metrics.k8s.io handlers of one API server; remembers when each node was last scraped."""

    def __init__(self, server: Any) -> None:
        self.server = server
        # node name -> (monotonic time of its last summary, the summary, the window its rates cover)
        self._scraped: dict[str, tuple[float, dict, float]] = {}

    async def handle(self, request: web.Request, version: str, rest: list[str]) -> web.Response:
        """`rest`: the path after /apis/metrics.k8s.io/<version>/."""
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        info = lookup(rest[0]) if version == VERSION and rest else None
        if info is None or len(rest) > 2 or (namespace is not None and not info.namespaced):
            raise NotFound("the server could not find the requested resource")
        name = rest[1] if len(rest) == 2 else None
        if info.namespaced and name is not None and namespace is None:
            raise NotFound("the server could not find the requested resource")
        from pinnace.apiserver.server import RESOURCE, VERB

        request[RESOURCE] = info.plural
        request[VERB] = "GET" if name is not None else "LIST"
        if request.method != "GET" or request.query.get("watch", "").lower() in ("true", "1"):
            raise MethodNotAllowed(
                f"the server does not allow this method on the requested resource ({request.method} {info.plural})",
                kind=info.plural, group=GROUP,
            )
        try:
            labels = parse_label_selector(request.query.get("labelSelector"))
            fields = parse_field_selector(request.query.get("fieldSelector"))
        except SelectorError as error:
            raise BadRequest(str(error)) from error
        warnings: list[str] = []
        if info is NODE_METRICS:
            body = await self._nodes(name, labels, fields, warnings)
        else:
            body = await self._pods(namespace, name, labels, fields, warnings)
        headers = [("Warning", '299 - "' + w.replace('"', "'") + '"') for w in warnings]
        if "yaml" in (request.headers.get("Accept") or "") and "json" not in (request.headers.get("Accept") or ""):
            response = web.Response(body=yaml.safe_dump(body, sort_keys=False).encode(), content_type="application/yaml")
        else:
            response = web.Response(body=orjson.dumps(body), content_type="application/json")
        for key, value in headers:
            response.headers.add(key, value)
        return response

    # ---- NodeMetrics ----

    async def _nodes(self, name: str | None, labels: Any, fields: Any, warnings: list[str]) -> dict:
        nodes = await self.server.cached_objects("v1/nodes")
        if name is not None:
            node = next((n for n in nodes if n["metadata"]["name"] == name), None)
            if node is None:
                raise NotFound(f'nodemetrics.metrics.k8s.io "{name}" not found', name=name, group=GROUP, kind="nodes")
            summary = (await self._summaries([node], strict=True))[name]
            return self._node_metrics(node, summary)
        chosen = [n for n in nodes if labels.matches(n["metadata"].get("labels"))
                  and fields.matches({"metadata.name": n["metadata"]["name"]})]
        summaries = await self._summaries(chosen, strict=False, warnings=warnings)
        items = [self._node_metrics(n, summaries[n["metadata"]["name"]]) for n in chosen
                 if n["metadata"]["name"] in summaries]
        return {"kind": "NodeMetricsList", "apiVersion": f"{GROUP}/{VERSION}", "metadata": {}, "items": items}

    def _node_metrics(self, node: dict, scraped: tuple[dict, float]) -> dict:
        summary, window = scraped
        stats = summary.get("node") or {}
        cpu, memory = stats.get("cpu") or {}, stats.get("memory") or {}
        return {
            "kind": "NodeMetrics",
            "apiVersion": f"{GROUP}/{VERSION}",
            "metadata": {"name": node["metadata"]["name"], "creationTimestamp": _now(),
                         "labels": dict(node["metadata"].get("labels") or {})},
            "timestamp": cpu.get("time") or _now(),
            "window": _window(window),
            "usage": {"cpu": cpu_quantity(cpu.get("usageNanoCores")),
                      "memory": memory_quantity(memory.get("workingSetBytes"))},
        }

    # ---- PodMetrics ----

    async def _pods(self, namespace: str | None, name: str | None, labels: Any, fields: Any,
                    warnings: list[str]) -> dict:
        pods = await self.server.cached_objects("v1/pods", namespace)
        if name is not None:
            pod = next((p for p in pods if p["metadata"]["name"] == name), None)
            if pod is None or not (pod.get("spec") or {}).get("nodeName"):
                raise NotFound(f'podmetrics.metrics.k8s.io "{namespace}/{name}" not found',
                               name=name, group=GROUP, kind="pods")
            node = await self._node(pod["spec"]["nodeName"])
            summaries = await self._summaries([node], strict=True)
            metrics = self._pod_metrics([pod], summaries)
            if not metrics:
                raise NotFound(f'podmetrics.metrics.k8s.io "{namespace}/{name}" not found',
                               name=name, group=GROUP, kind="pods")
            return metrics[0]
        chosen = [p for p in pods if (p.get("spec") or {}).get("nodeName")
                  and labels.matches(p["metadata"].get("labels"))
                  and fields.matches({"metadata.name": p["metadata"]["name"],
                                      "metadata.namespace": p["metadata"].get("namespace", "")})]
        node_names = {p["spec"]["nodeName"] for p in chosen}
        nodes = [n for n in await self.server.cached_objects("v1/nodes") if n["metadata"]["name"] in node_names]
        summaries = await self._summaries(nodes, strict=False, warnings=warnings) if nodes else {}
        items = self._pod_metrics(chosen, summaries)
        return {"kind": "PodMetricsList", "apiVersion": f"{GROUP}/{VERSION}", "metadata": {}, "items": items}

    async def _node(self, name: str) -> dict:
        for node in await self.server.cached_objects("v1/nodes"):
            if node["metadata"]["name"] == name:
                return node
        raise ServiceUnavailable(f'unable to fetch metrics from node {name}: the node does not exist')

    def _pod_metrics(self, pods: list[dict], summaries: dict[str, tuple[dict, float]]) -> list[dict]:
        by_uid: dict[str, tuple[dict, float]] = {}
        for summary, window in summaries.values():
            for stats in summary.get("pods") or ():
                uid = (stats.get("podRef") or {}).get("uid")
                if uid:
                    by_uid[uid] = (stats, window)
        items = []
        for pod in pods:
            found = by_uid.get(pod["metadata"].get("uid", ""))
            if found is None:
                continue  # not running yet, or its node was unreachable
            stats, window = found
            containers = [
                {"name": c["name"],
                 "usage": {"cpu": cpu_quantity((c.get("cpu") or {}).get("usageNanoCores")),
                           "memory": memory_quantity((c.get("memory") or {}).get("workingSetBytes"))}}
                for c in stats.get("containers") or ()
            ]
            items.append({
                "kind": "PodMetrics",
                "apiVersion": f"{GROUP}/{VERSION}",
                "metadata": {"name": pod["metadata"]["name"], "namespace": pod["metadata"].get("namespace", ""),
                             "creationTimestamp": _now(), "labels": dict(pod["metadata"].get("labels") or {})},
                "timestamp": (stats.get("cpu") or {}).get("time") or _now(),
                "window": _window(window),
                "containers": containers,
            })
        return items

    # ---- scraping ----

    async def _summaries(self, nodes: list[dict], strict: bool,
                         warnings: list[str] | None = None) -> dict[str, tuple[dict, float]]:
        """node name -> (its `/stats/summary`, the window its CPU rate covers), read in parallel.
        `strict`: one unreachable kubelet answers 503; else it is left out (503 when all are)."""
        cert, key = await asyncio.to_thread(kubelet_client_certificate, self.server)
        results = await asyncio.gather(*(self._scrape(n, cert, key) for n in nodes), return_exceptions=True)
        summaries: dict[str, tuple[dict, float]] = {}
        failures: list[str] = []
        for node, result in zip(nodes, results, strict=True):
            name = node["metadata"]["name"]
            if isinstance(result, BaseException):
                if not isinstance(result, (aiohttp.ClientError, OSError, TimeoutError, KubeletUnreachable, ValueError)):
                    raise result
                failures.append(f"unable to fetch metrics from node {name}: {result or type(result).__name__}")
            else:
                summaries[name] = result
        if failures and (strict or not summaries):
            raise ServiceUnavailable("; ".join(failures))
        if warnings is not None:
            warnings.extend(failures)
        return summaries

    async def _scrape(self, node: dict, cert: str | None, key: str | None) -> tuple[dict, float]:
        name = node["metadata"]["name"]
        now = time.monotonic()
        last = self._scraped.get(name)
        if last is not None and now - last[0] < _REUSE_SECONDS:
            return last[1], last[2]  # a rate over a few milliseconds would read as zero (clock ticks)
        previous = last[0] if last is not None else None
        if previous is None or now - previous > _FRESH_SECONDS:
            await kubelet_get(node, "/stats/summary", client_cert=cert, client_key=key, timeout=5)
            previous = time.monotonic()
            await asyncio.sleep(_RESAMPLE_GAP)
        summary = await kubelet_get(node, "/stats/summary", client_cert=cert, client_key=key, timeout=5)
        now = time.monotonic()
        self._scraped[name] = (now, summary, now - previous)
        return summary, now - previous
