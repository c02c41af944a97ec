"""The `kubernetes` endpoints from API server leases: fresh leases count, stale ones do not."""

from __future__ import annotations

import datetime

from pinnace.apiserver.endpointleases import (
    ADDRESS_ANNOTATION,
    IDENTITY_LABEL,
    live_addresses,
    micro_time,
    subsets_of,
)

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def lease(address: str, renewed_ago: float, duration: int = 15, label: str = "kube-apiserver") -> dict:
    return {"metadata": {"labels": {IDENTITY_LABEL: label}, "annotations": {ADDRESS_ANNOTATION: address}},
            "spec": {"leaseDurationSeconds": duration,
                     "renewTime": micro_time(NOW - datetime.timedelta(seconds=renewed_ago))}}


def test_servers_with_fresh_leases_are_the_endpoints():
    leases = [lease("10.0.0.2:6443", 1), lease("10.0.0.1:6443", 14), lease("10.0.0.3:6443", 16),
              lease("10.0.0.4:6443", 1, label="other"), {"metadata": {}, "spec": {}}]
    assert live_addresses(leases, NOW) == [("10.0.0.1", 6443), ("10.0.0.2", 6443)]


def test_servers_on_different_ports_get_a_subset_each():
    assert subsets_of([("10.0.0.2", 6443), ("10.0.0.1", 6443), ("10.0.0.3", 7443)]) == [
        {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]},
        {"addresses": [{"ip": "10.0.0.3"}], "ports": [{"name": "https", "port": 7443, "protocol": "TCP"}]},
    ]
