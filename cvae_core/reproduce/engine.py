"""The grid runner behind ``python -m cvae_core reproduce PAPER``: a paper's grid of trials over Ray Tune.

A paper (``Paper``) is three functions: ``grid(quick, seeds)`` lists the trials' settings (JSON-able dicts, one per
trial, each with its ``seed``), ``run(settings)`` trains and measures one trial and returns its metrics (a JSON-able
dict), ``report(trials, out)`` writes the report's Markdown (and its plots into `out`) from the finished trials.

``reproduce(...)`` runs the trials of a grid that ``DIR/trials.jsonl`` does not hold yet, on a local Ray (one trial
per core, one torch thread per trial) or on an existing cluster (``address``). Each finished trial is appended, by the
driver, as one JSON line (Ray's ``trial_id``, the settings with the seed, the metrics, the seconds) and flushed to
disk at once, so a crash or Ctrl-C loses only the trials still running; a second call skips the finished ones.
``DIR/REPORT.md`` is rebuilt from ``trials.jsonl`` alone, the trials in the order of their settings, so
``--report-only`` rewrites it byte for byte. ``DIR/grid.json`` records which paper and budget the folder holds.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cvae_core.errors import ConfigError
from cvae_core.io import json_safe

# PAPER -> its module in this package (each defines PAPER, a ``Paper``)
PAPERS = {"beta-sigma": "beta_sigma", "t3": "t3", "flow": "flow", "certificate": "certificate",
          "sequence": "sequence"}
TRIALS, REPORT, GRID = "trials.jsonl", "REPORT.md", "grid.json"


@dataclass(frozen=True)
class Paper:
    name: str  # the PAPER of the command line
    title: str  # one line: the paper(s) and what the grid asks
    grid: Callable[[bool, tuple[int, ...]], list[dict]]  # (quick, seeds) -> the settings of every trial
    run: Callable[[dict], dict]  # settings -> metrics, in a worker with one torch thread
    report: Callable[[list[dict], Path], str]  # the finished trials (settings order), the folder -> REPORT.md
    seeds: tuple[int, ...] = (0, 1, 2)  # the full grid's default seeds
    quick_seeds: tuple[int, ...] = (0,)
    label: Callable[[dict], str] = field(default=lambda s: " ".join(f"{k}={v}" for k, v in sorted(s.items())))


def paper(name: str) -> Paper:
    """The paper registered as `name` (ConfigError naming the known ones otherwise)."""
    if name not in PAPERS:
        raise ConfigError(f"unknown paper {name!r}; known: {', '.join(PAPERS)}")
    return importlib.import_module(f"cvae_core.reproduce.{PAPERS[name]}").PAPER


def key(settings: dict) -> str:
    """A trial's identity: its settings as canonical JSON (a finished trial with the same key is not run again)."""
    return json.dumps(json_safe(settings), sort_keys=True, separators=(",", ":"))


def load_trials(path: Path, warn: Callable[[str], None] | None = None) -> list[dict]:
    """The finished trials of ``trials.jsonl`` in file order; a line that does not parse (a write cut off by a
    crash) is skipped with a warning, and a trial that appears twice counts once (its first line)."""
    if not path.exists():
        return []
    out, seen = [], set()
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            k = key(rec["settings"])
            rec["metrics"]
        except (json.JSONDecodeError, KeyError, TypeError):
            if warn:
                warn(f"{path}: line {i} is not a finished trial; skipped")
            continue
        if k not in seen:
            seen.add(k)
            out.append(rec)
    return out


