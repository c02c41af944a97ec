"""Server-side printing: kubectl's columns and cells."""

import pytest

from pinnace.api.kinds import registry
from pinnace.api.tables import human_duration, pod_status_reason, to_table


@pytest.mark.parametrize(
    "seconds, text",
    [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 20 * 60, "3h20m"), (30 * 3600, "30h"),
     (3 * 86400 + 3600, "3d1h"), (400 * 86400, "400d"), (3 * 365 * 86400, "3y")],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_pod_status_column():
    waiting = {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert pod_status_reason(waiting) == "ContainerCreating"
    assert pod_status_reason({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}}) == "Terminating"
    crashed = {"status": {"phase": "Running", "containerStatuses": [{"state": {"terminated": {"exitCode": 3}}}]}}
    assert pod_status_reason(crashed) == "ExitCode:3"


def test_deployment_table_and_wide_columns():
    info = registry().by_resource("apps/v1/deployments")
    deployment = {
        "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    table = to_table(info, [deployment])
    assert [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0] == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:4] == ["web", "2/3", 3, 2] and cells[5:] == ["app", "nginx", "app=web"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert "object" not in to_table(info, [deployment], "None")["rows"][0]


def test_kinds_without_a_printer_get_name_and_created_at():
    info = registry().by_resource("rbac.authorization.k8s.io/v1/roles")
    table = to_table(info, [{"metadata": {"name": "r", "creationTimestamp": "2020-01-01T00:00:00Z"}}])
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Created At"]
    assert table["rows"][0]["cells"] == ["r", "2020-01-01T00:00:00Z"]
