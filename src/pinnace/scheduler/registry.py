"""The in-tree plugins by name, the default plugin set and Kubernetes' default score weights.

A plugin class is constructed as `Plugin(args, handle)`: `args` from the profile's pluginConfig,
`handle` giving access to the cluster snapshot (framework.Handle). Out-of-tree plugins are added by
putting their class in REGISTRY before building a Scheduler.
"""

from __future__ import annotations

from typing import Any

from pinnace.scheduler.plugins.balanced_allocation import BalancedAllocation
from pinnace.scheduler.plugins.default_binder import DefaultBinder
from pinnace.scheduler.plugins.default_preemption import DefaultPreemption
from pinnace.scheduler.plugins.image_locality import ImageLocality
from pinnace.scheduler.plugins.inter_pod_affinity import InterPodAffinity
from pinnace.scheduler.plugins.node_affinity import NodeAffinity
from pinnace.scheduler.plugins.node_name import NodeName
from pinnace.scheduler.plugins.node_ports import NodePorts
from pinnace.scheduler.plugins.node_resources_fit import NodeResourcesFit
from pinnace.scheduler.plugins.node_unschedulable import NodeUnschedulable
from pinnace.scheduler.plugins.pod_topology_spread import PodTopologySpread
from pinnace.scheduler.plugins.priority_sort import PrioritySort
from pinnace.scheduler.plugins.taint_toleration import TaintToleration

REGISTRY: dict[str, Any] = {
    cls.name: cls
    for cls in (
        PrioritySort,
        NodeUnschedulable,
        NodeName,
        TaintToleration,
        NodeAffinity,
        NodePorts,
        NodeResourcesFit,
        InterPodAffinity,
        PodTopologySpread,
        BalancedAllocation,
        ImageLocality,
        DefaultPreemption,
        DefaultBinder,
    )
}

# Order matters for Filter: cheap, decisive checks first, as Kubernetes orders them.
DEFAULT_PLUGINS = (
    "PrioritySort",
    "NodeUnschedulable",
    "NodeName",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
    "DefaultPreemption",
    "NodeResourcesBalancedAllocation",
    "ImageLocality",
    "DefaultBinder",
)

DEFAULT_WEIGHTS = {
    "TaintToleration": 3,
    "NodeAffinity": 2,
    "PodTopologySpread": 2,
    "InterPodAffinity": 2,
    "NodeResourcesFit": 1,
    "NodeResourcesBalancedAllocation": 1,
    "ImageLocality": 1,
}