def append_trial(path: Path, record: dict) -> None:
    """One line, written and synced at once (the driver is the only writer)."""
    line = json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n"
    with path.open("a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _check_folder(out: Path, name: str, quick: bool) -> None:
    """The folder holds one paper at one budget: a second call with another PAPER or budget is refused."""
    want = {"paper": name, "quick": quick}
    path = out / GRID
    if path.exists():
        have = json.loads(path.read_text())
        if have != want:
            budget = "quick" if have.get("quick") else "full"
            raise ConfigError(f"{out} holds the {budget} {have.get('paper')} grid; give another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(want, sort_keys=True) + "\n")


def write_report(p: Paper, out: Path, warn: Callable[[str], None] | None = None) -> Path:
    """``out/REPORT.md`` (and its plots) from ``out/trials.jsonl`` alone: the trials sorted by their settings, so the
    bytes depend on the trials only, not on the order they finished in. Written atomically."""
    trials = sorted(load_trials(out / TRIALS, warn), key=lambda r: key(r["settings"]))
    text = p.report(trials, out)
    dest = out / REPORT
    tmp = dest.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, dest)
    return dest


def _trainable(config: dict) -> None:
    """One trial in a Ray worker: one torch thread, the paper's ``run`` (a module-level function, which Ray sends by
    reference), the metrics reported as one JSON string."""
    from ray import tune

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    metrics = config["run"](dict(config["settings"]))
    tune.report({"result": json.dumps(json_safe(metrics), allow_nan=False), "seconds": time.perf_counter() - t0,
                 "threads": torch.get_num_threads()})


def _callback(p: Paper, path: Path, total: int, say: Callable[[str], None]):
    """A Ray Tune callback in the driver: appends each finished trial to trials.jsonl and says one line."""
    from ray.tune import Callback

    class Record(Callback):
        def __init__(self):
            self.done, self.failed = 0, []

        def on_trial_complete(self, iteration, trials, trial, **info):
            res = trial.last_result or {}
            if "result" not in res:
                return
            settings = trial.config["settings"]
            append_trial(path, {"paper": p.name, "trial_id": trial.trial_id, "settings": settings,
                                "metrics": json.loads(res["result"]), "seconds": round(res["seconds"], 2),
                                "torch_threads": res["threads"]})
            self.done += 1
            say(f"[{self.done}/{total}] {p.label(settings)}: {res['seconds']:.0f} s")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.failed.append(p.label(trial.config["settings"]))
            say(f"FAILED {p.label(trial.config['settings'])} (Ray trial {trial.trial_id}; "
                f"its error is in {trial.local_path or 'the Ray logs'})")

    return Record()


def _runtime_env(address: str | None) -> dict:
    pkg = Path(__file__).resolve().parents[1]
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "RAY_CHDIR_TO_TRIAL_DIR": "0"}
    if os.environ.get("CVAE_DATA_DIR"):
        env["CVAE_DATA_DIR"] = os.environ["CVAE_DATA_DIR"]
    if address:  # another machine: ship this package's code with the job (it brings its own data and packages)
        return {"py_modules": [str(pkg)], "env_vars": env}
    env["PYTHONPATH"] = os.pathsep.join([str(pkg.parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {"env_vars": env}


def run_trials(p: Paper, pending: list[dict], out: Path, *, address: str | None, cpus: int | None,
               say: Callable[[str], None]) -> list[str]:
    """The pending trials on Ray Tune, one CPU each; the labels of the trials that failed."""
    import ray
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables or links to its temp folder
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                  runtime_env=_runtime_env(address))
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=cpus or os.cpu_count() or 1, **kw)
    say(f"Ray: {int(ray.cluster_resources().get('CPU', 0))} CPUs, one trial per CPU")
    cb = _callback(p, out / TRIALS, len(pending), say)
    with tempfile.TemporaryDirectory(prefix="cvae-reproduce-") as store:  # our record is trials.jsonl, not Ray's
        tuner = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": 1}),
            param_space={"run": p.run, "settings": tune.grid_search(pending)},
            tune_config=tune.TuneConfig(reuse_actors=False),
            run_config=tune.RunConfig(name=f"reproduce-{p.name}", storage_path=store, callbacks=[cb], verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)))
        tuner.fit()
    return list(cb.failed)


def reproduce(name: str | Paper, out: Path, *, quick: bool = False, seeds: tuple[int, ...] | None = None,
              address: str | None = None, report_only: bool = False, cpus: int | None = None,
              say: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> int:
    """The command: runs what is left of the grid, then rebuilds the report. Returns the exit code (1 when a trial
    failed: the report then covers the finished ones). `name` is a registered PAPER or a ``Paper`` itself."""
    p = name if isinstance(name, Paper) else paper(name)
    name = p.name
    out = Path(out)
    if report_only:
        if not (out / TRIALS).exists():
            raise ConfigError(f"{out / TRIALS} does not exist: nothing to report (run without --report-only)")
        _check_folder(out, name, json.loads((out / GRID).read_text()).get("quick", quick)
                      if (out / GRID).exists() else quick)
        say(f"wrote {write_report(p, out, say)}")
        return 0
    _check_folder(out, name, quick)
    seeds = tuple(seeds) if seeds else (p.quick_seeds if quick else p.seeds)
    grid = p.grid(quick, seeds)
    done = {key(r["settings"]) for r in load_trials(out / TRIALS, say)}
    pending = [s for s in grid if key(s) not in done]
    say(f"{p.name}: {len(grid)} trials in the {'quick' if quick else 'full'} grid, {len(grid) - len(pending)} "
        f"finished in {out / TRIALS}, {len(pending)} to run")
    failed = run_trials(p, pending, out, address=address, cpus=cpus, say=say) if pending else []
    say(f"wrote {write_report(p, out, say)}")
    if failed:
        say(f"{len(failed)} trial(s) failed: {'; '.join(failed)}. Run the command again to retry them.")
        return 1
    done = {key(r["settings"]) for r in load_trials(out / TRIALS)}
    left = sum(key(s) not in done for s in grid)
    if left:  # stopped (Ctrl-C): what finished is kept
        say(f"stopped with {left} of {len(grid)} trials still to run: the same command continues")
        return 130
    return 0
