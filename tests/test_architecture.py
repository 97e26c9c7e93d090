"""The package layering: every import inside smoothadv points down the flow, never up or sideways.

core -> data, ops, smoothing -> models, attacks, perceptual -> evaluation -> report -> experiments -> cli.
A module may import its own package and any package of a lower layer; function-level imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "smoothadv"
LAYERS = {
    "core": 0,
    "data": 1, "ops": 1, "smoothing": 1,
    "models": 2, "attacks": 2, "perceptual": 2,
    "evaluation": 3,
    "report": 4,
    "experiments": 5,
    "cli": 6,
}
ROOT_LAYER = 2  # smoothadv/__init__.py re-exports the smoothing API


def _package_of(module: str) -> str | None:
    """``smoothadv.attacks.base`` -> ``attacks``; ``smoothadv`` -> ``""``; other modules -> None."""
    parts = module.split(".")
    if parts[0] != "smoothadv":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every smoothadv import in ``path``, at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this file's package
                base = path.relative_to(PACKAGE.parent).with_suffix("").parts[: -node.level]
                found.append((node.lineno, ".".join(base + ((node.module,) if node.module else ()))))
            elif node.module:
                found.append((node.lineno, node.module))
    return [(line, module) for line, module in found if _package_of(module) is not None]


def _layer(package: str) -> int:
    return ROOT_LAYER if package == "" else LAYERS[package]


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0] if len(relative.parts) > 1 else ""
        for line, module in _imports(path):
            target = _package_of(module)
            root_reexport = own == "" and relative.name == "__init__.py" and _layer(target) < ROOT_LAYER
            if target == own or root_reexport:
                continue
            if own == "" and relative.name != "__init__.py":
                problems.append(f"{relative}:{line}: top-level module outside the layers (move it into one)")
            elif target not in LAYERS and target != "":
                problems.append(f"{relative}:{line}: imports {module}, a package outside the layers")
            elif _layer(target) >= _layer(own):
                problems.append(f"{relative}:{line}: {own} (layer {_layer(own)}) imports {module} "
                                f"(layer {_layer(target)}): imports must point down")
    return problems


def test_every_package_is_in_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS)


def test_imports_point_down():
    assert _violations() == []


@pytest.mark.parametrize(("own", "module", "allowed"), [
    ("attacks", "smoothadv.smoothing", True),
    ("attacks", "smoothadv.models", False),  # sideways
    ("data", "smoothadv.models.zoo", False),  # up
    ("cli", "smoothadv.experiments.jobs", True),
])
def test_the_rule_itself(own, module, allowed):
    assert (_layer(_package_of(module)) < _layer(own)) is allowed
