"""Small helpers shared by the sub-commands: default paths and output."""

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


def say_progress(elapsed: float, message: str) -> None:
    """One step of a long command: `[  1.2s] message`; on a terminal drawn by `rich` (warnings in
    yellow, finished steps ticked)."""
    stamp = f"[{elapsed:5.1f}s]"
    if not sys.stdout.isatty():
        say(f"{stamp} {message}")
        return
    from rich.console import Console
    from rich.markup import escape

    if message.startswith("warning"):
        line = f"[dim]{stamp}[/dim] [yellow]{escape(message)}[/yellow]"
    elif message.endswith((" started", " Ready", "stopped")) or " started:" in message:
        line = f"[dim]{stamp}[/dim] [green]✓[/green] {escape(message)}"
    else:
        line = f"[dim]{stamp}[/dim]   {escape(message)}"
    Console(highlight=False, soft_wrap=True).print(line)


def print_columns(rows: list[list[str]], header: bool = True, gap: int = 3, indent: str = "") -> None:
    """Rows in aligned columns, the first row a header unless `header` is False.

    On a terminal a `rich` table (bold header, colour, no borders, cells never wrapped: kubectl's layout);
    into a pipe or a file kubectl's exact plain text, columns `gap` spaces apart, so scripts that read
    kubectl's output read ours.
    """
    if not rows:
        return
    if sys.stdout.isatty():
        from rich import box
        from rich.console import Console
        from rich.table import Table

        table = Table(box=box.SIMPLE_HEAD if header else None, show_header=header, show_edge=False, pad_edge=False,
                      padding=(0, gap // 2 + gap % 2, 0, 0), header_style="bold")
        for name in rows[0] if header else [""] * len(rows[0]):
            table.add_column(name, no_wrap=True, overflow="ignore")
        for row in rows[1:] if header else rows:
            table.add_row(*(str(cell) for cell in row))
        # As wide as the widest row, whatever the terminal's width: kubectl lets long lines run on
        # rather than cutting cells short.
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        console = Console(width=len(indent) + sum(widths) + gap * len(widths) + 1)
        if indent:
            from rich.padding import Padding

            console.print(Padding(table, (0, 0, 0, len(indent))))
        else:
            console.print(table)
        return
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(indent + (" " * gap).join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
