"""The `pinnace` command: one sub-command per module under pinnace.cli.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets `func` to a
callable taking the parsed arguments (a coroutine function is run with asyncio). Errors that users can
act on are raised as `CliError` and printed without a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import logging
import sys

# Sub-command modules, in the order `pinnace --help` lists them.
COMMANDS = (
    "up",
    "down",
    "server",
    "agent",
    "scheduler",
    "controller_manager",
    "proxy",
    "dns",
    "images",
    "resources",
    "workloads",
)


class CliError(Exception):
    """An error the user can act on; printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pinnace", description="A container orchestrator that speaks the Kubernetes API.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"pinnace.cli.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"pinnace.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if inspect.iscoroutinefunction(args.func):
            result = asyncio.run(args.func(args))
        else:
            result = args.func(args)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
