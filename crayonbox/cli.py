"""`crayonbox` command line. Each area registers its own subcommands; handlers import heavy modules lazily
so that `crayonbox --help` stays instant. Errors a user can act on print as one line (no traceback unless
--debug)."""

from __future__ import annotations

import argparse
import importlib
import sys

from crayonbox.errors import CrayonboxError
from crayonbox.extras import missing_extra_message

# Modules that expose `register(subparsers)`, by name (train/ is imported only here, and only by name).
# Order = order in --help.
COMMAND_MODULES = [
    "crayonbox.generate_cli",
    "crayonbox.weights.cli",
    "crayonbox.data.cli",
    "crayonbox.train.cli",
    "crayonbox.serve.cli",
    "crayonbox.lab.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crayonbox",
        description="DALL·E mini, re-created: generate, train, serve, and measure what the model draws.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CrayonboxError as e:
        if args.debug:
            raise
        print(f"crayonbox: error: {e}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as e:  # an optional dependency whose extra is not installed
        # "data audit": each area names its own subcommand's dest "<command>_command"
        command = " ".join(filter(None, (args.command, getattr(args, f"{args.command}_command", None))))
        message = missing_extra_message(e.name or "", command)
        if message is None or args.debug:
            raise
        print(f"crayonbox: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("crayonbox: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
