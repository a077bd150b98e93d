"""Helpers of the Strategies page: the sequence CVAE runs (shipped, saved, trained here), what the router expects
for an input, what the decoder writes under each latent value and what the inference network recognises in an
answer; starting and showing a training job (``cvae_core.jobs.SeqTrainingJob``)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from cvae_core.data.strategies import STRATEGIES, check_digits
from cvae_core.errors import CheckpointError, ConfigError, DataError, LabError
from cvae_core.jobs import ENDED, SeqTrainingJob
from cvae_core.runs import catalog
from cvae_core.runs.catalog import RunEntry
from cvae_core.sequence.metrics import controlled_answers, router_probs, slot_values, value_probs
from cvae_core.sequence.model import SeqCVAEConfig
from cvae_core.sequence.runs import load_seq_run
from pages import _jobs, _runs
from pages._jobs import RUN_NAME

SHIPPED = ("discrete", "continuous")
COLORS = ["#4F46E5", "#F97316", "#0EA5E9", "#16A34A", "#A855F7", "#DC2626", "#64748B", "#14B8A6"]
STRATEGY_COLORS = dict(zip(STRATEGIES, COLORS, strict=False))  # a strategy has one colour in every run


def run_options() -> dict[str, RunEntry]:
    """label -> run of every sequence CVAE run in the catalog: the shipped runs first (in SHIPPED's order, then by
    name), saved ones as "saved: NAME"."""
    order = {n: i for i, n in enumerate(SHIPPED)}
    runs = sorted(_runs.runs("sequence")[0], key=lambda r: (not r.shipped, order.get(r.name, len(order)), r.name))
    return {r.label: r for r in runs}


@st.cache_resource(show_spinner="Loading the run ...", max_entries=8)
def load(path: str, key: str):
    """(model, base, info) of a run folder; `key` (``catalog.run_key``) keys the cache so a re-saved run is
    reloaded."""
    return load_seq_run(path)


def new_job(name: str, latent: str, size: int, beta: float, steps: int) -> SeqTrainingJob:
    """Start training a sequence CVAE in the background (through the server's job board, which stops this session's
    previous one), to be saved as `name` under the saved root; raises LabError with one line for a bad name, a taken
    name (saved, or being trained by another session), a missing base model or bad settings."""
    saved, base = catalog.saved_root("sequence"), catalog.shipped_root("sequence") / "base"
    if not RUN_NAME.fullmatch(name):
        raise LabError("A run name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.")
    if (saved / name).exists():
        raise LabError(f"A run named {name} is already saved in {saved}; pick another name.")
    if not (base / "config.json").is_file():
        raise CheckpointError("The shipped base model `checkpoints/strategies/base` is missing; run "
                        "`bash scripts/train_shipped_strategies.sh` first.")
    return _jobs.submit("seq", SeqTrainingJob(saved / name, job_config(latent, size, size, beta), steps, base))


def job_status(job) -> None:
    """The training job's progress and, once it ended, its outcome; a full rerun then lists the new run."""
    snap = job.snapshot()
    st.progress(snap["fraction"], text=snap["text"])
    if snap["status"] in ("failed", "diverged"):
        st.error(snap["message"])
    elif snap["status"] == "stopped":
        st.warning("Stopped; nothing was saved.")
    elif snap["status"] == "saved" and job.metrics:
        st.success(f"Saved as **saved: {job.out.name}**: NMI {job.metrics['nmi']:.2f}, controllability "
                   f"{job.metrics['controllability']:.2f}, recon ratio {job.metrics['recon_ratio']:.2f}.")
    if snap["status"] in ENDED and not getattr(job, "announced", False):
        job.announced = True  # once: a full rerun lists the new run above and stops the polling
        st.rerun()


def max_input_length(model) -> int:
    """The longest x whose template (with an answer as long as x) fits the decoder's context."""
    n_pos = getattr(model.decoder_lm.config, "n_positions", None) or model.decoder_lm.config.max_position_embeddings
    return (n_pos - 9) // 2  # <bos> <x> x </x> <z> <z?> </z> <y> y </y> <eos>


