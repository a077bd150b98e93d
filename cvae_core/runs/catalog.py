"""The one run catalog: every page, the CLI and the benchmarks list run folders through ``list_runs``.

A run folder is a folder with a ``config.json`` directly under a root. There are two roots: the shipped runs
(``$CVAE_CHECKPOINTS_DIR`` or ``<repo>/checkpoints``) and the runs users save (``$CVAE_RUNS_DIR`` or ``<repo>/runs``);
the sequence CVAE's runs sit in a ``strategies/`` folder of each. ``list_runs`` reads only config.json (and
metrics.json for the ν of a Student-t run's config), never weights, and reports a folder it cannot read as a one-line
problem instead of failing the whole list. Only folders whose name is ``admissible`` are listed (letters, digits, ``.``,
``_``, ``-``): the pages show run names in markdown, chart text and URLs, so a folder named ``<img src=x ...>`` or
``[x](javascript:...)`` under a root someone else can write to is a problem line that shows no markup, never a label.

One cache signature, ``signature(entries)``, changes whenever a listed run is written again (its weights or its
config.json), so a page's cached list and its cached models are re-read exactly then.

Example:
    >>> from cvae_core.runs.catalog import list_runs, shipped_root
    >>> runs, problems = list_runs([shipped_root()], dataset="mnist-lt", model="ct3vae")
    >>> sorted(r.nu for r in runs)[:3], problems
    ([2.5, 5.0, 10.0], [])
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cvae_core.errors import LabError
from cvae_core.registry import make_config
from cvae_core.runs.folder import read_run_info

REPO = Path(__file__).resolve().parents[2]
SEQUENCE_MODEL = "seq_cvae"
KINDS = ("image", "sequence")
# The names a run folder may have to be listed: the characters the app saves run names with; 95 characters at most, so
# that a saved run's URL id ``runs/NAME`` stays within the 100 characters a URL may name a run with (pages/_url.py).
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,94}")


def shipped_root(kind: str = "image") -> Path:
    """The shipped runs: ``$CVAE_CHECKPOINTS_DIR`` or ``<repo>/checkpoints`` (``strategies/`` in it for sequences)."""
    root = Path(os.environ.get("CVAE_CHECKPOINTS_DIR") or REPO / "checkpoints")
    return root / "strategies" if kind == "sequence" else root


def saved_root(kind: str = "image") -> Path:
    """Where runs are saved: ``$CVAE_RUNS_DIR`` or ``<repo>/runs`` (``strategies/`` in it for sequences)."""
    root = Path(os.environ.get("CVAE_RUNS_DIR") or REPO / "runs")
    return root / "strategies" if kind == "sequence" else root


def default_roots(kind: str = "image") -> list[Path]:
    """[shipped root, saved root] of a kind of run."""
    return [shipped_root(kind), saved_root(kind)]


def weights_file(path: Path) -> Path:
    """The file whose change means the run was saved again: its weights, else its config.json."""
    for name in ("model.safetensors", "weights.safetensors"):
        if (path / name).exists():
            return path / name
    return path / "config.json"


def run_key(path: str | Path) -> str:
    """``"<path>@<mtime of its weights>"``: the key under which pages cache a loaded run and what they derive from
    it; a re-saved run gets a new key. A folder that vanished gets the key of a missing file."""
    path = Path(path)
    try:
        return f"{path}@{weights_file(path).stat().st_mtime_ns}"
    except OSError:
        return f"{path}@missing"


@dataclass(frozen=True)
class RunEntry:
    """A run folder as its config.json describes it."""

    path: Path
    name: str  # the folder's name
    shipped: bool  # under the first root given to list_runs
    kind: str  # "image" or "sequence"
    model: str
    dataset: str | None  # the data set's name (None for sequence runs)
    rho: float | None  # imbalance of a long-tailed data set
    nu: float | None  # Student-t degrees of freedom (Student-t families only)
    condition: str | None  # "class", "attributes" or None
    two_stage: bool  # a flow prior fitted after training
    key: str  # run_key(path): changes when the run is saved again

    @property
    def label(self) -> str:
        """How a run list shows it: the folder name for a shipped run, ``saved: NAME`` for a saved one."""
        return self.name if self.shipped else f"saved: {self.name}"

    @property
    def id(self) -> str:
        """How a URL names it: the folder name for a shipped run, ``runs/NAME`` for a saved one (works on any
        installation)."""
        return self.name if self.shipped else f"runs/{self.name}"


def admissible(name: str) -> bool:
    """Whether a folder of this name may be listed as a run (``FOLDER_NAME``): no markup, spaces or control
    characters, so a page may put the name in markdown, a chart or a URL as it is."""
    return FOLDER_NAME.fullmatch(name) is not None


def refused_name(path: Path) -> str:
    """The one-line problem of a run folder whose name is not ``admissible``; the name is shown with every character
    outside ``FOLDER_NAME``'s as '?', so the line itself carries no markup."""
    shown = re.sub(r"[^A-Za-z0-9._-]", "?", path.name[:60]) + ("..." if len(path.name) > 60 else "")
    return (f"run folder '{shown}' in {path.parent} is not listed: a run folder's name may hold only letters, "
            f"digits, dots, underscores and hyphens (at most 95 characters, the first a letter or digit); rename it")


