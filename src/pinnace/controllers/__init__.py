"""pinnace's controllers: the reconciliation loops of Kubernetes' kube-controller-manager.

Each module holds one controller (a `pinnace.client.Controller` subclass with an idempotent
`reconcile(key)`), or the pure logic it needs:

| controller | module | pure logic |
|---|---|---|
| ReplicaSet, ReplicationController | `replicaset` | `pods` (ranking, templates), `expectations` |
| Deployment | `deployment` | `rollout` (surge/unavailable, proportional scaling, revisions, status) |
| Endpoints, EndpointSlice | `endpoints` | `endpoint_math` |
| node lifecycle, node IPAM | `nodelifecycle`, `nodeipam` | taints, tolerations, eviction delay |
| garbage collector | `garbagecollector` | |
| Namespace, ServiceAccounts | `namespace`, `serviceaccounts` | |
| Job, CronJob | `job`, `cronjob` | `cron` |
| DaemonSet, StatefulSet | `daemonset`, `statefulset` | `history` (ControllerRevisions) |
| PodDisruptionBudget status | `disruption` | |

`manager.ControllerManager(client, config)` runs them all, leader-elected, on one shared
InformerFactory; `base.ControllerConfig` holds the knobs. Shared helpers on object dicts are in `objects`.
"""
