"""Command-line interface: ``smoothadv <command> ...``.

Each command lives in a module ``smoothadv.cli.cmd_<name>`` that defines ``register(subparsers)``; it
parses its arguments and calls one library function. Modules are discovered automatically, so adding a
command never touches this file.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import sys
import warnings

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
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "handler", None) is None:
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        parser.print_help()
        return 0
    if unknown:
        _refuse_unknown(_subparser(parser, args), unknown)
    previous_format = warnings.formatwarning
    warnings.formatwarning = lambda message, *_, **__: f"smoothadv {args.command}: warning: {message}\n"
    try:
        return int(args.handler(args) or 0)
    except SmoothAdvError as error:
        print(f"smoothadv {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"smoothadv {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    finally:
        warnings.formatwarning = previous_format


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost sub-command parser the command line chose (``smoothadv figure figure1``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _subparser(action.choices[chosen], args)
    return parser


def _refuse_unknown(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit 2 with the command's own usage, naming the options closest to each unknown one."""
    options = [option for action in parser._actions for option in action.option_strings]
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word.split("=")[0], options, n=2) if word.startswith("-") else []
        hints.append(word + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    parser.error(f"unrecognized arguments: {', '.join(hints)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
