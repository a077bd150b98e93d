"""Sequence CVAE run folders and their command line: a saved run reloads to the same numbers (its frozen backbone
copies are not stored twice), broken folders give one line, and ``train-base`` / ``train --model seq_cvae`` /
``evaluate`` run end to end, the evaluation of the saved run equal to the metrics computed at the end of training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_cli import _run_all

from cvae_core.data.strategies import StrategyTask, Vocab, make_split
from cvae_core.errors import CheckpointError
from cvae_core.sequence.lm import BaseLMConfig, build_base_lm
from cvae_core.sequence.metrics import controlled_answers, router_probs
from cvae_core.sequence.model import SeqCVAE, SeqCVAEConfig
from cvae_core.sequence.runs import _frozen_keys, load_seq_run, save_seq_run
from cvae_core.sequence.train import fit_seq

TINY = BaseLMConfig(n_embd=16, n_layer=1, n_head=2, n_positions=40)
XS, YS = ["3142", "907", "55120"], ["1234", "709", "02155"]


def _model(latent: str, **kw):
    base = build_base_lm(Vocab(), TINY, seed=0)
    torch.manual_seed(0)
    model = SeqCVAE(base, Vocab(), SeqCVAEConfig(latent=latent, **kw))
    for head in (model.router_head, model.inference_head):
        torch.nn.init.normal_(head.weight, std=0.5)
    return base, model.eval()


@pytest.mark.parametrize("latent", ["discrete", "continuous"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_a_saved_run_reloads_to_the_same_numbers(tmp_path, latent, dtype):
    base, model = _model(latent, decoder="full")
    if dtype == "float16":  # compare with the model rounded as the file stores it
        base.config.dtype = "float16"  # as in a base saved with --weights-dtype float16: still computes in float32
        with torch.no_grad():
            for p in [*model.parameters(), *base.parameters()]:
                p.copy_(p.half().float())
    save_seq_run(tmp_path / "run", model, base, task=StrategyTask(), train={"steps": 0}, history=[],
                 metrics={"nmi": 0.5}, base_source="test", weights_dtype=dtype)
    loaded, lbase, info = load_seq_run(tmp_path / "run")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        a = model.loss(XS, YS, generator=g)
        b = loaded.loss(XS, YS, generator=torch.Generator().manual_seed(0))
    for k in ("rec", "kl", "loss"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6)
    ids = torch.tensor([Vocab().encode("12", "21")])
    torch.testing.assert_close(lbase(input_ids=ids).logits, base(input_ids=ids).logits, rtol=1e-6, atol=1e-6)
    assert info["metrics"] == {"nmi": 0.5} and info["task_obj"] == StrategyTask()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "weights.safetensors"), "pt") as f:
        stored = set(f.keys())
    frozen = _frozen_keys(model)
    assert frozen and not stored & frozen  # the LoRA parts' frozen backbone copies are the base, stored once
    assert any(k.startswith("decoder_lm.") for k in stored)  # the fully trained decoder is stored whole


def test_broken_run_folders_are_one_line(tmp_path):
    base, model = _model("discrete")
    with pytest.raises(CheckpointError, match="not a sequence CVAE run folder"):
        load_seq_run(tmp_path)
    save_seq_run(tmp_path / "run", model, base, task=StrategyTask(), train={}, history=[], metrics={},
                 base_source="test")
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["config"]["K"] = 3
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match the weights"):
        load_seq_run(tmp_path / "run")
    (tmp_path / "run" / "weights.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="missing or corrupt"):
        load_seq_run(tmp_path / "run")


def test_continuous_router_shares_are_sample_frequencies_near_the_centroids():
    _, model = _model("continuous", latent_dim=2)
    cent = torch.tensor([[-3.0, 0.0], [0.0, 0.0], [3.0, 0.0]]).numpy()
    shares = router_probs(model, XS, cent, samples=2000, seed=0)
    p = model.router(XS)
    mu, sd = p.base_dist.loc.detach(), p.base_dist.scale.detach()
    # independent: the exact probability of the Voronoi cells |z1| < 1.5 (middle) and z1 > 1.5 (right) under N(mu, sd)
    n = torch.distributions.Normal(mu[:, 0], sd[:, 0])
    right = 1 - n.cdf(torch.tensor(1.5))
    middle = n.cdf(torch.tensor(1.5)) - n.cdf(torch.tensor(-1.5))
    assert shares.sum(1) == pytest.approx(1.0)
    assert shares[:, 2] == pytest.approx(right.numpy(), abs=0.04)
    assert shares[:, 1] == pytest.approx(middle.numpy(), abs=0.04)


# ---------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seqcli")
    base = _run_all({"base": ["train-base", "--out", tmp / "base", "--steps", "40", "--width", "16", "--layers", "1",
                              "--strategies", "reverse,rotate"]})
    first = {
        "train": ["train", "--model", "seq_cvae", "--base-model", tmp / "base", "--steps", "8", "--n-test", "30",
                  "--option", "K=2", "--out", tmp / "d", "--json"],
        "train-cont": ["train", "--model", "seq_cvae", "--base-model", tmp / "base", "--latent", "continuous",
                       "--latent-dim", "2", "--steps", "8", "--n-test", "30", "--out", tmp / "c", "--json"],
        "train-restarts": ["train", "--model", "seq_cvae", "--base-model", tmp / "base", "--steps", "8", "--n-test",
                           "30", "--option", "K=2", "--restarts", "2", "--seed", "3", "--out", tmp / "r", "--json"],
    }
    out = base | _run_all(first)
    out |= _run_all({"eval": ["evaluate", tmp / "d", "--n-test", "30", "--json"],
                     "eval-cont": ["evaluate", tmp / "c", "--n-test", "30", "--json"]})
    return out, tmp


KEYS = {"nmi", "controllability", "router_tv", "recon_ratio", "inter_latent_jsd", "token_accuracy"}


def test_train_base_then_both_latents_train_save_and_evaluate(cli):
    r, tmp = cli
    assert r["base"].rc == 0, r["base"].err
    info = json.loads((tmp / "base" / "base_info.json").read_text())
    assert info["task"]["strategies"] == ["reverse", "rotate"] and "train-base" in info["command"]
    for train, ev in (("train", "eval"), ("train-cont", "eval-cont")):
        assert r[train].rc == 0 and r[ev].rc == 0, r[train].err + r[ev].err
        at_train = json.loads(r[train].out.splitlines()[-1])
        again = json.loads(r[ev].out.splitlines()[-1])
        assert KEYS <= set(at_train)
        for k in KEYS:  # the reloaded run gives the numbers measured when it was trained
            assert again[k] == pytest.approx(at_train[k], rel=1e-5, abs=1e-6), k
        model, _, info = load_seq_run(tmp / ("d" if train == "train" else "c"))
        assert info["task_obj"].strategies == ("reverse", "rotate")  # the base model's task
        assert len(info["history"]) >= 1 and info["history"][-1]["step"] == 8


def test_restarts_from_the_command_line_record_their_scores(cli):
    """--restarts 2: two warm starts, the one of lower held-out -ELBO went on, both scores in config.json; without
    the flag (the default, one warm start) no restart is recorded."""
    r, tmp = cli
    assert r["train-restarts"].rc == 0, r["train-restarts"].err
    assert "2 warm starts" in r["train-restarts"].err
    train = json.loads((tmp / "r" / "config.json").read_text())["train"]
    assert train["restarts"] == 2 and len(train["restart_scores"]) == 2
    assert train["restart_picked"] == min(range(2), key=lambda i: train["restart_scores"][i])
    assert "restarts" not in json.loads((tmp / "d" / "config.json").read_text())["train"]


@pytest.mark.parametrize("args,text", [
    (["--dataset", "mnist"], "seq_cvae trains on the strategies task, not 'mnist'"),
    (["--base-model", "NOWHERE"], "is not a transformers model folder"),
    (["--option", "router=half"], "router must be one of frozen, lora, full"),
    (["--lr", "0"], "--lr must be > 0 (got 0.0)"),
    (["--warm-start", "1.5"], "--warm-start is a share of the steps in [0, 1) (got 1.5)"),
    (["--model", "vae", "--steps", "1"], "--dataset is required for vae"),
    (["--model", "vae", "--dataset", "mnist", "--lr", "0", "--steps", "1"],
     "learning rate must be a finite number > 0 (got 0.0)"),
])
def test_bad_sequence_arguments_are_one_line(tmp_path, capsys, args, text):
    """In-process (these fail before any loading): exit status 2 and one line on stderr."""
    from cvae_core.cli import main

    args = [str(tmp_path / "nowhere") if a == "NOWHERE" else a for a in args]
    model = [] if "--model" in args else ["--model", "seq_cvae"]
    rc = main(["train", *model, *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and text in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


@pytest.mark.gpu
@pytest.mark.parametrize("latent", ["discrete", "continuous"])
def test_the_sequence_cvae_on_cuda_computes_what_it_does_on_the_cpu(latent):
    """The loss terms, a training step and greedy decoding on CUDA against the same model on the CPU."""
    _, model = _model(latent, decoder="lora")
    base_gpu = build_base_lm(Vocab(), TINY, seed=0).to("cuda")  # built from a base already on the device, as the CLI
    torch.manual_seed(0)
    gpu = SeqCVAE(base_gpu, Vocab(), model.config)
    gpu.load_state_dict(model.state_dict())
    gpu = gpu.to("cuda").eval()
    with torch.no_grad():
        a = model.warm_start_loss(XS, YS)
        b = gpu.warm_start_loss(XS, YS)
    for k in ("rec", "kl", "loss"):
        torch.testing.assert_close(b[k].cpu(), a[k], rtol=1e-4, atol=1e-4)
    z = model.z_embed.weight[0] if latent == "discrete" else model.z_proj(torch.zeros(model.config.latent_dim))
    zg = gpu.z_embed.weight[0] if latent == "discrete" else gpu.z_proj(torch.zeros(model.config.latent_dim,
                                                                                    device="cuda"))
    assert controlled_answers(gpu, XS, zg.detach()) == controlled_answers(model, XS, z.detach())
    train, _ = make_split(StrategyTask(strategies=("reverse", "rotate"), min_len=3, max_len=4), 64, 8, seed=0)
    hist = fit_seq(gpu, train, steps=4, batch_size=8, log_every=2, warm_start=0.5)
    assert all(math.isfinite(r["loss"]) for r in hist.records) and gpu.router_head.weight.device.type == "cuda"


def test_the_image_pages_never_list_sequence_runs(tmp_path):
    from cvae_core.runs.catalog import list_runs

    base, model = _model("discrete")
    save_seq_run(tmp_path / "seq", model, base, task=StrategyTask(), train={}, history=[], metrics={},
                 base_source="test")
    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "config.json").write_text(json.dumps({"model": "vae", "config": {}}))
    assert [r.path for r in list_runs([tmp_path])[0]] == [tmp_path / "image"]
