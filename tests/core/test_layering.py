"""The import layers the code map promises, read from the source (ast), not from what a run loads.

- the components (agent, exporter, webhook, simulator) never import the orchestration (`vmhealth.stack`);
- only the entry points import the dispatcher (`vmhealth.cli`);
- the dispatcher and the subcommand modules of its table form no import cycle;
- inside a component, its own modules are imported relatively (`from .store import …`), so that every
  import names a file beside it; the core and other components are imported absolutely.

Imports inside functions count: the cycle these rules keep out ran through them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vmhealth.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
# folder -> the package it is installed as ([tool.setuptools.package-dir] in pyproject.toml)
PACKAGES = {"vmhealth": "vmhealth", "agent": "vmhealth.agent", "exporter": "vmhealth.exporter",
            "webhook": "vmhealth.webhook", "simulator": "vmhealth.simulator"}
COMPONENTS = ("vmhealth.agent", "vmhealth.exporter", "vmhealth.webhook", "vmhealth.simulator")
ENTRY_POINTS = {"vmhealth.__main__"}  # `python -m vmhealth`; `vmhealth = vmhealth.cli:main` names it itself


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name `source` imports, relative imports resolved; `from p import x` also names `p.x`."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def product_imports(files: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> the product modules it imports, for every file of the product (or for `files`)."""
    if files is None:
        files = {}
        for folder in PACKAGES:
            for path in sorted((ROOT / folder).rglob("*.py")):
                files[module_name(path)] = path.read_text()
    packages = {name for name in files if _is_package(name, files)}
    return {name: {target for target in imported(source, name, name in packages) if target in files}
            for name, source in files.items()}


def _is_package(name: str, files: dict[str, str]) -> bool:
    return any(other.startswith(f"{name}.") for other in files)


def dispatcher_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles through the dispatcher, whose table of COMMANDS counts as its imports."""
    graph = {name: set(targets) for name, targets in graph.items()}
    graph.setdefault("vmhealth.cli", set()).update(module for module, _ in COMMANDS.values())
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target == "vmhealth.cli":
                cycles.append([*path, target])
            elif target not in path and target not in seen:
                seen.add(target)
                walk(target, [*path, target])

    seen: set[str] = set()
    walk("vmhealth.cli", ["vmhealth.cli"])
    return cycles


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if name.startswith(COMPONENTS) and (target == "vmhealth.stack" or target.startswith("vmhealth.stack.")):
                found.append(f"{name} imports the orchestration {target}")
            if target == "vmhealth.cli" and name not in ENTRY_POINTS:
                found.append(f"{name} imports the dispatcher vmhealth.cli")
    found += [f"import cycle: {' -> '.join(cycle)}" for cycle in dispatcher_cycles(graph)]
    return found


def absolute_self_imports(files: dict[str, str]) -> list[str]:
    """`module: line` for each import of a component's own modules written with the absolute name."""
    found = []
    for name, source in sorted(files.items()):
        component = next((c for c in COMPONENTS if name == c or name.startswith(f"{c}.")), None)
        for node in ast.walk(ast.parse(source)) if component else ():
            absolute = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(target == component or target.startswith(f"{component}.") for target in absolute):
                found.append(f"{name}: line {node.lineno} imports its own component as {absolute[0]}")
    return found


def product_sources() -> dict[str, str]:
    """module -> source of every product module; gunicorn.conf.py is left out: gunicorn reads it by path,
    outside any package, where only absolute imports work."""
    return {module_name(path): path.read_text() for folder in PACKAGES
            for path in sorted((ROOT / folder).rglob("*.py")) if path.name != "gunicorn.conf.py"}


def test_components_import_their_own_modules_relatively():
    assert absolute_self_imports(product_sources()) == []
    broken = product_sources()
    broken["vmhealth.webhook.policy"] += "\nfrom vmhealth.webhook.payload import Alert\n"
    assert absolute_self_imports(broken) == [
        f"vmhealth.webhook.policy: line {broken['vmhealth.webhook.policy'].count(chr(10))} "
        "imports its own component as vmhealth.webhook.payload"]


def test_the_product_keeps_its_layers():
    graph = product_imports()
    assert "vmhealth.stack.running" in graph and "vmhealth.webhook.resetcli" in graph  # the walk found the tree
    assert violations(graph) == []


@pytest.mark.parametrize(("module", "source", "expected"), [
    ("vmhealth.webhook.policy", "from vmhealth.stack.processes import wait_for",
     "vmhealth.webhook.policy imports the orchestration vmhealth.stack.processes"),
    ("vmhealth.exporter.app", "def f():\n    from ..stack import running",
     "vmhealth.exporter.app imports the orchestration vmhealth.stack"),
    ("vmhealth.keycli", "import vmhealth.cli", "vmhealth.keycli imports the dispatcher vmhealth.cli"),
    ("vmhealth.webhook.resetcli", "def run(args):\n    from vmhealth.cli import main",
     "import cycle: vmhealth.cli -> vmhealth.webhook.resetcli -> vmhealth.cli"),
])
def test_a_forbidden_import_is_found(module, source, expected):
    """Each rule, broken once in a copy of the tree, is reported."""
    files = {}
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            files[module_name(path)] = path.read_text()
    files[module] += f"\n{source}\n"
    assert expected in violations(product_imports(files))
