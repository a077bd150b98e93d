"""The Generate page's parts: which runs it can show (the beta sweeps, the ct3vae nu sweep, any image run), the run a
link asks for, the cached per-run statistics, the pictures (fixed-noise grid, KL-ordered traversal, interpolation)
and the background "train this exact value" job. The maths is in ``cvae_core.eval.generate``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import streamlit as st
import torch

from cvae_core import jobs
from cvae_core.data import morpho
from cvae_core.data.dataset import to_float
from cvae_core.errors import LabError
from cvae_core.eval import generate as G
from cvae_core.eval.attributes import cell_conditions
from cvae_core.eval.likelihood import encoder_means
from cvae_core.runs import catalog
from cvae_core.runs.catalog import RunEntry
from pages import _jobs, _runs, _url
from pages._rare import PRESET

NU_RHO = 100.0  # the shipped ct3vae nu sweep is on MNIST-LT at this rho
FAMILIES = {  # page family -> its label; "bs", "sse", "sigma1" are catalog.BETA_FAMILIES tags
    "bs": "bs_vae β sweep (optimal σ per image)",
    "sse": "vae β sweep, σ² = 1/2 (sum of squared errors)",
    "sigma1": "vae β sweep, σ = 1",
    "nu": f"ct3vae ν sweep (MNIST-LT, ρ = {NU_RHO:g})",
    "any": "any run",
}
BETA_TAGS = ("bs", "sse", "sigma1")
DEFAULT_BETA, DEFAULT_NU = 1.0, 10.0
TAU_MAX = 3.0  # tau / tau0
ALL = "all"  # the class control's "one row per class"
ATTRS = morpho.ATTRIBUTES
DEFAULT_DIGIT = str(PRESET["digit"])  # an attribute run opens on the Rare combinations page's held-out cell
URL_KEYS = ("family", "run", "beta", "nu", "tau", "seed", "y", "a", "b", *ATTRS)


# ------------------------------------------------------------------ the runs
@dataclass(frozen=True)
class Choices:
    """What the page can show: each sweep as value -> run, and every image run by id."""

    betas: dict[str, dict[float, RunEntry]]  # family tag -> beta -> run
    nus: dict[float, RunEntry]
    runs: dict[str, RunEntry]  # id -> run (listed runs, then the sweep runs)

    def sweep(self, family: str) -> dict[float, RunEntry]:
        return self.nus if family == "nu" else self.betas.get(family, {})

    def family_of(self, entry: RunEntry) -> tuple[str, float | None]:
        """(family, its sweep value) of a run: the sweep it is a member of, else ("any", None)."""
        for tag, sweep in self.betas.items():
            for beta, e in sweep.items():
                if e.path == entry.path:
                    return tag, beta
        for nu, e in self.nus.items():
            if e.path == entry.path:
                return "nu", nu
        return "any", None


@st.cache_data(show_spinner=False, max_entries=8)
def _choices(sig: str) -> Choices:
    listed, _ = _runs.runs()
    betas = catalog.beta_sweep_runs()
    nus = catalog.nu_sweep([r for r in listed if r.dataset == "mnist-lt"], NU_RHO)
    out = {r.id: r for r in listed}
    for sweep in betas.values():
        for e in sweep.values():
            out.setdefault(e.id, e)
    return Choices(betas, nus, out)


def choices() -> Choices:
    """The page's runs, read again whenever a run folder under the shipped, sweep or saved roots changes."""
    roots = [*catalog.default_roots(), catalog.sweep_root()]
    return _choices(_runs.digest(catalog.signature(roots)))


def nearest(value: float, options: list[float]) -> float:
    """The option nearest to `value` on a log scale (betas and nus are spread over decades)."""
    return min(options, key=lambda o: (abs(math.log(o) - math.log(value)), o))


def default_value(family: str, sweep) -> float:
    """The value a sweep opens on: the trained value nearest to ν = 10 or β = 1."""
    return nearest(DEFAULT_NU if family == "nu" else DEFAULT_BETA, list(sweep))


