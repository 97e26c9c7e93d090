"""Command-line interface: ``smoothadv <command> ...``.

Each command lives in a module ``smoothadv.cli.cmd_<name>`` that defines ``register(subparsers)``; it
parses its arguments and calls one library function. Modules are discovered automatically, so adding a
command never touches this file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from smoothadv import __version__
from smoothadv.core.errors import SmoothAdvError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every ``cmd_*`` module's subcommand."""
    parser = argparse.ArgumentParser(
        prog="smoothadv",
        description="Smooth adversarial examples: craft, evaluate, magnify and score them.",
    )
    parser.add_argument("--version", action="version", version=f"smoothadv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("cmd_"):
            importlib.import_module(f"{__name__}.{module_info.name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smoothadv`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except SmoothAdvError as error:
        print(f"smoothadv {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smoothadv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
