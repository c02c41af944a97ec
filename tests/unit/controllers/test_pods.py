"""Pod facts: deletion ranking, availability, slow-start batches."""

import datetime as dt

from pinnace.controllers.pods import is_available, rank_for_deletion, slow_start_batches


def pod(name, node=None, phase="Running", ready=True, created="2026-01-01T00:00:00Z", ready_at=None, restarts=0):
    status = {"phase": phase, "containerStatuses": [{"restartCount": restarts}]}
    status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                             "lastTransitionTime": ready_at or created}]
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node} if node else {}, "status": status}


def test_deletion_prefers_unscheduled_pending_unready_newest():
    pods = [
        pod("running-old", node="n", created="2026-01-01T00:00:00Z"),
        pod("running-new", node="n", created="2026-01-02T00:00:00Z", ready_at="2026-01-02T00:00:00Z"),
        pod("unready", node="n", ready=False),
        pod("pending", node="n", phase="Pending", ready=False),
        pod("unscheduled", phase="Pending", ready=False),
    ]
    names = [p["metadata"]["name"] for p in rank_for_deletion(pods)]
    assert names == ["unscheduled", "pending", "unready", "running-new", "running-old"]


def test_more_restarts_go_first():
    pods = [pod("calm", node="n"), pod("crashy", node="n", restarts=5)]
    assert rank_for_deletion(pods)[0]["metadata"]["name"] == "crashy"


def test_available_after_min_ready_seconds():
    p = pod("p", node="n", ready_at="2026-01-01T00:00:00Z")
    assert not is_available(p, 10, dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=dt.UTC))
    assert is_available(p, 10, dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=dt.UTC))
    assert is_available(p, 0)


def test_slow_start_batches_double():
    assert slow_start_batches(10) == [1, 2, 4, 3]
    assert slow_start_batches(0) == []