def from_url(ch: Choices) -> None:
    """Set the family and run widgets from the URL, on the first run of a page view: `run` wins; otherwise `family`
    with `beta` or `nu` snapped to the nearest trained value (saying so, and offering that value for training)."""
    ss = st.session_state
    families = [f for f in FAMILIES if f == "any" or ch.sweep(f)]
    run = None
    if "run" in st.query_params:  # a bad name falls back to the default family's default run, and says so
        first = families[0]
        default = ch.sweep(first)[default_value(first, ch.sweep(first))].id if first != "any" else \
            next(iter(ch.runs))
        run = _url.param("run", "run", default, choices={i: i for i in ch.runs})
    if run is not None:
        family, value = ch.family_of(ch.runs[run])
        for key in ("beta", "nu"):
            asked = _url.param(key, "float", None, lo=1e-9, hi=1e9)
            if asked is None:
                continue
            if family == "any" or (family == "nu") != (key == "nu"):  # a beta for a nu-sweep run, or the reverse
                why = f"is not used with run {_url.plain(run)} (not a run of a {key} sweep)"
            elif not math.isclose(asked, value, rel_tol=1e-6):
                why = f"is not the {key} of run {_url.plain(run)}"
            else:
                continue
            st.warning(f"URL parameter {key}: {asked:g} {why}; showing the run as trained.", icon=":material/link_off:")
    else:
        family = _url.param("family", "choice", families[0], choices=families)
        value = None
    ss["gen_family"] = family
    if family == "any":
        ss["gen_run"] = run if run is not None else next(iter(ch.runs))
        return
    sweep = list(ch.sweep(family))
    key = "nu" if family == "nu" else "beta"
    if value is None:
        asked = _url.param(key, "float", default_value(family, sweep), lo=1e-9, hi=1e9)
        value = nearest(asked, sweep)
        if not math.isclose(asked, value, rel_tol=1e-6):
            st.info(f"No run of this sweep is trained at {'ν' if key == 'nu' else 'β'} = {asked:g}: showing the "
                    f"nearest, {value:g}. **Train {asked:g} exactly** starts it in the background.",
                    icon=":material/info:")
            ss["gen_train_value"] = float(asked)
    ss["gen_value"] = value


def apply_pending() -> None:
    """Show the run a finished job saved: its family and value, set before the widgets are drawn."""
    ss = st.session_state
    if "gen_pending" in ss:
        ss["gen_family"], ss["gen_value"] = ss.pop("gen_pending")
        ss.pop("gen_run", None)


def on_family() -> None:
    """A new family starts at its default value (β = 1, ν = 10) or the first run."""
    for k in ("gen_value", "gen_run", "gen_train_value"):
        st.session_state.pop(k, None)


def selected(ch: Choices) -> RunEntry:
    """The run on show for the family and value (or run) the widgets hold; fills in defaults."""
    ss = st.session_state
    family = ss["gen_family"]
    if family == "any":
        if ss.get("gen_run") not in ch.runs:
            ss["gen_run"] = next(iter(ch.runs))
        return ch.runs[ss["gen_run"]]
    sweep = ch.sweep(family)
    if ss.get("gen_value") not in sweep:
        ss["gen_value"] = default_value(family, sweep)
    return sweep[ss["gen_value"]]


def keep_in_range(y_options: list[str], n_test: int) -> None:
    """After a switch to another run (not a new page view, when the URL sets everything): a class the new run does
    not have goes back to its default, and test image indices beyond its test set to the last image, silently (the
    user moved, not the link)."""
    ss = st.session_state
    if _url.fresh():
        return
    if "gen_y" in ss and ss["gen_y"] not in y_options:
        ss["gen_y"] = default_class(y_options)
    for key in ("gen_a", "gen_b"):
        if key in ss and not 0 <= ss[key] < n_test:
            ss[key] = min(max(int(ss[key]), 0), n_test - 1)


