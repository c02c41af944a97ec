"""ImageLocality: prefer nodes that already have the pod's images (from Node `status.images`).

Kubernetes' formula: each image present on the node adds its size scaled by the fraction of nodes
having it (so an image everywhere counts little); the sum is clamped between 23 MB and 1000 MB per
container and mapped to 0..100.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pinnace.scheduler.framework import (
    MAX_NODE_SCORE,
    SKIP,
    CycleState,
    NodeInfo,
    PodInfo,
    Status,
    normalized_image_name,
)

NAME = "ImageLocality"
MB = 1024 * 1024
MIN_THRESHOLD = 23 * MB
MAX_CONTAINER_THRESHOLD = 1000 * MB


class ImageLocality:
    name = NAME
    events = ("Node/Add", "Node/Update")

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        self.handle = handle

    def _images(self, pod: PodInfo) -> list[str]:
        spec = pod.spec
        containers = list(spec.get("initContainers") or ()) + list(spec.get("containers") or ())
        return [normalized_image_name(c["image"]) for c in containers if c.get("image")]

    def pre_score(self, state: CycleState, pod: PodInfo, nodes: list[NodeInfo]) -> Status | None:
        images = self._images(pod)
        snapshot = self.handle.snapshot if self.handle is not None else None
        image_nodes = snapshot.image_nodes if snapshot is not None else None
        if image_nodes is not None and not any(i in image_nodes for i in images):
            return SKIP  # no node has any of the images: every node would score 0
        total = len(snapshot) if snapshot is not None else len(nodes)
        state[NAME] = (images, image_nodes, total, len(pod.spec.get("containers") or ()) + len(
            pod.spec.get("initContainers") or ()))
        return None

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        images, image_nodes, total, containers = state[NAME]
        total = total or 1
        sum_scores = 0
        for image in images:
            size = node.image_sizes.get(image)
            if size is None:
                continue
            spread = (image_nodes.get(image, 1) if image_nodes is not None else 1) / total
            sum_scores += int(size * spread)
        max_threshold = MAX_CONTAINER_THRESHOLD * max(containers, 1)
        sum_scores = min(max(sum_scores, MIN_THRESHOLD), max_threshold)
        return MAX_NODE_SCORE * (sum_scores - MIN_THRESHOLD) // (max_threshold - MIN_THRESHOLD)
