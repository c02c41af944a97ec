"""Small helpers shared by the sub-commands: default paths and plain output."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def default_data_dir() -> Path:
    """`/var/lib/pinnace` as root, else `~/.local/share/pinnace` (XDG_DATA_HOME honoured)."""
    if os.geteuid() == 0:
        return Path("/var/lib/pinnace")
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "pinnace"


def pid_file(data_dir: Path) -> Path:
    return data_dir / "pinnace.pid"


def say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