def default_class(y_options: list[str]) -> str:
    """The class control's first value: one row per class where there is that option, else DEFAULT_DIGIT."""
    return y_options[0] if y_options[0] == ALL or DEFAULT_DIGIT not in y_options else DEFAULT_DIGIT


def class_label(data, value: str) -> str:
    """'3', or '3 (name)' where the data set names its classes otherwise."""
    name = str(data.class_names[int(value)])
    return value if name == value else f"{value} ({name})"


# ------------------------------------------------------------------ per run, cached
def load(entry: RunEntry):
    """(model, info, data) of a run; raises LabError with one line."""
    return _runs.load_source(entry.path)


@st.cache_resource(show_spinner=False, max_entries=64)
def stats(key: str, _model, _data) -> G.LatentStats:
    """The run's latent dimensions in KL order over the first test images (``generate.latent_stats``)."""
    n = min(G.STAT_IMAGES, len(_data.x_test))
    cond = _data.y_for(_model, "test")[:n] if _model.conditional else None
    return G.latent_stats(_model, _data.x_test[:n], cond)


def condition_of(model, data, index: int) -> torch.Tensor | None:
    """The condition test image `index` was encoded with: its class, or its attribute vector (None: unconditional)."""
    if not model.conditional:
        return None
    return data.y_for(model, "test")[index]


# ------------------------------------------------------------------ the pictures
def samples(model, seed: int, tau: float, y: str, attrs: tuple[float, ...]) -> tuple[torch.Tensor, int, str]:
    """(images, per row, caption) of the sample grid: 64 from fixed noise; for a class-conditional model with y
    "all", one row per class with the same noise in every row; for an attribute model, the digit and attributes."""
    if model.class_conditional and y == ALL:
        noise, ys = G.class_rows(G.fixed_noise(model, G.PER_ROW, seed), model.config.num_classes)
        return G.decode_noise(model, noise, ys, tau), G.PER_ROW, "row k: class k; each column the same noise"
    noise = G.fixed_noise(model, G.GRID, seed)
    if model.class_conditional:
        ys = torch.full((G.GRID,), int(y), dtype=torch.long)
        return G.decode_noise(model, noise, ys, tau), G.PER_ROW, f"all of class {y}"
    if model.conditional:  # attributes (morpho-mnist)
        cond = cell_conditions(int(y), attrs, G.GRID)
        return G.decode_noise(model, noise, cond, tau), G.PER_ROW, \
            f"digit {y}, " + ", ".join(f"{a} {v:g}" for a, v in zip(ATTRS, attrs, strict=True))
    return G.decode_noise(model, noise, None, tau), G.PER_ROW, "unconditional"


def traversal(model, data, st_: G.LatentStats, index: int, rows: int = 8) -> tuple[torch.Tensor, list[int]]:
    """(images, dims): the `rows` most informative dimensions traversed from test image `index`'s encoder mean."""
    cond = condition_of(model, data, index)
    c1 = None if cond is None else cond.unsqueeze(0)
    start = encoder_means(model, data.x_test[index : index + 1], c1)[0]
    dims = list(st_.order[: min(rows, len(st_.order))])
    z = G.traversal_latents(start, dims, st_)
    cz = None if cond is None else cond.unsqueeze(0).repeat(len(z), *[1] * cond.dim())
    return G.decode(model, z, cz), dims


def interpolation(model, data, a: int, b: int) -> torch.Tensor:
    """(2 STEPS, C, H, W): the row decoded along the line from a's encoder mean to b's, then the pixel blend."""
    ca, cb = condition_of(model, data, a), condition_of(model, data, b)
    xa, xb = data.x_test[a : a + 1], data.x_test[b : b + 1]
    za = encoder_means(model, xa, None if ca is None else ca.unsqueeze(0))[0]
    zb = encoder_means(model, xb, None if cb is None else cb.unsqueeze(0))[0]
    conds = G.endpoint_conditions(ca, cb)
    in_z = G.decode(model, G.interpolation_latents(za, zb), conds)
    pixels = G.pixel_blend(to_float(xa)[0], to_float(xb)[0])
    return torch.cat([in_z, pixels])


