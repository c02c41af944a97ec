"""Node IPAM: give every node a pod CIDR (`spec.podCIDR`, `spec.podCIDRs`) from the cluster CIDR.

Kubernetes' range allocator: the cluster CIDR (10.42.0.0/16) is cut into /24s (`node_cidr_mask_size`), a
node without one gets the lowest free block, and a node's block is free again once the node is gone.
Which blocks are taken is read from the nodes themselves; the only memory kept is the blocks handed out
whose node update has not reached the cache yet, so two nodes never get the same block.
"""

from __future__ import annotations

import asyncio
import ipaddress

from pinnace.client import NotFound
from pinnace.controllers.base import BaseController
from pinnace.controllers.objects import Object, name_of


class NodeIpamController(BaseController):
    name = "nodeipam"

    def setup(self) -> None:
        self.nodes = self.informer("v1/nodes")
        self.nodes.add_handler(on_add=self.enqueue, on_update=lambda old, new: self.enqueue(new))
        self.pending: dict[str, str] = {}  # node name -> CIDR written but not yet seen in the cache
        self.lock = asyncio.Lock()

    def _taken(self) -> set[str]:
        taken = set(self.pending.values())
        for node in self.nodes.list():
            for cidr in (node.get("spec") or {}).get("podCIDRs") or [node.get("spec", {}).get("podCIDR")]:
                if cidr:
                    taken.add(str(ipaddress.ip_network(cidr, strict=False)))
        return taken

    def next_free(self) -> str | None:
        cluster = ipaddress.ip_network(self.config.cluster_cidr, strict=False)
        taken = self._taken()
        for block in cluster.subnets(new_prefix=self.config.node_cidr_mask_size):
            if str(block) not in taken:
                return str(block)
        return None

    async def reconcile(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            self.pending.pop(key, None)
            return
        if (node.get("spec") or {}).get("podCIDR"):
            self.pending.pop(key, None)
            return
        async with self.lock:  # one allocation at a time: two workers must not pick the same block
            cidr = self.pending.get(key) or self.next_free()
            if cidr is None:
                self.record(node, "Warning", "CIDRNotAvailable", f"Node {key} status is now: CIDRNotAvailable")
                return
            self.pending[key] = cidr
        patch: Object = {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
        try:
            await self.client.patch("v1/nodes", name_of(node), patch, patch_type="merge")
        except NotFound:
            self.pending.pop(key, None)
            return
        self.record(node, "Normal", "CIDRAssignmentSucceeded", f"Assigned {cidr} to node {key}")
