"""The package's modules import one another without a circle.

Two views of the imports, each without a circle: what runs (module-level imports and the lazy
ones inside functions, but not those under ``if TYPE_CHECKING:``), and what a reader or a type
checker follows (module-level imports, those under ``if TYPE_CHECKING:`` included). Decoding builds
on the model: the model reaches ``generation`` only inside ``generate``/``stream``."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "block_recurrent_transformer_pytorch"


def imports(path: Path, *, lazy: bool, type_checking: bool) -> set[str]:
    """The package's modules that path imports (lazy: inside functions too; type_checking: under TYPE_CHECKING too)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and not type_checking:
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not lazy:
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                found.update([child.module.split(".")[0]] if child.module else [a.name for a in child.names])
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def find_circle(graph: dict[str, set[str]]) -> list[str]:
    def walk(module: str, path: list[str]) -> list[str]:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                return path[path.index(imported):] + [imported]
            found = walk(imported, path + [imported])
            if found:
                return found
        return []

    for module in sorted(graph):
        circle = walk(module, [module])
        if circle:
            return circle
    return []


@pytest.mark.parametrize("lazy, type_checking", [(True, False), (False, True)], ids=["runtime", "module-level"])
def test_no_import_circle(lazy, type_checking):
    graph = {p.stem: imports(p, lazy=lazy, type_checking=type_checking) for p in PACKAGE.glob("*.py")
             if p.stem != "__init__"}
    assert "blocks" in graph["transformer"] and "cache" in graph["generation"]  # the scan sees the imports
    assert find_circle(graph) == []


def test_find_circle_finds_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_each_module_imports_first():
    """A fresh interpreter can import the decoding modules before the model (no half-initialised module)."""
    for module in ("generation", "cache", "transformer"):
        done = subprocess.run([sys.executable, "-c", f"import block_recurrent_transformer_pytorch.{module}"],
                              cwd=PACKAGE.parent, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
