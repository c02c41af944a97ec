"""`--leader-elect-lease-duration`, `--leader-elect-renew-deadline`, `--leader-elect-retry-period`:
Go durations, kube-scheduler's and kube-controller-manager's defaults and checks."""

from __future__ import annotations

import argparse

import pytest

from pinnace.cli.main import CliError
from pinnace.cli.server import (
    LeaderElectionTiming,
    add_leader_election_flags,
    leader_election_timing,
    parse_duration,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("15s", 15.0), ("500ms", 0.5), ("2s", 2.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("0", 0.0), ("+3s", 3.0),
    ("-2s", -2.0), (".5s", 0.5), ("1.s", 1.0), ("250us", 0.00025), ("250\u00b5s", 0.00025), ("10ns", 1e-8),
    ("1h2m3.5s", 3723.5),
])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("15", 'time: missing unit in duration "15"'),
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
    ("1d", 'time: unknown unit "d" in duration "1d"'),
    ("s", 'time: invalid duration "s"'),
    ("1s2", 'time: missing unit in duration "1s2"'),
])
def test_bad_durations_are_errors_in_go_words(text, message):
    with pytest.raises(ValueError) as error:
        parse_duration(text)
    assert str(error.value) == message


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_leader_election_flags(parser)
    return parser.parse_args(argv)


def test_flags_default_to_kube_defaults_and_parse_go_syntax():
    assert leader_election_timing(_parse()) == LeaderElectionTiming(15.0, 10.0, 2.0)
    timing = leader_election_timing(_parse("--leader-elect-lease-duration=4s", "--leader-elect-renew-deadline",
                                           "3s", "--leader-elect-retry-period=500ms"))
    assert timing == LeaderElectionTiming(4.0, 3.0, 0.5)
    # flags not given fall back to the defaults handed in (a scheduler config file's leaderElection)
    assert leader_election_timing(_parse("--leader-elect-retry-period=1s"),
                                  LeaderElectionTiming(30.0, 20.0, 5.0)) == LeaderElectionTiming(30.0, 20.0, 1.0)


def test_a_bad_flag_value_is_an_argparse_error_in_go_words(capsys):
    parser = argparse.ArgumentParser()
    add_leader_election_flags(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--leader-elect-lease-duration=15"])
    assert 'time: missing unit in duration "15"' in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (("--leader-elect-lease-duration=5s",), "--leader-elect-lease-duration (5s) must be greater than "
                                           "--leader-elect-renew-deadline (10s)"),
    (("--leader-elect-renew-deadline=2s",), "--leader-elect-renew-deadline (2s) must be greater than "
                                           "--leader-elect-retry-period (2s) * 1.2"),
    (("--leader-elect-retry-period=0",), "--leader-elect-retry-period must be greater than zero"),
    (("--leader-elect-lease-duration=-1s",), "--leader-elect-lease-duration must be greater than zero"),
])
def test_timings_that_cannot_work_are_clear_errors(argv, message):
    with pytest.raises(CliError) as error:
        leader_election_timing(_parse(*argv))
    assert str(error.value) == message


def test_scheduler_config_file_durations_are_the_defaults_the_flags_override(tmp_path):
    from pinnace.cli.scheduler import _config_timing

    config = tmp_path / "scheduler.yaml"
    config.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
                      "leaderElection: {leaderElect: true, leaseDuration: 30s, renewDeadline: 20s}\n")
    from_file = _config_timing(str(config))
    assert from_file == LeaderElectionTiming(30.0, 20.0, 2.0)
    assert leader_election_timing(_parse("--leader-elect-lease-duration=40s"), from_file) == \
        LeaderElectionTiming(40.0, 20.0, 2.0)
    config.write_text("leaderElection: {leaseDuration: 30}\n")
    with pytest.raises(CliError, match=r'leaderElection\.leaseDuration: time: missing unit in duration "30"'):
        _config_timing(str(config))
