"""Kubernetes resource quantities ("500m", "1Gi", "2e3") as exact Decimals.

Same grammar as apimachinery's resource.Quantity: a signed decimal number followed by a binary SI
suffix (Ki, Mi, Gi, Ti, Pi, Ei), a decimal SI suffix (n, u, m, "", k, M, G, T, P, E) or an exponent
(e3, E-2).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))((?:[KMGTPE]i)|[numkMGTPE]?|[eE][+-]?\d+)$")


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value in base units; raises ValueError for malformed input."""
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = _QUANTITY.match(value.strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression '{_QUANTITY.pattern}': {value!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as error:
        raise ValueError(f"invalid quantity {value!r}") from error
    suffix = m.group(2)
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * (Decimal(10) ** int(suffix[1:]))


def cpu_millis(value: str | int | float) -> int:
    """CPU in millicores, rounded up as the scheduler does ("100m" -> 100, "0.5" -> 500)."""
    return math.ceil(parse_quantity(value) * 1000)


def bytes_of(value: str | int | float) -> int:
    """Memory or storage in bytes, rounded up."""
    return math.ceil(parse_quantity(value))
