"""Cron schedules, taint tolerations and eviction delays, DaemonSet placement, Job index lists."""

import datetime as dt

import pytest

from pinnace.controllers import cron
from pinnace.controllers.daemonset import should_run
from pinnace.controllers.job import format_indexes
from pinnace.controllers.nodelifecycle import UNREACHABLE, desired_taints, eviction_delay, tolerates

UTC = dt.UTC


@pytest.mark.parametrize("schedule, after, expected", [
    ("*/15 * * * *", dt.datetime(2026, 1, 1, 10, 7, tzinfo=UTC), dt.datetime(2026, 1, 1, 10, 15, tzinfo=UTC)),
    ("@daily", dt.datetime(2026, 1, 1, 10, 7, tzinfo=UTC), dt.datetime(2026, 1, 2, 0, 0, tzinfo=UTC)),
    ("0 9 * * mon-fri", dt.datetime(2026, 1, 2, 9, 0, tzinfo=UTC), dt.datetime(2026, 1, 5, 9, 0, tzinfo=UTC)),
    ("0 0 1 jan *", dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2027, 1, 1, tzinfo=UTC)),
    ("0 0 13 * 5", dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 2, tzinfo=UTC)),  # day OR weekday
    ("CRON_TZ=Europe/Paris 0 9 * * *", dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 1, 8, 0, tzinfo=UTC)),
])
def test_next_scheduled_time(schedule, after, expected):
    assert cron.parse(schedule).next_after(after) == expected


def test_time_zone_field_and_bad_schedules():
    schedule = cron.parse("30 2 * * *", "America/New_York")
    assert schedule.next_after(dt.datetime(2026, 7, 1, tzinfo=UTC)) == dt.datetime(2026, 7, 1, 6, 30, tzinfo=UTC)
    for bad in ("* * * *", "61 * * * *", "*/0 * * * *", "x * * * *"):
        with pytest.raises(cron.ScheduleError):
            cron.parse(bad)


@pytest.mark.parametrize("toleration, taint, expected", [
    ({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoSchedule"}, False),
    ({"operator": "Exists"}, {"key": "anything", "effect": "NoExecute"}, True),
])
def test_tolerates(toleration, taint, expected):
    assert tolerates(toleration, taint) is expected


def test_eviction_delay_counts_from_the_taint():
    taint = {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}
    at = dt.datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC).timestamp()
    short = {"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
                                        "tolerationSeconds": 30}]}}
    forever = {"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]}}
    assert eviction_delay(short, [taint], 300, at) == 20
    assert eviction_delay(forever, [taint], 300, at) is None
    assert eviction_delay({"spec": {}}, [taint], 300, at) == 290  # the DefaultTolerationSeconds stand-in
    assert eviction_delay({"spec": {}}, [{"key": "dedicated", "effect": "NoExecute"}], 300, at) == 0


def test_taints_follow_ready_condition():
    node = {"metadata": {"name": "n"}, "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
    keys = {(t["key"], t["effect"]) for t in desired_taints(node)}
    assert keys == {("other", "NoSchedule"), (UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")}
    node["spec"]["taints"] = desired_taints(node)
    node["status"]["conditions"][0]["status"] = "True"
    assert desired_taints(node) == [{"key": "other", "effect": "NoSchedule"}]


def test_daemonset_placement():
    node = {"metadata": {"name": "n1", "labels": {"disk": "ssd"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}
    assert should_run({"nodeSelector": {"disk": "ssd"}}, node)
    assert not should_run({"nodeSelector": {"disk": "hdd"}}, node)
    node["spec"]["taints"].append({"key": "gpu", "effect": "NoSchedule"})
    assert not should_run({}, node)
    assert should_run({"tolerations": [{"key": "gpu", "operator": "Exists"}]}, node)
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}
    assert not should_run({"affinity": affinity, "tolerations": [{"operator": "Exists"}]}, node)


def test_completed_indexes_are_compressed():
    assert format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"
    assert format_indexes(set()) == ""
