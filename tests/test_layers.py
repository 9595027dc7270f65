"""The packages are layers, and imports only go down them: the bundle contract at the bottom,
preference data above it, then training, export, evaluation, the service and the clients. The
server and the clients never load torch, transformers or training (the server image stays small)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rewardserve"

# package: the rewardserve packages its modules may import (itself included)
MAY_IMPORT = {
    "bundle": {"bundle"},
    "data": {"bundle", "data"},
    "eval": {"bundle", "data", "eval", "client"},
    "client": {"bundle", "data", "client"},
    "service": {"bundle", "service"},
    "training": {"bundle", "data", "eval", "training"},
    "export": {"bundle", "data", "eval", "training", "export"},
    "bench": {"bundle", "data", "service", "training", "bench"},  # the naive baseline server uses training's loader
}
WITHOUT_TORCH = ("bundle", "data", "eval", "client", "service")
HEAVY = ("torch", "transformers")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_package_is_a_layer_the_table_names():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(MAY_IMPORT)
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "cli.py"]  # the root holds only the command, which dispatches to the layers


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_layers_below_it(package):
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "rewardserve" and len(parts) > 1:
                assert parts[1] in MAY_IMPORT[package], f"{path.relative_to(PACKAGE)} imports {module}"
            if package in WITHOUT_TORCH:
                assert parts[0] not in HEAVY, f"{path.relative_to(PACKAGE)} imports {module}"


# verl loads its reward manager into verl's own process, which has torch: the one client module
# that imports a trainer's code.
TRAINER_PLUGINS = {"rewardserve.client.verl_manager"}


def test_serving_and_the_clients_load_neither_torch_nor_training():
    modules = [
        f"rewardserve.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for package in ("service", "client")
        for p in sorted((PACKAGE / package).rglob("*.py"))
    ]
    modules = [name for name in modules if name not in TRAINER_PLUGINS]
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name.removesuffix('.__init__'))\n"
        "from rewardserve.cli import build_parser\n"
        "build_parser('serve')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers') "
        "or m.startswith('rewardserve.training')))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