def check_input(text: str, model, what: str = "x") -> str:
    """The digits of a typed input, or a DataError with one line a teacher can read out."""
    text = text.strip()
    if not text:
        raise DataError(f"Type some digits for {what} (it is empty).")
    try:
        check_digits(text)
    except DataError:
        bad = sorted({c for c in text if c not in "0123456789"})
        raise DataError(f"{what} may hold only the digits 0-9; remove {' '.join(repr(c) for c in bad)}.") from None
    longest = max_input_length(model)
    if len(text) > longest:
        raise DataError(f"{what} has {len(text)} digits; this model's context holds at most {longest}.")
    return text


def latent_values(model, info: dict) -> tuple[torch.Tensor, np.ndarray | None, list[str], list[str | None]]:
    """(slot vectors (V, width), centroids or None, labels "z = k (strategy)", the strategy each value learned) of a
    run's latent values: the K values (discrete) or the k-means centroids saved with its metrics (continuous)."""
    metrics = info.get("metrics") or {}
    cent = None if model.config.latent == "discrete" else np.asarray(metrics["centroids"], dtype=np.float32)
    vecs = slot_values(model, cent)
    learned = list(metrics.get("latent_to_strategy") or [])
    learned += [None] * (len(vecs) - len(learned))
    names = [f"z = {k}" + (f" ({s})" if s else "") for k, s in enumerate(learned)]
    return vecs, cent, names, learned


@torch.no_grad()
def expectations(model, info: dict, task, x: str) -> dict:
    """What a run does with x: the router's p(z|x) over the latent values, and one greedy answer per value with the
    strategies that make it (the exact checker)."""
    vecs, cent, names, learned = latent_values(model, info)
    probs = router_probs(model, [x], cent)[0]
    rows = []
    for k, v in enumerate(vecs):
        ans = controlled_answers(model, [x], v)[0]
        made = task.check(x, ans) if ans is not None else []
        rows.append({"latent": names[k], "p(z|x)": float(probs[k]), "answer": ans if ans is not None else "(none)",
                     "made by": ", ".join(task.strategies[s] for s in made) or "no strategy"})
    truth = {task.strategies[s]: float(w) for s, w in enumerate(task.weights(x))}
    return {"names": names, "learned": learned, "probs": probs, "rows": rows, "truth": truth}


@torch.no_grad()
def recognised(model, info: dict, x: str, y: str) -> tuple[list[str], list[str | None], np.ndarray]:
    """(labels, learned strategies, q(z|x,y) over the latent values); continuous: the share of 64 seeded posterior
    samples nearest to each centroid, the same bars on every rerun."""
    _, cent, names, learned = latent_values(model, info)
    return names, learned, value_probs(model.inference([x], [y]), cent, torch.Generator().manual_seed(0))[0]


def bars(names: list[str], values, title: str, learned: list[str | None], height: int = 260) -> go.Figure:
    colors = [STRATEGY_COLORS.get(s, "#94A3B8") for s in learned]  # the colour of the strategy the latent learned
    fig = go.Figure(go.Bar(x=names, y=list(values), marker_color=colors, name=title,
                           text=[f"{v:.2f}" for v in values], textposition="outside"))
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), yaxis_range=[0, 1.15],
                      showlegend=False)
    return fig


def metrics_table(info: dict) -> list[dict]:
    m = info.get("metrics") or {}
    return [{"latent": f"z = {k}", "strategy it learned": s, "purity of its answers": m["controllability_per_z"][k]}
            for k, s in enumerate(m.get("latent_to_strategy") or [])]


def job_config(latent: str, K: int, dim: int, beta: float) -> SeqCVAEConfig:
    try:
        if latent == "discrete":
            return SeqCVAEConfig(latent=latent, K=K, beta=beta)
        return SeqCVAEConfig(latent=latent, latent_dim=dim, beta=beta)
    except ConfigError as e:
        raise DataError(str(e)) from None


def config_line(model) -> str:
    c = model.config
    size = f"K = {c.K}" if c.latent == "discrete" else f"m = {c.latent_dim}"
    return (f"{c.latent} latent · {size} · β = {c.beta:g} · router / decoder / inference: "
            f"{c.router} / {c.decoder} / {c.inference}")