def picture(images: torch.Tensor, per_row: int) -> bytes:
    """The grid as PNG bytes, encoded once: st.image sends bytes as they are, and the download button offers the same
    file (an array given to st.image would be encoded again by Streamlit, at its slower default level)."""
    scale = 3 if images.shape[1] == 1 else 2  # a colour grid at 3x costs three times as much to encode
    return G.png_bytes(G.grid_array(images, per_row, scale=scale))


@st.cache_data(show_spinner=False, max_entries=256)
def samples_png(key: str, seed: int, tau: float, y: str, attrs: tuple[float, ...], _model) -> tuple[bytes, str]:
    """(PNG, caption) of the sample grid, cached per (run, seed, tau, condition): a move back is free."""
    images, per_row, what = samples(_model, seed, tau, y, attrs)
    return picture(images, per_row), what


@st.cache_data(show_spinner=False, max_entries=128)
def traversal_png(key: str, index: int, _model, _data) -> tuple[bytes, list[int]]:
    """(PNG, dims) of the traversal from test image `index`, cached per (run, image)."""
    images, dims = traversal(_model, _data, stats(key, _model, _data), index)
    return picture(images, G.TRAVERSE), dims


@st.cache_data(show_spinner=False, max_entries=128)
def interpolation_png(key: str, a: int, b: int, _model, _data) -> bytes:
    """PNG of the interpolation between test images a and b, cached per (run, a, b)."""
    return picture(interpolation(_model, _data, a, b), G.STEPS)


# ------------------------------------------------------------------ train this exact value
def train_form(family: str, base: RunEntry, value: float, info: dict, data) -> None:
    """Inside the "Train exactly" popover: the exact β or ν (any positive value; ν > 2), and Start. The new run copies
    the settings of the run on show (`base`, its config.json `info` and data set `data`; its steps or epochs too) and
    joins the sweep when saved."""
    key, sym = ("nu", "ν") if family == "nu" else ("beta", "β")
    lo = 2.05 if family == "nu" else 1e-4
    start = float(st.session_state.get("gen_train_value", value))
    st.session_state.setdefault("gen_exact", min(max(start, lo), 1e4))
    exact = st.number_input(f"{sym} to train", lo, 1e4, key="gen_exact", format="%g",
                            help=f"any value{' > 2' if family == 'nu' else ' > 0'}, not only the sweep's")
    t = info.get("train") or {}
    budget = f"{t['steps']:,} steps" if t.get("steps") else f"{t.get('epochs', '?'):g} epochs"
    st.caption(f"Trains {info['model']} with the settings of {base.name} ({budget}) but {sym} = {exact:g}, in the "
               "background (other sessions' runs go first when the server is busy), and saves it to the runs folder; "
               f"it then joins the {sym} slider.")
    if st.button(f"Train {sym} = {exact:g}", key="gen_train", type="primary", icon=":material/play_arrow:"):
        stem = base.name.rsplit(f"_{key}", 1)[0] if family == "nu" else family
        name = catalog.unique_name(f"{stem}_{key}{float(exact):g}", catalog.taken_names())
        try:  # the board stops this session's previous Generate job and starts this one
            _jobs.submit("gen", jobs.variant_training(info, {key: float(exact)}, data, catalog.saved_root() / name))
        except LabError as e:
            st.error(str(e))
        st.session_state["gen_job_value"] = (family, float(exact))
        st.session_state.pop("gen_message", None)


def job_ended(job, snap: dict) -> None:
    """When the job ends (``_jobs.job_progress``): show the saved run (it joined its sweep), or why it failed."""
    if snap["status"] == "saved":
        st.session_state["gen_pending"] = st.session_state.get("gen_job_value")  # applied before the widgets
        st.session_state["gen_message"] = ("success", f"Trained and saved **{snap['saved'].name}**: it is on show, "
                                           "and on the slider.")
    else:
        st.session_state["gen_message"] = ("error", f"Training failed: {snap['text']}")
