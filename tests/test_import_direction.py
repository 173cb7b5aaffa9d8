"""The folder tree is the architecture: layers <- zoo <- training <- evaluation / exports, CLIs on top.

Every import in the source (module level and inside functions) is read with `ast`, so a lazy import that
runs upward fails here as well. Command-line modules sit above everything and may import any package.
No Keras import is needed: this reads files only.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEVELS = {"layers": 0, "zoo": 1, "training": 2, "evaluation": 3, "exports": 3}
# `python -m ...` entry points: they compose the packages, so they may import from any of them
COMMANDS = {"training/fit.py", "training/evaluate.py", "zoo/build.py"}


def _imports(path):
    """(line, top-level package, module) of every import in `path` that names one of the project's packages."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            package = name.split(".")[0]
            if package in LEVELS:
                found.append((node.lineno, package, name))
    return found


def _modules():
    return sorted(p for package in LEVELS for p in (ROOT / package).rglob("*.py"))


def test_the_packages_exist():
    assert all((ROOT / package / "__init__.py").exists() for package in LEVELS)
    assert len(_modules()) > 40


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_stack(path):
    relative = str(path.relative_to(ROOT))
    if relative in COMMANDS:
        pytest.skip("a command-line entry point may import every package")
    own = path.relative_to(ROOT).parts[0]
    upward = [f"line {line}: {module} ({package} is above {own})"
              for line, package, module in _imports(path)
              if package != own and LEVELS[package] >= LEVELS[own]]
    assert not upward, f"{relative} imports upward or sideways: {upward}"


def test_no_import_cycles_between_modules_at_import_time():
    """Module-level imports form no cycle (lazy imports inside functions do not run at import time)."""
    graph = {}
    for path in _modules():
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(path.read_text())
        targets = set()
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in LEVELS:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.split(".")[0] in LEVELS)
        graph[module] = targets
    graph = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    state = {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
