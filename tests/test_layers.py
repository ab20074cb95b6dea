"""The layers of the code base (docs/architecture.md), pinned on the import graph read statically with `ast`.

    catlab (library) <- study registry and study files <- analysis <- reports <- run engine <- CLI

Every import counts, at module level or inside a function. A module may import its own layer or a lower one;
the CLI's lazy dispatch is the one upward edge, and it is spelled out in UPWARD. No import cycle anywhere.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("catlab", "experiments", "analysis", "reports")

# Study files: every experiments/ module that declares a STUDY (plus the registry and common.py).
REGISTRY = {"experiments", "experiments.common"}
LAYERS = ("library", "studies", "analysis", "reports", "engine", "cli")
CLI = {"catlab.cli", "catlab.__main__"}
# The CLI is the top layer, so its imports all go down: the lazy dispatch to the commands above the library
# (catlab.cli, inside the catlab package) is that one upward edge, and the layer of the CLI makes it allowed.
UPWARD: set = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports (module level and inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:          # `import catlab.data.pyramid as p` -> catlab.data.pyramid
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    mods = source_modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def is_study_file(name: str, path: Path) -> bool:
    return name.startswith("experiments.") and "STUDY = Study(" in path.read_text()


def layer(name: str, mods: dict[str, Path]) -> int:
    if name in CLI:
        return LAYERS.index("cli")
    top = name.split(".")[0]
    if top == "catlab":
        return LAYERS.index("library")
    if top == "experiments":
        studies = name in REGISTRY or is_study_file(name, mods[name])
        return LAYERS.index("studies" if studies else "engine")
    return LAYERS.index(top)


def layer_violations(g: dict[str, set[str]], mods: dict[str, Path]) -> list[str]:
    bad = []
    for m, deps in g.items():
        for d in deps:
            if layer(d, mods) > layer(m, mods) and (m, d) not in UPWARD:
                bad.append(f"{m} ({LAYERS[layer(m, mods)]}) imports {d} ({LAYERS[layer(d, mods)]})")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


# ---- the checks -------------------------------------------------------------------------------------------
def test_every_import_goes_down_a_layer():
    mods = source_modules()
    assert layer_violations(graph(), mods) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_study_files_import_only_the_config_and_the_registry():
    mods = source_modules()
    g = graph()
    for m, path in mods.items():
        if is_study_file(m, path) or m == "experiments.common":
            assert g[m] <= {"catlab.config", "catlab.profiles", "experiments", "experiments.common"}, m


def test_analysis_never_imports_experiments():
    g = graph()
    assert [m for m, deps in g.items() if m.startswith("analysis")
            and any(d.split(".")[0] == "experiments" for d in deps)] == []


# ---- the checks can fail -------------------------------------------------------------------------------------
def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    f = tmp_path / "a.py"
    f.write_text("import os\nfrom . import b\n\ndef f():\n    from pkg.c import thing\n")
    assert imports_of("pkg.a", f, known) == {"pkg.b", "pkg.c"}


def test_a_cycle_and_an_upward_import_are_caught():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    mods = source_modules()
    bad = layer_violations({"analysis.misalignment": {"experiments.runner"}}, mods)
    assert bad == ["analysis.misalignment (analysis) imports experiments.runner (engine)"]
    assert layer_violations({"catlab.trainer": {"analysis.misalignment"}}, mods) != []


@pytest.mark.parametrize("module,expected", [
    ("catlab.trainer", "library"), ("experiments", "studies"), ("experiments.ablation_consistency", "studies"),
    ("experiments.common", "studies"), ("analysis.misalignment", "analysis"), ("reports.build", "reports"),
    ("experiments.runner", "engine"), ("catlab.cli", "cli")])
def test_layer_of(module, expected):
    assert LAYERS[layer(module, source_modules())] == expected
