"""Run folders: round trip, atomic replacement, and one clear CheckpointError for each way a folder can be broken.
Loading must never unpickle."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
import torch
from _helpers import fit_small
from safetensors.torch import save_file

from cvae_core.runs.catalog import list_runs
from cvae_core.runs.folder import WEIGHTS, load_run, model_name_of, read_run_info, save_run
from cvae_core.errors import CheckpointError
from cvae_core.integrity import record_hashes
from cvae_core.registry import build_model
from cvae_core.train import TrainConfig


def _model(name="sigma_vae", seed=0, **over):
    kw = dict(arch="mlp", hidden=16, latent_dim=3)
    kw.update(over)
    return build_model(name, seed=seed, **kw, **fit_small(name)).eval()


def _x(n=4, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def run(tmp_path):
    return save_run(tmp_path / "runs" / "r1", _model(), train_config=TrainConfig(steps=5), dataset={"name": "mnist"},
                    metrics={"neg_elbo": 123.5}, history={"records": [{"step": 5, "loss": 1.0}]})


def _edit_config(run_dir, fn):
    p = run_dir / "config.json"
    cfg = json.loads(p.read_text())
    fn(cfg)
    p.write_text(json.dumps(cfg))


# ---------------------------------------------------------------- round trip and atomicity
@pytest.mark.parametrize("name,over", [("vae", {"arch": "conv", "sigma": 0.2}), ("sigma_vae", {}),
                                       ("bs_vae", {"beta": 10.0}), ("vae", {"likelihood": "bernoulli"})])
def test_round_trip_identical_outputs_and_config(tmp_path, name, over):
    model = _model(name, seed=3, **over)
    x = _x()
    tcfg = TrainConfig(steps=7, lr=2e-3)
    save_run(tmp_path / "run", model, train_config=tcfg, dataset={"name": "mnist", "rho": 1.0},
             metrics={"neg_elbo": 1.5, "au": 2}, history={"status": "finished"})
    loaded, info = load_run(tmp_path / "run")
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.config == model.config
    assert info["model"] == name and info["format_version"] == 1
    assert info["config"] == json.loads(json.dumps(dataclasses.asdict(model.config)))
    assert info["train"] == json.loads(json.dumps(dataclasses.asdict(tcfg)))
    assert info["dataset"] == {"name": "mnist", "rho": 1.0}
    assert info["metrics"] == {"neg_elbo": 1.5, "au": 2} and info["history"] == {"status": "finished"}
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
        assert torch.equal(loaded.encode(x).stddev, model.encode(x).stddev)
        torch.manual_seed(0)
        a = loaded.sample(5)
        torch.manual_seed(0)
        b = model.sample(5)
    assert torch.equal(a, b)


def test_read_run_info_without_weights(run):
    (run / WEIGHTS).unlink()
    info = read_run_info(run)  # reads the JSON only
    assert info["model"] == "sigma_vae" and info["metrics"] == {"neg_elbo": 123.5}
    assert info["history"]["records"][0]["step"] == 5


def test_save_is_atomic_and_replaces_an_existing_run(tmp_path):
    parent = tmp_path / "runs"
    first, second = _model(seed=1), _model(seed=2)
    save_run(parent / "r", first)
    (parent / "r" / "stale.txt").write_text("from the old run")
    save_run(parent / "r", second, metrics={"v": 2})
    assert sorted(p.name for p in parent.iterdir()) == ["r"]  # no temporary or old folders left
    assert sorted(p.name for p in (parent / "r").iterdir()) == ["config.json", "metrics.json", WEIGHTS]
    loaded, info = load_run(parent / "r")
    assert info["metrics"] == {"v": 2}
    for k, v in second.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    assert not torch.equal(loaded.state_dict()["enc_head.weight"], first.state_dict()["enc_head.weight"])


def test_failed_save_keeps_the_old_run_and_leaves_no_temp(tmp_path):
    parent = tmp_path / "runs"
    old = _model(seed=1)
    save_run(parent / "r", old, metrics={"v": 1})

    class NotJSON:
        pass

    with pytest.raises(TypeError):  # json's default=float cannot convert it: fails mid-save
        save_run(parent / "r", _model(seed=2), metrics={"bad": NotJSON()})
    assert sorted(p.name for p in parent.iterdir()) == ["r"]
    loaded, info = load_run(parent / "r")
    assert info["metrics"] == {"v": 1}
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in old.state_dict().items())


def test_list_runs(tmp_path):
    for n in ("b", "a"):
        save_run(tmp_path / n, _model())
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / ".a.tmp-123").mkdir()
    (tmp_path / ".a.tmp-123" / "config.json").write_text("{}")
    assert [r.name for r in list_runs([tmp_path])[0]] == ["a", "b"]
    assert list_runs([tmp_path / "absent"]) == ([], [])


def test_unregistered_model_cannot_be_saved(tmp_path):
    base = _model()

    class Custom(type(base)):
        pass

    with pytest.raises(CheckpointError, match="Custom is not in the registry"):
        save_run(tmp_path / "x", Custom(base.config))
    assert list(tmp_path.iterdir()) == []
    assert model_name_of(base) == "sigma_vae"


# ---------------------------------------------------------------- broken folders: one clear error each
def test_missing_folder_and_files(tmp_path, run):
    with pytest.raises(CheckpointError, match="is not a run folder"):
        load_run(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CheckpointError, match="is not a run folder"):
        load_run(f)
    (run / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=f"has no {WEIGHTS}"):
        load_run(run)
    (run / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        load_run(run)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"definitely not safetensors" * 10],
                         ids=["empty", "zeros", "text"])
def test_corrupt_weights_file(run, content):
    (run / WEIGHTS).write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_run(run)


def test_truncated_weights_file(run):
    data = (run / WEIGHTS).read_bytes()
    (run / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_run(run)


def test_invalid_json(run):
    (run / "config.json").write_text('{"model": "vae", "config": {')
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_run(run)


@pytest.mark.parametrize("cfg", [{"config": {}}, {"model": "vae"}, ["vae", {}]], ids=["no-model", "no-config", "list"])
def test_config_json_lacks_keys(run, cfg):
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="lacks the 'model' and 'config' keys"):
        load_run(run)


@pytest.mark.parametrize("edit", [lambda c: c.update(model=["vae"]), lambda c: c.update(config=[1, 2]),
                                  lambda c: c.update(config="latent_dim=3")], ids=["model-list", "config-list",
                                                                                   "config-str"])
def test_config_json_wrong_types(run, edit):
    _edit_config(run, edit)
    with pytest.raises(CheckpointError, match="config.json"):
        load_run(run)


def test_unknown_model(run):
    _edit_config(run, lambda c: c.update(model="flow_vae_2099"))
    with pytest.raises(CheckpointError, match="unknown model 'flow_vae_2099'"):
        load_run(run)


def test_unknown_config_field(run):
    _edit_config(run, lambda c: c["config"].update(temperature=0.7))
    with pytest.raises(CheckpointError, match="config.json: .*has no option temperature"):
        load_run(run)


def test_bad_config_value(run):
    _edit_config(run, lambda c: c["config"].update(latent_dim=0))
    with pytest.raises(CheckpointError, match="config.json: .*latent_dim must be >= 1"):
        load_run(run)


def test_config_shapes_do_not_match_weights(run):
    _edit_config(run, lambda c: c["config"].update(latent_dim=5))
    with pytest.raises(CheckpointError, match=r"config.json does not match the weights: \d+ tensors differ in shape "
                                              r"\(e.g. [\w.]+: weights \(\d+, \d+\) vs config"):
        load_run(run)


def test_config_architecture_does_not_match_weights(run):
    _edit_config(run, lambda c: c["config"].update(arch="conv"))
    with pytest.raises(CheckpointError, match="does not match the weights: .*tensors missing.*unexpected tensors"):
        load_run(run)


def test_weights_with_a_missing_tensor(run):
    model = _model()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "enc_head.bias"}
    save_file(state, str(run / WEIGHTS))
    record_hashes(run, "config.json")  # a folder saved so, whose record matches (else the hash check answers first)
    with pytest.raises(CheckpointError, match=r"1 tensors missing \(e.g. enc_head.bias\)"):
        load_run(run)


# ---------------------------------------------------------------- never unpickle
class _Trap:
    """Unpickling this creates a marker file (a harmless stand-in for arbitrary code)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_torch_pickle_renamed_to_safetensors_is_rejected_without_executing(run, tmp_path):
    marker = tmp_path / "executed"
    torch.save({"enc_head.weight": torch.zeros(6, 16), "trap": _Trap(marker)}, run / WEIGHTS)
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_run(run)
    assert not marker.exists()
    # the same bytes would execute under an unrestricted unpickler, so the trap is real
    # (copied to .pt: torch.load hands a *.safetensors path to safetensors itself)
    pt = tmp_path / "same_bytes.pt"
    pt.write_bytes((run / WEIGHTS).read_bytes())
    torch.load(pt, weights_only=False)
    assert marker.exists()


