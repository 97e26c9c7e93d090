"""Shared output helpers of the CLI: every command that prints results also has ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json``: print machine-readable JSON on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help="print results as JSON (for scripts)")


def emit(args: argparse.Namespace, payload: Any, text: str) -> None:
    """Print ``payload`` as JSON when ``--json`` was given, else the human-readable ``text``."""
    if getattr(args, "json", False):
        json.dump(payload, sys.stdout, indent=2, default=_jsonable)
        sys.stdout.write("\n")
    else:
        print(text)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
