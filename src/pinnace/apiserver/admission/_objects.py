"""Small helpers the admission plugins share: listing a namespace's objects, pod containers, quantities."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from pinnace.api.quantity import parse_quantity


async def list_objects(server: Any, resource: str, namespace: str | None) -> list[dict]:
    """The objects of `resource` (in `namespace`): from the security layer's write-through cache for the
    small kinds admission reads on every pod write (copies: callers may edit them), else from the
    resource's watch cache, which has seen every write this server acknowledged (shared: read only)."""
    cached = server.security.cached(resource, namespace)
    if cached is not None:
        return copy.deepcopy(cached)
    return await server.cached_objects(resource, namespace)


def containers(pod: dict, init: bool = True) -> list[dict]:
    spec = pod.get("spec") or {}
    out = [c for c in spec.get("containers") or () if isinstance(c, dict)]
    if init:
        out += [c for c in spec.get("initContainers") or () if isinstance(c, dict)]
    return out


def quantity(value: Any) -> Decimal | None:
    """A quantity, or None for absent or malformed values (schema validation reports those)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        return parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError, AttributeError, KeyError, IndexError):
        return None


def format_quantity(value: Decimal, resource: str) -> str:
    """Print a quantity the way users wrote it: millicores for CPU when fractional, else plain numbers."""
    if resource.endswith("cpu") and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    return str(int(value)) if value == value.to_integral_value() else str(value)
