"""pinnace.client: how every pinnace component talks to the API server.

The async REST client (`Client`), typed errors from `Status` bodies, shared informers (list + watch +
indexed cache + handlers), the rate-limited work queue, the `Controller` base class, leader election on
Leases and the event recorder. See docs/internals.md for the interface other packages rely on.
"""

from pinnace.client.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock
from pinnace.client.controller import Controller
from pinnace.client.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Gone,
    InternalError,
    Invalid,
    MethodNotAllowed,
    NotFound,
    ServerTimeout,
    ServiceUnavailable,
    Timeout,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    error_from_status,
)
from pinnace.client.events import EventRecorder
from pinnace.client.informer import (
    NAMESPACE_INDEX,
    Informer,
    InformerFactory,
    controller_owner_index,
    field_index,
    label_index,
    meta_namespace_key,
    namespace_index,
    owner_index,
    split_key,
)
from pinnace.client.kubeconfig import ClientConfig, KubeconfigError, load_incluster_config, load_kubeconfig
from pinnace.client.leaderelection import LeaderElector
from pinnace.client.ratelimit import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    TokenBucket,
    default_controller_rate_limiter,
)
from pinnace.client.rest import Client, ConnectionFailed, parse_resource, resource_path
from pinnace.client.workqueue import QueueMetrics, WorkQueue

__all__ = [
    "NAMESPACE_INDEX",
    "SYSTEM_CLOCK",
    "AlreadyExists",
    "ApiError",
    "BadRequest",
    "BucketRateLimiter",
    "Client",
    "ClientConfig",
    "Clock",
    "Conflict",
    "ConnectionFailed",
    "Controller",
    "EventRecorder",
    "Expired",
    "FakeClock",
    "Forbidden",
    "Gone",
    "Informer",
    "InformerFactory",
    "InternalError",
    "Invalid",
    "ItemExponentialFailureRateLimiter",
    "KubeconfigError",
    "LeaderElector",
    "MaxOfRateLimiter",
    "MethodNotAllowed",
    "NotFound",
    "QueueMetrics",
    "ServerTimeout",
    "ServiceUnavailable",
    "SystemClock",
    "Timeout",
    "TokenBucket",
    "TooManyRequests",
    "Unauthorized",
    "UnsupportedMediaType",
    "WorkQueue",
    "controller_owner_index",
    "default_controller_rate_limiter",
    "error_from_status",
    "field_index",
    "label_index",
    "load_incluster_config",
    "load_kubeconfig",
    "meta_namespace_key",
    "namespace_index",
    "owner_index",
    "parse_resource",
    "resource_path",
    "split_key",
]