def _kind_of(config: dict) -> str:
    return "sequence" if config.get("model") == SEQUENCE_MODEL else "image"


def _entry(path: Path, shipped: bool, info: dict) -> RunEntry:
    ds = info.get("dataset") or {}
    cfg = info.get("config") or {}
    name = ds.get("name")
    rho = ds.get("rho", 10.0) if str(name).endswith("-lt") else None
    nu = cfg.get("nu")
    return RunEntry(path=path, name=path.name, shipped=shipped, kind=_kind_of(info), model=info["model"],
                    dataset=name, rho=None if rho is None else float(rho), nu=None if nu is None else float(nu),
                    condition=cfg.get("condition"), two_stage=bool(cfg.get("two_stage", False)), key=run_key(path))


def _folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file())


def _quick_kind(path: Path) -> str | None:
    """The kind a config.json names, or None when it cannot be read (then the folder is a problem of each kind)."""
    try:
        return _kind_of(json.loads((path / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def list_runs(roots: Iterable[str | Path] | None = None, *, dataset: str | None = None, model: str | None = None,
              kind: str = "image", condition: str | None = None) -> tuple[list[RunEntry], list[str]]:
    """(the run folders directly under `roots` that match, one-line problems of folders that could not be read).

    The first root holds the shipped runs (``shipped`` True); the default roots are ``default_roots(kind)``. Runs come
    root by root, each root sorted by folder name. `kind` picks image or sequence runs (each kind's pages never see
    the other); `dataset`, `model` and `condition` filter by what config.json says."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (got {kind!r})")
    roots = default_roots(kind) if roots is None else [Path(r) for r in roots]
    runs, problems = [], []
    for i, root in enumerate(roots):
        for path in _folders(root):
            quick = _quick_kind(path)
            if quick is not None and quick != kind:
                continue
            if not admissible(path.name):
                problems.append(refused_name(path))
                continue
            try:
                info = read_run_info(path)
            except LabError as e:
                problems.append(str(e))
                continue
            e = _entry(path, i == 0, info)
            if dataset is not None and e.dataset != dataset:
                continue
            if (model is not None and e.model != model) or (condition is not None and e.condition != condition):
                continue
            runs.append(e)
    return runs, problems


def signature(roots: Iterable[str | Path] | None = None, kind: str = "image") -> tuple:
    """What a cached run list depends on: (folder, config.json and weights mtimes) of every run folder under the
    roots. Cheap (stat calls only); a page passes it to its cached ``list_runs``."""
    roots = default_roots(kind) if roots is None else [Path(r) for r in roots]
    out = []
    for root in roots:
        for p in _folders(root):
            try:
                out.append((str(p), (p / "config.json").stat().st_mtime_ns, run_key(p)))
            except OSError:
                continue
    return tuple(out)


def find(runs: list[RunEntry], ref: str) -> RunEntry | None:
    """The entry a URL or a list names: by ``id``, by ``label`` or by folder path."""
    return next((r for r in runs if ref in (r.id, r.label, str(r.path))), None)


def taken_names(kind: str = "image") -> set[str]:
    """Names already used under the saved root of a kind (a new run must not reuse one)."""
    root = saved_root(kind)
    return {p.name for p in root.iterdir()} if root.is_dir() else set()


def unique_name(base: str, taken: Iterable[str] = ()) -> str:
    """`base` with characters outside ``[A-Za-z0-9._-]`` replaced by '-', and ``-2``, ``-3``, ... when taken."""
    base = re.sub(r"[^A-Za-z0-9._-]", "-", base)
    taken = set(taken)
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


# ------------------------------------------------------------------ the nu sweep of the Class balance page
SWEEP_MODEL = "ct3vae"


def nu_sweep(runs: list[RunEntry], rho: float, model: str = SWEEP_MODEL) -> dict[float, RunEntry]:
    """nu -> run for the `model` runs at this rho, sorted by nu; a shipped run wins over a saved one of equal nu."""
    out: dict[float, RunEntry] = {}
    for r in runs:
        if r.model == model and r.rho == rho and r.nu is not None and (r.nu not in out or not out[r.nu].shipped):
            out[r.nu] = r
    return dict(sorted(out.items()))


def default_pair(runs: list[RunEntry]) -> tuple[RunEntry | None, RunEntry | None]:
    """(main, compare) runs: the shipped ct3vae at its default nu (10) and the shipped vae; otherwise the nearest
    thing there is (any ct3vae, any run; any vae, any other run)."""
    if not runs:
        return None, None
    default_nu = make_config(SWEEP_MODEL).nu

    def pick(*tests) -> RunEntry | None:
        for test in tests:
            for r in sorted(runs, key=lambda r: not r.shipped):
                if test(r):
                    return r
        return None

    main = pick(lambda r: r.model == SWEEP_MODEL and r.nu == default_nu, lambda r: r.model == SWEEP_MODEL,
                lambda r: True)
    other = pick(lambda r: r.model == "vae" and r is not main, lambda r: r is not main) or main
    return main, other


def nu_label(nu: float) -> str:
    """2.5 -> '2.5', 10.0 -> '10' (folder names and labels)."""
    return f"{nu:g}"


def nu_run_name(rho: float, nu: float, steps: int, taken: Iterable[str] = ()) -> str:
    """A folder name for a ct3vae trained at `nu`, e.g. ``mnistlt100_ct3vae_nu7.5_2000steps``; `-2`, `-3`, ... when
    the name is taken."""
    return unique_name(f"mnistlt{rho:g}_{SWEEP_MODEL}_nu{nu_label(nu)}_{steps}steps", taken)


# ------------------------------------------------------------------ the beta sweeps of the Compare page
SWEEP_DIR = "sweeps"  # under the shipped root: the runs scripts/train_sweeps.py trains
# family tag -> (model, decoder sigma or None, what it is): a sweep run's family is read from its config.json
BETA_FAMILIES = {
    "bs": ("bs_vae", None, "bs_vae (optimal variance per image)"),
    "sse": ("vae", 2 ** -0.5, "vae, σ² = 1/2 (sum of squared errors)"),
    "sigma1": ("vae", 1.0, "vae, σ = 1"),
}


def sweep_root() -> Path:
    return shipped_root() / SWEEP_DIR


def beta_family(info: dict) -> str | None:
    """The ``BETA_FAMILIES`` tag of a run's config.json, None when it is none of them (a Bernoulli vae, another
    sigma, another model)."""
    cfg = info.get("config") or {}
    for tag, (model, sigma, _) in BETA_FAMILIES.items():
        if info.get("model") != model or cfg.get("likelihood", "gaussian") != "gaussian":
            continue
        if sigma is None or (isinstance(cfg.get("sigma"), (int, float)) and abs(cfg["sigma"] - sigma) < 1e-9):
            return tag
    return None


@dataclass(frozen=True)
class SweepPoint:
    """One run of a shipped beta sweep: its family tag ("bs", "sse", "sigma1"), beta, catalog entry and test
    metrics."""

    family: str
    beta: float
    entry: RunEntry
    metrics: dict


def beta_sweeps(root: str | Path | None = None) -> dict[str, list[SweepPoint]]:
    """{family tag: its runs sorted by beta} of the runs under `root` (default ``sweep_root()``), each family read
    from the run's config.json (``beta_family``); runs of no family and unreadable runs are left out. Every tag of
    ``BETA_FAMILIES`` is a key (an empty list when none of its runs is there)."""
    root = Path(root) if root is not None else sweep_root()
    out: dict[str, list[SweepPoint]] = {t: [] for t in BETA_FAMILIES}
    for e in list_runs([root])[0]:
        try:
            info = read_run_info(e.path)
        except LabError:
            continue
        tag = beta_family(info)
        if tag is not None:
            out[tag].append(SweepPoint(tag, float(info["config"]["beta"]), e, info.get("metrics") or {}))
    return {t: sorted(p, key=lambda s: s.beta) for t, p in out.items()}


def _without_beta(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "beta"}


def beta_sweep(tag: str, saved: Iterable[str | Path] | None = None) -> dict[float, RunEntry]:
    """beta -> run of one ``BETA_FAMILIES`` sweep (``beta_sweep_runs``)."""
    if tag not in BETA_FAMILIES:
        raise ValueError(f"unknown beta family {tag!r} (one of {', '.join(BETA_FAMILIES)})")
    return beta_sweep_runs(saved)[tag]


def beta_sweep_runs(saved: Iterable[str | Path] | None = None) -> dict[str, dict[float, RunEntry]]:
    """{family tag: beta -> run} of every ``BETA_FAMILIES`` sweep, in one pass over the folders: the shipped runs,
    then the runs under the `saved` roots (default: the saved root) of a family trained like its shipped runs (the
    same config but beta, e.g. by the Generate page's "train this beta"), sorted by beta; a shipped run wins over a
    saved one of equal beta. A family with no shipped run has none (there is nothing to be trained like)."""
    shipped = beta_sweeps()
    out = {tag: {p.beta: p.entry for p in points} for tag, points in shipped.items()}
    base = {tag: _without_beta(read_run_info(points[0].entry.path).get("config") or {})
            for tag, points in shipped.items() if points}
    roots = [saved_root()] if saved is None else [Path(r) for r in saved]
    for e in list_runs([shipped_root(), *roots])[0]:
        if e.shipped:
            continue
        try:
            info = read_run_info(e.path)
        except LabError:
            continue
        cfg, tag = info.get("config") or {}, beta_family(info)
        if tag in base and _without_beta(cfg) == base[tag] and isinstance(cfg.get("beta"), (int, float)):
            out[tag].setdefault(float(cfg["beta"]), e)
    return {tag: dict(sorted(runs.items())) for tag, runs in out.items()}
