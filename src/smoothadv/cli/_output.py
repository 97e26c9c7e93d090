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


def engine_outcome(command: str, reports: list[dict]) -> tuple[list[str], int]:
    """The lines that describe a Ray engine's work (none for the local engine), and the exit status: 1 when
    some batch failed on every attempt (each is printed on stderr with its key and error), else 0."""
    lines, failed = [], []
    for report in reports:
        if report["name"] == "ray":
            threads = ", one torch thread each" if report["device"] == "cpu" else ""
            lines.append(f"engine: ray, {report['workers']} worker(s) on {report['nodes']} node(s), "
                         f"models on {report['device']}{threads}; "
                         f"{report['retried']} batch(es) retried, {report['workers_lost']} worker(s) lost")
        failed += report["failed"]
    for failure in failed:
        print(f"smoothadv {command}: batch {failure['key']} failed {failure['attempts']} time(s): "
              f"{failure['error']}", file=sys.stderr)
    if failed:
        skipped = any(report.get("attacks_skipped") for report in reports)
        saved = ("a clean-pass batch failed, so no attack ran (which images are attacked depends on every "
                 "clean record)") if skipped else "every other batch is saved"
        print(f"smoothadv {command}: {len(failed)} batch(es) failed; {saved}: fix the cause and run the "
              "same command again to run only what is missing.", file=sys.stderr)
    return lines, 1 if failed else 0
