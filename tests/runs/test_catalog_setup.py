"""The one run catalog (``runs.catalog``) and the one set-up pipeline (``runs.setup.build_run``), checked against
the folders on disk and against building the same model by hand."""

from __future__ import annotations

import doctest
import json
import os
import shutil

import pytest
import torch

from cvae_core.errors import ConfigError
from cvae_core.registry import build_model, make_config
from cvae_core.runs import catalog, setup
from cvae_core.train import TrainConfig


def test_catalog_lists_what_the_config_files_say(repo_root):
    runs, problems = catalog.list_runs([repo_root / "checkpoints"])
    assert problems == []
    on_disk = sorted(p.name for p in (repo_root / "checkpoints").iterdir() if (p / "config.json").is_file()
                     and json.loads((p / "config.json").read_text())["model"] != "seq_cvae")
    assert [r.name for r in runs] == on_disk and all(r.shipped and r.label == r.name for r in runs)
    for r in runs:
        info = json.loads((r.path / "config.json").read_text())
        assert r.model == info["model"] and r.dataset == (info.get("dataset") or {}).get("name")
    lt = catalog.list_runs([repo_root / "checkpoints"], dataset="mnist-lt", model="ct3vae")[0]
    assert lt and all(r.model == "ct3vae" and r.rho == 100.0 and r.nu > 2 for r in lt)
    seq = catalog.list_runs([repo_root / "checkpoints" / "strategies"], kind="sequence")[0]
    assert {r.name for r in seq} >= {"discrete", "continuous"} and all(r.kind == "sequence" for r in seq)


def test_catalog_reports_a_broken_folder_and_keys_change_on_save(tmp_path, repo_root):
    ship, saved = tmp_path / "ship", tmp_path / "saved"
    shutil.copytree(repo_root / "checkpoints" / "mnist_vae", ship / "mnist_vae")
    (saved / "broken").mkdir(parents=True)
    (saved / "broken" / "config.json").write_text("{not json")
    runs, problems = catalog.list_runs([ship, saved])
    assert [r.label for r in runs] == ["mnist_vae"] and len(problems) == 1 and "broken" in problems[0]
    sig, key = catalog.signature([ship, saved]), runs[0].key
    w = ship / "mnist_vae" / "model.safetensors"
    st = w.stat()
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert catalog.run_key(ship / "mnist_vae") != key and catalog.signature([ship, saved]) != sig
    assert catalog.unique_name("a b", {"a-b", "a-b-2"}) == "a-b-3"
    assert catalog.nu_run_name(100, 7.5, 2000) == "mnistlt100_ct3vae_nu7.5_2000steps"


def test_build_run_equals_a_hand_built_model_and_refuses_conflicts(mnist):
    data = mnist.subset(256, 64)
    run = setup.build_run("cvae", data, {"latent_dim": 3}, TrainConfig(steps=1, seed=5))
    hand = build_model("cvae", make_config("cvae", latent_dim=3, image_shape=data.image_shape,
                                           num_classes=data.num_classes), seed=5)
    a, b = run.model.state_dict(), hand.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = torch.get_rng_state()
    setup.build_run("vae", data, {}, TrainConfig(seed=123))
    assert torch.equal(torch.get_rng_state(), state)  # the global stream of another job is left alone
    with pytest.raises(ConfigError, match="num_classes is set by the data set: mnist has num_classes=10"):
        setup.build_run("cvae", data, {"num_classes": 3})
    with pytest.raises(ConfigError, match="latent_dim"):
        setup.build_run("vae", "no-such-set", {"latent_dim": 0})  # options are checked before the data is read


@pytest.mark.parametrize("module", [catalog, setup])
def test_examples_run(module):
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