def test_plain_pickle_is_rejected(run, tmp_path):
    marker = tmp_path / "executed2"
    (run / WEIGHTS).write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_run(run)
    assert not marker.exists()


def test_save_run_never_replaces_a_non_run_folder(tmp_path):
    """save_run replaces a run folder or an empty folder, and refuses anything else without touching it."""
    from cvae_core.runs.folder import check_run_destination

    model = build_model("vae", seed=0)
    users = tmp_path / "mine"
    users.mkdir()
    (users / "data.csv").write_text("1,2,3")
    with pytest.raises(CheckpointError, match="is not a run folder; refusing"):
        save_run(users, model)
    assert (users / "data.csv").read_text() == "1,2,3" and sorted(p.name for p in users.iterdir()) == ["data.csv"]
    afile = tmp_path / "f.txt"
    afile.write_text("x")
    with pytest.raises(CheckpointError, match="exists and is a file"):
        save_run(afile, model)
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        save_run(afile / "sub" / "run", model)
    assert afile.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    save_run(empty, model)  # an empty folder becomes the run
    assert (empty / WEIGHTS).is_file()
    assert check_run_destination(empty) == empty  # and a run folder may be replaced
    save_run(empty, build_model("vae", seed=1))
    assert not torch.equal(load_run(empty)[0].state_dict()["enc_head.weight"], model.state_dict()["enc_head.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "f.txt", "mine"]  # no temp folders left


def test_metrics_with_nan_are_written_as_strict_json(tmp_path):
    save_run(tmp_path / "r", build_model("vae", seed=0), metrics={"neg_elbo": float("nan"), "au": 3})
    text = (tmp_path / "r" / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text) == {"neg_elbo": None, "au": 3}
