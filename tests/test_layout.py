"""The shape of the code base (issue 10): no import cycle between atpd's modules, no private
name imported from another module, and no source file grown far past what one reads at once."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "atpd"
# About 500 lines is the aim; a file past this bound is doing more than one job.
MAX_LINES = 600


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        if relative.parts[1] == "v1":
            continue  # generated protobuf code
        name = ".".join(relative.with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def module_imports(path: Path) -> list[ast.ImportFrom | ast.Import]:
    """Every import of the module, at load time or inside a function (an import moved into a
    function to dodge a cycle is still a cycle), except those under `if TYPE_CHECKING`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(child) for child in ast.walk(node))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in type_only
    ]


def imported_modules(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> set[str]:
    names: set[str] = set()
    if isinstance(node, ast.Import):
        names.update(alias.name for alias in node.names)
    elif node.module is not None and node.level == 0:
        names.add(node.module)
        # `from atpd.core import kernels` imports the module atpd.core.kernels
        names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known}


def test_no_import_cycle() -> None:
    """Following imports between atpd modules never leads back to the start."""
    known = modules()
    graph = {
        name: set().union(*(imported_modules(n, known) for n in module_imports(path)))
        for name, path in known.items()
    }
    for name in graph:
        graph[name].discard(name)
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append([*visiting[visiting.index(name) :], name])
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            if not (target.startswith(name + ".") or name.startswith(target + ".")):
                visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert not cycles, cycles


def test_no_private_name_imported_across_modules() -> None:
    """`from atpd.x import _name` never appears: a name two modules share is public."""
    offenders: list[str] = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("atpd"):
                offenders.extend(
                    f"{name}: {alias.name} from {node.module}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                )
    assert not offenders, offenders


def test_no_source_file_far_past_one_job() -> None:
    """Every source file stays under MAX_LINES lines."""
    long = {
        name: count
        for name, path in modules().items()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
