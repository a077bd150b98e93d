"""The command line of the sequence CVAE (called from ``__main__``): ``train-base``, ``train --model seq_cvae`` and
``evaluate`` of a sequence run folder."""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from cvae_core.errors import ConfigError
from cvae_core.registry import make_config
from cvae_core.runs.folder import check_run_destination
from cvae_core.sequence.lm import BaseLMConfig
from cvae_core.sequence.metrics import sequence_metrics
from cvae_core.sequence.model import SeqCVAEConfig
from cvae_core.sequence.runs import (
    RESTARTS,
    check_base_training,
    load_base,
    load_seq_run,
    save_base,
    splits,
    task_from,
    train_and_save,
    train_base,
)
from cvae_core.train import resolve_device

SEQ_DEFAULTS = {"steps": 1200, "batch_size": 32, "lr": 3e-3}
METRIC_KEYS = ("nmi", "controllability", "router_tv", "recon_ratio", "inter_latent_jsd", "token_accuracy",
               "valid_answers", "recon_nats", "base_nats")


def add_task_args(s) -> None:
    s.add_argument("--strategies", default=None, metavar="A,B,...",
                   help="the hidden strategies (default sort_asc,sort_desc,reverse,rotate; also swap_pairs, increment)")
    s.add_argument("--mixture", choices=["first-digit", "uniform"], default=None,
                   help="how the strategy mixture depends on x (default first-digit)")


def _task(a, info: dict | None = None):
    d = dict((info or {}).get("task") or {})
    if getattr(a, "strategies", None):
        d["strategies"] = tuple(s.strip() for s in a.strategies.split(",") if s.strip())
    if getattr(a, "mixture", None):
        d["mixture"] = a.mixture
    return task_from(d)


def _bar(total: int, unit: str):
    """A progress callback whose bar appears at its first call, so that an argument refused before any work leaves
    the one error line alone on stderr."""
    bars = []

    def progress(frac: float, text: str) -> None:
        if not bars:
            bars.append(tqdm(total=total, file=sys.stderr, unit=unit, dynamic_ncols=True))
        bar = bars[0]
        bar.update(round(frac * total) - bar.n)
        bar.set_postfix_str(text)
        if frac >= 1:
            bar.close()

    return progress


def cmd_train_base(a) -> int:
    check_base_training(a.steps, a.batch_size, a.lr)
    task = _task(a)
    check_run_destination(a.out)  # before training, so a bad --out never costs a run
    cfg = BaseLMConfig(n_embd=a.width, n_layer=a.layers, n_head=a.heads, n_positions=2 * task.max_len + 12)
    print(f"training a base model ({a.layers} layers, width {a.width}) on {task.K} strategies for {a.steps} steps",
          file=sys.stderr)
    lm, info = train_base(task, cfg, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                          device=str(resolve_device(a.device)), progress=_bar(a.steps, "step"))
    info["command"] = "python -m cvae_core " + " ".join(sys.argv[1:])
    save_base(lm, info, a.out, weights_dtype=a.weights_dtype)
    print(f"test loss {info['test_nats']:.3f} nats per answer (floor {info['floor_nats']:.3f}); saved to {a.out}")
    return 0


def cmd_train_seq(a) -> dict:
    """Train, measure and save a sequence CVAE (``train_and_save`` checks --out before training); returns its metrics
    (``__main__`` prints them)."""
    if a.dataset not in (None, "strategies"):
        raise ConfigError(f"seq_cvae trains on the strategies task, not {a.dataset!r} (leave --dataset out)")
    if getattr(a, "rho", None) is not None:
        raise ConfigError("--rho shapes the long-tailed image sets; seq_cvae trains on the strategies task")
    if a.epochs is not None:
        raise ConfigError("seq_cvae counts --steps, not --epochs")
    bs = a.batch_size if a.batch_size is not None else SEQ_DEFAULTS["batch_size"]
    lr = a.lr if a.lr is not None else SEQ_DEFAULTS["lr"]
    if not lr > 0:
        raise ConfigError(f"--lr must be > 0 (got {lr})")
    if not 0 <= a.warm_start < 1:
        raise ConfigError(f"--warm-start is a share of the steps in [0, 1) (got {a.warm_start})")
    overrides = dict(a.option)
    if a.beta is not None:
        overrides["beta"] = a.beta
    if a.latent is not None:
        overrides["latent"] = a.latent
    if a.latent_dim is not None:
        overrides["latent_dim"] = a.latent_dim
    config: SeqCVAEConfig = make_config("seq_cvae", **overrides)
    base, base_info = load_base(a.base_model)
    task = _task(a, base_info)
    steps = a.steps or SEQ_DEFAULTS["steps"]
    restarts = RESTARTS if getattr(a, "restarts", None) is None else a.restarts
    more = f" ({restarts} warm starts, the best on held-out pairs goes on)" if restarts > 1 and a.warm_start else ""
    print(f"training seq_cvae ({config.latent} latent) on {task.K} strategies for {steps} steps{more}",
          file=sys.stderr)
    _, metrics = train_and_save(a.out, task, config, base, steps=steps, batch_size=bs, lr=lr, seed=a.seed,
                                warm_start=a.warm_start, restarts=restarts,
                                device=str(resolve_device(a.device)), n_test=a.n_test,
                                base_source="shipped" if a.base_model is None else Path(a.base_model).name,
                                weights_dtype=a.weights_dtype, progress=_bar(steps, "step"))
    print(f"saved to {a.out}", file=sys.stderr)
    return metrics


def cmd_evaluate_seq(a) -> dict:
    """The metrics of a sequence run folder (``__main__`` prints them)."""
    model, base, info = load_seq_run(a.run, device=resolve_device(a.device))
    task = info["task_obj"]
    _, test = splits(task, info.get("data"))
    metrics = sequence_metrics(model, base, task, test, n=a.n_test or 500)
    metrics.update(model="seq_cvae", latent=model.config.latent)
    return metrics
