"""The package's import structure (issue 17, part 1): read from the source with ``ast``, imports inside functions
counted, so a cycle hidden in a function body fails too. Dependencies point one way, from the pages and the command
line down to errors/io:

    errors, io  <-  data  <-  nets, distributions, witness  <-  models  <-  registry  <-  train  <-  eval
        <-  runs  <-  jobs  <-  cli / pages

A module may import from its own layer or any layer below, never from above, and no set of modules may import each
other in a circle. The modules of ``sequence/`` (lm, model, train, metrics, runs, jobs, cli) sit in the layers
of their image counterparts."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cvae_core"

LAYERS = [
    ["errors", "io", "fields"],
    ["data", "data.celeba", "data.dataset", "data.local", "data.longtail", "data.mnist", "data.morpho",
     "data.strategies"],
    ["nets", "distributions", "witness", "sequence.lm"],
    ["models", "models.base", "models.gaussian", "models.student_t", "models.flow", "models.certificate",
     "sequence", "sequence.model"],
    ["registry"],
    ["train", "sequence.train"],
    ["eval", "eval.likelihood", "eval.samples", "eval.inception", "eval.classifier", "eval.attributes",
     "eval.projection", "eval.certificate", "eval.balance", "sequence.metrics"],
    ["runs", "runs.folder", "runs.catalog", "runs.setup", "sequence.runs"],
    ["jobs", "sequence.jobs"],
    ["cli", "__main__", "sequence.cli", ""],  # "" is the package's __init__ (its public API sits on top)
]
RANK = {m: i for i, layer in enumerate(LAYERS) for m in layer}


def _modules(pkg: Path) -> dict[str, Path]:
    out = {}
    for f in pkg.rglob("*.py"):
        parts = f.relative_to(pkg).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


def _targets(mods: dict[str, Path], name: str, node: ast.AST) -> set[str]:
    """The package modules an import statement of module `name` reads (relative or absolute)."""
    is_pkg = mods[name].name == "__init__.py"
    here = [p for p in name.split(".") if p] if is_pkg else name.split(".")[:-1]
    found = set()
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = here[: len(here) - (node.level - 1)] + (node.module.split(".") if node.module else [])
        elif node.module and node.module.split(".")[0] == "cvae_core":
            base = node.module.split(".")[1:]
        else:
            return found
        mod = ".".join(base)
        for alias in node.names:
            sub = f"{mod}.{alias.name}" if mod else alias.name
            found.add(sub if sub in mods else mod)
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "cvae_core":
                found.add(".".join(alias.name.split(".")[1:]))
    return {t for t in found if t in mods and t != name}


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its file (names relative to the package)."""
    mods = _modules(pkg)
    graph = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= _targets(mods, name, node)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), or a module importing itself."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_imports_inside_functions(tmp_path):
    """The reader itself, on a made-up package: a cycle closed by an import inside a function is found."""
    pkg = tmp_path / "cvae_core"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    from .sub.c import g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..errors import X\nimport cvae_core.a\n")
    (pkg / "errors.py").write_text("")
    graph = import_graph(pkg)
    assert graph["a"] == {"b"} and graph["b"] == {"a", "sub.c"} and graph["sub.c"] == {"errors", "a"}
    assert _cycles(graph) == [["a", "b", "sub.c"]]


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "witness" in graph["models.certificate"] and "models.certificate" in graph["registry"]  # reads this tree
    assert "eval.certificate" in graph["eval"] and "witness" in graph["eval.certificate"]
    cycles = _cycles(graph)
    assert not cycles, f"import cycles (imports inside functions counted): {cycles}"


def test_every_module_has_a_layer_and_imports_point_down():
    graph = import_graph()
    assert not set(graph) - set(RANK), f"modules without a layer in LAYERS: {sorted(set(graph) - set(RANK))}"
    upward = sorted(f"{a} (layer {RANK[a]}) imports {b} (layer {RANK[b]})"
                    for a, deps in graph.items() for b in deps if RANK[b] > RANK[a])
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_core_never_imports_streamlit():
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path} imports streamlit"
