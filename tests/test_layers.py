"""The package's import graph: layered one way (import-linter contract in pyproject.toml), no cycles,
and every exception class in errors.py."""

import ast
import subprocess
import sys
from pathlib import Path

import grimp

PACKAGE = Path(__file__).parent.parent / "edgesmlp"


def test_layers_contract_is_kept():
    result = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                             "lint_imports_command()"], capture_output=True, text=True,
                            cwd=PACKAGE.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    graph = grimp.build_graph("edgesmlp", exclude_type_checking_imports=True)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert cycles(edges) == []


def test_exceptions_live_in_errors_py():
    strays = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception", "Failure"))) for b in node.bases):
                strays.append(f"{path.relative_to(PACKAGE)}:{node.name}")
    assert strays == []


def test_no_module_shadows_the_standard_library():
    names = {p.stem for p in PACKAGE.rglob("*.py")} | {p.name for p in PACKAGE.rglob("*") if p.is_dir()}
    assert not names & set(sys.stdlib_module_names) - {"__init__", "__main__"}


def test_measured_speedups_live_in_results_files_not_in_code():
    """Comments, docstrings and --help keep the reason and cite benchmarks/results/; numbers go stale there."""
    import re

    quoted = re.compile(r"\d(\.\d+)?(x|%) (faster|slower)|\d(\.\d+)? ?(ms|GB) (a block|more|against)")
    found = [f"{path.relative_to(PACKAGE)}:{n}" for path in PACKAGE.rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if quoted.search(line)]
    assert found == []


def test_the_cli_works_through_the_api_alone():
    """Every command's work goes through edgesmlp.api; the CLI reads only the target registry (names, summaries,
    declared options for --help), the request types' constants and the errors it maps to exit codes."""
    cli = PACKAGE / "cli.py"
    imported = {node.module + (f".{alias.name}" if node.module == "edgesmlp" else "")
                for node in ast.walk(ast.parse(cli.read_text())) if isinstance(node, ast.ImportFrom)
                and node.module and node.module.startswith("edgesmlp") for alias in node.names}
    assert imported <= {"edgesmlp.api", "edgesmlp.targets", "edgesmlp.targets.base", "edgesmlp.errors",
                        "edgesmlp.jobs.spec"}, imported
