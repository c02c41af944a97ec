from decimal import Decimal

import pytest

from pinnace.api.quantity import bytes_of, cpu_millis, parse_quantity


@pytest.mark.parametrize(
    "text, value",
    [("500m", Decimal("0.5")), ("2", Decimal(2)), ("1Ki", Decimal(1024)), ("1.5Gi", Decimal(1610612736)),
     ("2e3", Decimal(2000)), ("100M", Decimal(100_000_000)), ("250u", Decimal("0.00025"))],
)
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


def test_cpu_and_memory_units():
    assert cpu_millis("100m") == 100 and cpu_millis("0.5") == 500 and cpu_millis(2) == 2000
    assert bytes_of("128Mi") == 128 * 1024 * 1024


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5Xi"])
def test_malformed_quantities(text):
    with pytest.raises(ValueError):
        parse_quantity(text)
