"""The README's quickstart, run word for word: the commands are read out of README.md itself.

Every ```sh block of the "Quickstart" section runs, in order, in one bash session with `set -e`, in a
fresh directory that holds the checkout's files, so `./demo` is a fresh data dir. The last command of
the blocks that curl the frontend must answer from a guestbook pod; teardown must leave no process,
network namespace or iptables rule of the cluster behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the quickstart is written for root (pod network namespaces, iptables)"),
    pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed"),
    pytest.mark.timeout(600),
]


def quickstart_blocks(readme: str) -> list[str]:
    section = readme.split("\n## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def test_quickstart_blocks_are_found() -> None:
    blocks = quickstart_blocks((ROOT / "README.md").read_text())
    commands = "\n".join(blocks)
    assert "pinnace up" in commands and "kubectl apply -f examples/guestbook/" in commands
    assert "pinnace down" in commands


def test_readme_quickstart_runs_word_for_word(tmp_path: Path) -> None:
    blocks = quickstart_blocks((ROOT / "README.md").read_text())
    workdir = tmp_path / "checkout"
    workdir.mkdir()
    for name in ("pyproject.toml", "README.md", "src", "examples"):
        (workdir / name).symlink_to(ROOT / name)
    bin_dir = Path(sys.executable).parent  # the test environment's pip and pinnace come first on PATH
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_QUIET": "1"}
    script = "set -euo pipefail\n" + "\n".join(blocks)
    try:
        result = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=540)
    finally:
        # `pip install .` replaced the editable install; put it back for the rest of the run.
        subprocess.run([str(bin_dir / "pip"), "install", "-q", "--no-deps", "-e", str(ROOT)], capture_output=True)
        subprocess.run([str(bin_dir / "pinnace"), "down", "--data-dir", str(workdir / "demo"), "--purge"],
                       capture_output=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "guestbook v1 from frontend-" in result.stdout
    assert "hello pinnace" in result.stdout
    answers = [line for line in result.stdout.splitlines() if line.startswith("guestbook ")]
    # After the rollout of VERSION=v2 the new pods answer, and within a moment only they do.
    assert answers[-1].startswith("guestbook v2 from frontend-"), answers
    assert 'deployment "frontend" successfully rolled out' in result.stdout
    assert not (workdir / "demo").exists()  # --purge removed the data dir
    leftovers = subprocess.run(["pgrep", "-f", f"{workdir}/demo"], capture_output=True, text=True).stdout
    assert leftovers == "", f"processes left behind: {leftovers}"
