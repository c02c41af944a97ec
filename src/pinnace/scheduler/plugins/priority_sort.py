"""PrioritySort: the queue order, higher `spec.priority` first, then first come first served."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NAME = "PrioritySort"


class PrioritySort:
    name = NAME

    def __init__(self, args: Mapping[str, Any] | None = None, handle: Any = None) -> None:
        pass

    @staticmethod
    def sort_key(priority: int, timestamp: float, sequence: int) -> tuple[int, float, int]:
        return (-priority, timestamp, sequence)
