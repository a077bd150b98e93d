"""Helpers of the Strategies page: the sequence CVAE runs (shipped, saved, trained here), what the router expects
for an input, what the decoder writes under each latent value, what the inference network recognises in an answer,
and a training job that runs in a background thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from cvae_core.data.strategies import STRATEGIES, check_digits
from cvae_core.errors import ConfigError, DataError, LabError
from cvae_core.models.sequence import SeqCVAEConfig
from cvae_core.seq_metrics import controlled_answers, router_probs, sequence_metrics
from cvae_core.seq_runs import load_base, load_seq_run, save_seq_run, splits, train_seq
from pages import _ui

SHIPPED = ("discrete", "continuous")
COLORS = ["#4F46E5", "#F97316", "#0EA5E9", "#16A34A", "#A855F7", "#DC2626", "#64748B", "#14B8A6"]
STRATEGY_COLORS = dict(zip(STRATEGIES, COLORS, strict=False))  # a strategy has one colour in every run


def shipped_root() -> Path:
    return _ui.checkpoints_root() / "strategies"


def saved_root() -> Path:
    return _ui.runs_root() / "strategies"


def run_options() -> dict[str, Path]:
    """label -> run folder: the shipped runs by name, saved ones as "saved: NAME"."""
    out = {n: shipped_root() / n for n in SHIPPED if (shipped_root() / n / "config.json").is_file()}
    root = saved_root()
    if root.is_dir():
        out |= {f"saved: {p.name}": p for p in sorted(root.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file()}
    return out


@st.cache_resource(show_spinner="Loading the run ...", max_entries=8)
def load(path: str, mtime: float):
    """(model, base, info) of a run folder; `mtime` keys the cache so a re-saved run is reloaded."""
    return load_seq_run(path)


def mtime(path: Path) -> float:
    return (Path(path) / "weights.safetensors").stat().st_mtime


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


def latent_values(model, info: dict) -> tuple[torch.Tensor, np.ndarray | None, list[str]]:
    """(slot vectors (V, width), centroids or None, labels "z = k (strategy)") of a run's latent values: the K
    strategy embeddings (discrete) or the decoder inputs at the k-means centroids saved with its metrics
    (continuous)."""
    learned = (info.get("metrics") or {}).get("latent_to_strategy") or []
    if model.config.latent == "discrete":
        vecs, cent = model.z_embed.weight.detach(), None
    else:
        cent = np.asarray(info["metrics"]["centroids"], dtype=np.float32)
        with torch.no_grad():
            vecs = model.z_proj(torch.from_numpy(cent))
    names = [f"z = {k}" + (f" ({learned[k]})" if k < len(learned) else "") for k in range(len(vecs))]
    return vecs, cent, names


@torch.no_grad()
def expectations(model, info: dict, task, x: str) -> dict:
    """What a run does with x: the router's p(z|x) over the latent values, and one greedy answer per value with the
    strategies that make it (the exact checker)."""
    vecs, cent, names = latent_values(model, info)
    probs = router_probs(model, [x], cent)[0]
    rows = []
    for k, v in enumerate(vecs):
        ans = controlled_answers(model, [x], v)[0]
        made = task.check(x, ans) if ans is not None else []
        rows.append({"latent": names[k], "p(z|x)": float(probs[k]), "answer": ans if ans is not None else "(none)",
                     "made by": ", ".join(task.strategies[s] for s in made) or "no strategy"})
    truth = {task.strategies[s]: float(w) for s, w in enumerate(task.weights(x))}
    return {"names": names, "probs": probs, "rows": rows, "truth": truth}


@torch.no_grad()
def recognised(model, info: dict, x: str, y: str) -> tuple[list[str], np.ndarray]:
    """q(z|x,y) over the latent values (continuous: the share of 64 posterior samples nearest to each centroid)."""
    vecs, cent, names = latent_values(model, info)
    q = model.inference([x], [y])
    if cent is None:
        return names, q.probs[0].numpy()
    g = torch.Generator().manual_seed(0)  # the same bars on every rerun
    z = q.base_dist.loc[0] + q.base_dist.scale[0] * torch.randn(64, q.base_dist.loc.shape[-1], generator=g)
    near = torch.cdist(z, torch.from_numpy(cent)).argmin(-1)
    return names, np.bincount(near.numpy(), minlength=len(cent)) / 64


def bars(names: list[str], values, title: str, height: int = 260) -> go.Figure:
    learned = [n.split("(")[-1].rstrip(")") if "(" in n else None for n in names]
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


# ------------------------------------------------------------------ training on this page
class SeqJob:
    """A sequence CVAE trained in a background thread over the shipped base model; metrics at the end, then saved
    under runs/strategies/NAME. The page polls `progress`, `text`, `history`; `stop()` ends it after the current
    step, without saving."""

    def __init__(self, config: SeqCVAEConfig, steps: int, name: str, seed: int = 0):
        self.config, self.steps, self.name, self.seed = config, steps, name, seed
        self.progress, self.text, self.history = 0.0, "starting", []
        self.status, self.error, self.path, self.metrics = "running", None, None, None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"seq-train-{name}")
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _progress(self, frac: float, text: str) -> None:
        self.progress, self.text = frac, text
        if self._stop.is_set():
            raise _Stopped

    def _run(self) -> None:
        try:
            base, base_info = load_base(shipped_root() / "base")
            from cvae_core.seq_runs import task_from

            task = task_from(base_info.get("task"))
            t0 = time.time()
            try:
                model, history = train_seq(task, self.config, base, steps=self.steps, seed=self.seed, log_every=10,
                                           progress=self._progress)
            except _Stopped:
                self.status = "stopped"
                return
            self.history = history
            if self._stop.is_set():
                self.status = "stopped"
                return
            self.text = f"trained in {time.time() - t0:.0f} s; measuring on 200 test pairs ..."
            _, test = splits(task)
            self.metrics = sequence_metrics(model, base, task, test, n=200, n_control=60)
            train = {"steps": self.steps, "batch_size": 32, "lr": 3e-3, "seed": self.seed, "warm_start": 0.3,
                     "kl_warmup": 0.5, "from": "Strategies page"}
            self.path = save_seq_run(saved_root() / self.name, model, base, task=task, train=train, history=history,
                                     metrics=self.metrics, base_source="shipped")
            # (Stop during the measurement does not cancel the save: the run is complete by then)
            self.status, self.text = "done", f"saved as saved: {self.name}"
        except LabError as e:
            self.status, self.error = "error", str(e)
        except Exception as e:  # noqa: BLE001 - a thread must report, not die silently
            self.status, self.error = "error", f"{type(e).__name__}: {e}"


class _Stopped(Exception):
    pass


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


