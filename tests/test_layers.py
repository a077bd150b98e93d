"""The package's import structure (issue 17, part 1): read from the source with ``ast``, imports inside functions
counted, so a cycle hidden in a function body fails too. Dependencies point one way, from the pages and the command
line down to errors/io:

    errors, io  <-  data  <-  nets, distributions, witness  <-  models  <-  registry  <-  train  <-  eval
        <-  runs  <-  jobs  <-  cli / pages

A module may import from its own layer or any layer below, never from above, and no set of modules may import each
other in a circle. The modules of ``sequence/`` (lm, model, train, metrics, runs, cli) sit in the layers
of their image counterparts.

Imports sit at the top of their module (issue 17, part 1). A function body may import only the heavy optional
third-party packages of ``HEAVY_OPTIONAL`` below, the one list of them: never a module of this package, the standard
library, torch, numpy or safetensors. ``import cvae_core`` (and importing any of its modules) loads none of them."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cvae_core"

# The only packages imported inside functions (top-level import names). Each is slow to import or needed by one
# feature only, so importing the core stays fast and a missing one fails only that feature. Times: `python -X
# importtime`, on top of torch and numpy (which the core always loads), on a 2-core CPU.
HEAVY_OPTIONAL = {
    "sklearn",       # ~1 s: the certificate teacher's PCA and mixture, PCA maps, k-means / NMI of the seq metrics
    "umap",          # ~2.5 s (pulls numba, pynndescent): UMAP maps of the latent space
    "skimage",       # skimage.morphology ~0.4 s: morpho-mnist skeletons
    "scipy",         # 0.1-0.4 s a submodule: SVHN's .mat files, morpho-mnist rendering, the seq metrics' matching
    "torchvision",   # ~1.5-2 s: the MNIST / SVHN / CIFAR-100 downloaders, `sample`'s PNG grid
    "transformers",  # ~0.5 s: the sequence CVAE's backbone
    "peft",          # ~4 s: LoRA adapters on that backbone
    "PIL",           # ~15 ms, but no direct requirement (it comes with torchvision): only the CelebA decoder
    "ray",           # ~1 s, and a cluster runtime: only `reproduce PAPER` runs trials on it
    "matplotlib",    # ~0.3 s: the reproduce reports' plots
}

LAYERS = [
    ["errors", "io", "fields", "integrity"],
    ["data", "data.celeba", "data.dataset", "data.local", "data.longtail", "data.mnist", "data.morpho",
     "data.strategies"],
    ["nets", "distributions", "witness", "sequence.lm"],
    ["models", "models.base", "models.gaussian", "models.student_t", "models.flow", "models.certificate",
     "sequence", "sequence.model"],
    ["registry"],
    ["train", "sequence.train"],
    ["eval", "eval.likelihood", "eval.rd", "eval.samples", "eval.classifier", "eval.attributes",
     "eval.projection", "eval.certificate", "eval.balance", "eval.generate", "sequence.metrics"],
    ["runs", "runs.checkpoint", "runs.folder", "runs.catalog", "runs.setup", "sequence.runs"],
    ["jobs"],
    ["reproduce", "reproduce.engine", "reproduce.stats", "reproduce.beta_sigma", "reproduce.t3",
     "reproduce.certificate", "reproduce.flow", "reproduce.sequence"],
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
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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
    assert not set(RANK) - set(graph), f"LAYERS names modules that do not exist: {sorted(set(RANK) - set(graph))}"
    upward = sorted(f"{a} (layer {RANK[a]}) imports {b} (layer {RANK[b]})"
                    for a, deps in graph.items() for b in deps if RANK[b] > RANK[a])
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_core_never_imports_streamlit():
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "streamlit" for n in names), f"{path} imports streamlit"


def in_function_imports(source: str) -> list[tuple[int, str]]:
    """(line, top-level name) of every import statement inside a function or method body of `source`; a relative
    import counts as "cvae_core"."""
    found = set()
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    found |= {(node.lineno, a.name.split(".")[0]) for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    found.add((node.lineno, "cvae_core" if node.level else node.module.split(".")[0]))
    return sorted(found)


def misplaced_imports(source: str) -> list[tuple[int, str]]:
    """The in-function imports of `source` that belong at the top of the module (anything not in HEAVY_OPTIONAL)."""
    return [(line, name) for line, name in in_function_imports(source) if name not in HEAVY_OPTIONAL]


def test_the_import_checker_catches_imports_that_belong_at_the_top():
    """The checker itself, on made-up source: package modules (absolute or relative), the standard library and torch
    inside functions, methods and nested functions are caught; heavy optional packages and module-level imports
    are not."""
    source = "\n".join([
        "import json",                                   # 1
        "import torch",                                  # 2
        "def f():",                                      # 3
        "    from cvae_core.registry import MODELS",     # 4
        "    from sklearn.decomposition import PCA",     # 5
        "    return MODELS, PCA",                        # 6
        "class C:",                                      # 7
        "    def g(self):",                              # 8
        "        import copy",                           # 9
        "        def h():",                              # 10
        "            from . import io",                  # 11
        "            import umap, torch.nn",             # 12
    ])
    assert in_function_imports(source) == [(4, "cvae_core"), (5, "sklearn"), (9, "copy"), (11, "cvae_core"),
                                           (12, "torch"), (12, "umap")]
    assert misplaced_imports(source) == [(4, "cvae_core"), (9, "copy"), (11, "cvae_core"), (12, "torch")]
    assert misplaced_imports("def f():\n    from cvae_core.registry import MODELS\n") == [(2, "cvae_core")]


def test_functions_import_only_heavy_optional_packages():
    bad, used = [], set()
    for path in sorted(PKG.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        used |= {name for _, name in in_function_imports(source)}
        bad += [f"{path.relative_to(PKG.parent)}:{line} imports {name}" for line, name in misplaced_imports(source)]
    assert not bad, "imports inside functions that belong at the top of their module:\n" + "\n".join(bad)
    assert used == HEAVY_OPTIONAL, f"HEAVY_OPTIONAL names packages no function imports: {HEAVY_OPTIONAL - used}"


def test_importing_the_package_loads_no_heavy_optional_package():
    """In a fresh interpreter: `import cvae_core`, then every other module of the package (the command line
    included), loads no heavy optional package."""
    modules = sorted("cvae_core." + ".".join(f.relative_to(PKG).with_suffix("").parts)
                     for f in PKG.rglob("*.py") if f.name not in ("__init__.py", "__main__.py"))
    code = "\n".join([
        "import json, sys",
        "heavy = set(sys.argv[1:])",
        "loaded = lambda: sorted({m.split('.')[0] for m in sys.modules} & heavy)",
        "import cvae_core",
        "first = loaded()",
        f"for m in {modules!r}:",
        "    __import__(m)",
        "print(json.dumps([first, loaded()]))",
    ])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PKG.parent), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code, *sorted(HEAVY_OPTIONAL)], capture_output=True, text=True,
                       env=env, cwd=PKG.parent, timeout=240)
    assert r.returncode == 0, r.stderr
    on_import, on_all = json.loads(r.stdout.strip().splitlines()[-1])
    assert on_import == [], f"`import cvae_core` loads heavy optional packages: {on_import}"
    assert on_all == [], f"importing the package's modules loads heavy optional packages: {on_all}"
