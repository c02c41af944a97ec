"""`pinnace agent` command line."""

from __future__ import annotations

from pinnace.cli.main import main


def test_cri_runtime_is_refused_with_a_clear_error(capsys):
    assert main(["agent", "--runtime", "cri", "--server", "https://127.0.0.1:1", "--token", "t"]) == 1
    assert "--runtime cri" in capsys.readouterr().err
