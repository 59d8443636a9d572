"""Imports run one way (docs/ARCHITECTURE.md §1): no circles, and the model library stays light.

Every `import` statement counts (module level, inside functions and under TYPE_CHECKING): a lazy or
type-only import back up the layers is still a circle in the design, it only hides from Python.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "moe_ts", "data_prep", "pretrain", "eval", "finetune", "distill", "cli")
# What each top-level package may import from the project (the layer order of docs/ARCHITECTURE.md).
ALLOWED = {
    "kernels": set(),
    "moe_ts": {"kernels"},
    "data_prep": {"moe_ts"},  # only moe_ts.io.output_dir (safe output folders), shared with the hub I/O
    "pretrain": {"kernels", "moe_ts", "data_prep"},
    "eval": {"kernels", "moe_ts", "data_prep"},
    "finetune": {"kernels", "moe_ts", "data_prep", "eval"},
    "distill": {"kernels", "moe_ts", "data_prep"},
    "cli": {"kernels", "moe_ts", "data_prep", "pretrain", "eval", "finetune", "distill"},
}
FORBIDDEN_IN_LIBRARY = ("deepspeed", "pretrain", "eval", "data_prep", "finetune", "distill", "cli")
# Inside the model library: the flat core (moe_ts/*.py) and the uni2ts compatibility it decodes with never import
# a model family built on top of it, nor the loader that dispatches between the families.
FAMILIES = ("moe_ts.msft", "moe_ts.student", "moe_ts.timellm", "moe_ts.io.loading", "moe_ts.loading")  # last: its old home


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, root: Path = ROOT) -> set[str]:
    """Every absolute module name an `import` / `from ... import` in the file names (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return found


def project_graph() -> dict[str, set[str]]:
    """module -> project modules it imports (only names that are modules of the project)."""
    files = {module_name(p): p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py")}
    return {mod: {m for m in imports_of(path) if m in files and m != mod} for mod, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph as [a, b, ..., a], or None (iterative DFS, white/grey/black)."""
    colour = {node: 0 for node in graph}
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(child, 2) == 1:
                return path[path.index(child):] + [child]
            elif colour.get(child, 2) == 0:
                colour[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(graph.get(child, ())))))
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        top = mod.split(".")[0]
        out.setdefault(top, set()).update(d.split(".")[0] for d in deps if d.split(".")[0] != top)
    return out


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"y"}, "y": set(), "p": {"q"}, "q": {"p"}}) == ["p", "q", "p"]


def test_import_scanner_sees_lazy_and_type_checking_imports(tmp_path):
    (tmp_path / "moe_ts").mkdir()
    path = tmp_path / "moe_ts" / "probe.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from moe_ts.model import X\n"
                    "def f():\n    import deepspeed.moe\n    from . import sibling\n")
    found = imports_of(path, tmp_path)
    assert {"moe_ts.model", "deepspeed.moe", "moe_ts.sibling"} <= found


def test_no_import_circle_between_modules():
    cycle = find_cycle(project_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_packages_import_only_lower_layers():
    bad = {pkg: sorted(deps - ALLOWED[pkg]) for pkg, deps in package_graph(project_graph()).items()
           if deps - ALLOWED[pkg]}
    assert not bad, f"imports against the layer order (package -> forbidden packages): {bad}"
    assert find_cycle(package_graph(project_graph())) is None


def test_model_library_never_imports_runtime_or_higher_layers():
    offenders = []
    for path in sorted((ROOT / "moe_ts").rglob("*.py")):
        for name in imports_of(path):
            if name.split(".")[0] in FORBIDDEN_IN_LIBRARY:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_the_core_imports_no_model_family():
    graph = project_graph()
    offenders = [f"{mod} imports {dep}" for mod, deps in sorted(graph.items())
                 if mod.startswith("moe_ts.") and not mod.startswith(FAMILIES)
                 for dep in sorted(deps) if dep.startswith(FAMILIES)]
    assert not offenders, "\n".join(offenders)


def test_importing_the_library_loads_no_deepspeed():
    """The same rule at run time: importing every moe_ts module pulls in neither deepspeed nor the higher layers."""
    mods = sorted(module_name(p) for p in (ROOT / "moe_ts").rglob("*.py"))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods)
            + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_IN_LIBRARY!r})\n"
            + "print(bad); sys.exit(1 if bad else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-2000:]}"


def test_kernels_are_pure_ops():
    """kernels/ takes tensors and returns tensors: no module of it imports another project package."""
    deps = package_graph(project_graph()).get("kernels", set())
    assert not deps, f"kernels imports {sorted(deps)}"
