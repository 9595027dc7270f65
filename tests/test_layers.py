"""The packages are layers, and imports only go down them (MAY_IMPORT is the table; the design
page, docs/design.md, draws it):

    bundle                       the contract: manifest, formatting, sessions; imports no other
    ├── data                     preference data
    └── scoring                  the scoring core: validate, admit, tokenize, batch, engine; no transport
        ├── compose              composed rewards: models, rules, remote servers, judges, served as one
        │   └── service          the HTTP server: its edge and endpoints, on the core
        │       ├── ray_serve    the same core and HTTP API in Ray Serve replicas, and a handle
        │       └── bench        `rewardserve bench` (with data, and training's baseline loader)
        └── client               HTTP clients, trainer adapters, the core in-process (with data)
            └── eval             evaluation reports (scores through a client or a runtime)
                └── training     fine-tuning (evaluates while it trains)
                    └── export   ONNX, parity, precision gates, the bundle
                        └── testing   tiny models from configs, for the tests and benchmarks

The server and the clients never load torch, transformers or training (the server image stays
small), no module imports itself round a cycle, not even for type hints only, and no function
(in rewardserve/ and benchmarks/) is over 60 lines, no file over 400."""

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
    "eval": {"bundle", "data", "scoring", "eval", "client"},
    "client": {"bundle", "data", "scoring", "client"},
    "scoring": {"bundle", "scoring"},
    "compose": {"bundle", "scoring", "compose"},
    "service": {"bundle", "scoring", "compose", "service"},
    "ray_serve": {"bundle", "scoring", "compose", "service", "ray_serve"},
    "training": {"bundle", "data", "scoring", "eval", "training"},
    "export": {"bundle", "data", "scoring", "eval", "training", "export"},
    # the naive baseline server uses training's loader
    "bench": {"bundle", "data", "scoring", "compose", "service", "training", "bench"},
    "testing": {"bundle", "data", "scoring", "eval", "client", "training", "export", "testing"},
}
WITHOUT_TORCH = ("bundle", "data", "eval", "client", "scoring", "compose", "service", "ray_serve")
HEAVY = ("torch", "transformers")
# The HTTP edge is the service's (and the naive baseline server's that `bench` measures against):
# the scoring core and everything else reach it through no web framework.
WITH_A_WEB_FRAMEWORK = ("service", "bench")
WEB = ("fastapi", "starlette", "uvicorn")


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
            if package not in WITH_A_WEB_FRAMEWORK:
                assert parts[0] not in WEB, f"{path.relative_to(PACKAGE)} imports {module}"


# verl loads its reward manager into verl's own process, which has torch: the one client module
# that imports a trainer's code.
TRAINER_PLUGINS = {"rewardserve.client.verl_manager"}


def test_serving_and_the_clients_load_neither_torch_nor_training():
    modules = [
        f"rewardserve.{p.relative_to(PACKAGE).with_suffix('').as_posix().replace('/', '.')}"
        for package in ("scoring", "service", "client")
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


def module_graph() -> dict[str, set[str]]:
    """rewardserve's modules -> the rewardserve modules each imports, anywhere in it (type-only
    imports and imports inside functions included)."""
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}  # fmt: skip
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_module_imports_itself_round_a_cycle():
    graph = module_graph()
    cycles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert cycles == []


MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def test_no_function_over_60_lines_and_no_file_over_400():
    over = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "benchmarks").glob("*.py")]):
        text = path.read_text()
        name = path.relative_to(PACKAGE.parent)
        if (lines := len(text.splitlines())) > MAX_FILE_LINES:
            over.append(f"{name}: {lines} lines")
        functions = [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        for node in functions:
            if (length := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                over.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert over == []
