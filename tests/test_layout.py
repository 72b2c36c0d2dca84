"""The architecture holds: no import circle in the packages, the library never imports the command line or the
tools, and no function in the packages runs past about 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGES = ("stream", "models")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of the packages that `name` imports, at any depth of its code (deferred imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_no_import_circle_and_the_library_never_imports_the_cli_or_tools():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    for name, path in modules.items():
        text = path.read_text()
        assert "import tools" not in text and "from tools" not in text, name
        if name != "stream.cli":
            assert "stream.cli" not in graph[name] and ".cli import" not in text, f"{name} imports the command line"

    done, stack = set(), []

    def visit(node: str) -> None:
        if node in stack:
            raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(node):], node]))
        if node in done:
            return
        stack.append(node)
        for dep in sorted(graph[node]):
            if not dep.startswith(node + ".") and not node.startswith(dep + "."):  # a package and its own modules
                visit(dep)
        stack.pop()
        done.add(node)

    for name in graph:
        visit(name)


def test_functions_in_the_packages_are_short():
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long
