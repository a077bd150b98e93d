"""Checkpoints cannot run code: every loader of weights (image runs, sequence runs, the sequence base model, the
classifier, a certificate teacher) reads safetensors only. A real malicious pickle (its unpickling creates a file)
put where weights would be is refused with one line and never executed; a truncated file is one line naming it; a
folder's SHA-256 record (``cvae_core.integrity``) is written with every new folder, holds for every shipped folder,
and a flipped byte is caught on loading."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from cvae_core import witness as W
from cvae_core.data.strategies import StrategyTask, Vocab
from cvae_core.errors import CheckpointError
from cvae_core.eval import classifier as C
from cvae_core.integrity import KEY, record_of, safetensors_problem, sha256_file, verify_folder
from cvae_core.registry import build_model
from cvae_core.runs.folder import load_run, save_run
from cvae_core.sequence import lm as LM
from cvae_core.sequence.model import SeqCVAE, SeqCVAEConfig
from cvae_core.sequence.runs import load_base, load_seq_run, save_base, save_seq_run

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]
CKPT = REPO / "checkpoints"
# kind -> (shipped folder, weights file name, the record file, pickle names a user might leave instead)
KINDS = {
    "image": ("mnist_vae", "model.safetensors", "config.json", ["model.pt", "pytorch_model.bin"]),
    "sequence": ("strategies/discrete", "weights.safetensors", "config.json", ["weights.pt"]),
    "base": ("strategies/base", "model.safetensors", "base_info.json", ["pytorch_model.bin"]),
    "classifier": ("classifier-mnist", "classifier.safetensors", "classifier.json", ["classifier.pt"]),
    "teacher": ("teachers/mnist", "teacher.safetensors", "teacher.json", []),
}


def _load(kind: str, folder: Path):
    """The project's loader of that kind of folder."""
    if kind == "image":
        return load_run(folder)
    if kind == "sequence":
        return load_seq_run(folder)
    if kind == "base":
        return load_base(folder)
    if kind == "classifier":
        return C.load_classifier(folder)
    return W.read_teacher(folder / KINDS[kind][1])


def _copy(kind: str, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the shipped folder of that kind, its weights file)."""
    src, weights, _, _ = KINDS[kind]
    dst = shutil.copytree(CKPT / src, tmp_path / kind)
    return dst, dst / weights


def _refused(kind: str, folder: Path) -> str:
    with pytest.raises(CheckpointError) as e:
        _load(kind, folder)
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---------------------------------------------------------------- a real malicious pickle, never executed
class _Trap:
    """Unpickling this calls open(marker, "w"): it creates a file (a harmless stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, how: str, marker: Path) -> None:
    """Write a pickle whose loading would create `marker`: a plain pickle, torch.save's zip archive, or torch.save's
    legacy (pre-zip) format."""
    payload = {"weight": torch.zeros(2, 2), "trap": _Trap(marker)}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=4))
    elif how == "torch.save":
        torch.save(payload, path)
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=False)


@pytest.mark.parametrize("how", ["pickle", "torch.save", "legacy torch.save"])
def test_the_trap_is_real(tmp_path, how):
    """The planted bytes do run code under an unrestricted unpickler: the marker appears."""
    marker = tmp_path / "executed"
    _plant(tmp_path / "trap.pt", how, marker)
    if how == "pickle":
        pickle.loads((tmp_path / "trap.pt").read_bytes())
    else:
        torch.load(tmp_path / "trap.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save", "legacy torch.save"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_pickle_in_place_of_the_weights_is_refused_unread(tmp_path, kind, how):
    folder, weights = _copy(kind, tmp_path)
    marker = tmp_path / "executed"
    _plant(weights, how, marker)
    msg = _refused(kind, folder)
    assert str(weights) in msg and "refused unread, since unpickling can run code" in msg, msg
    assert ("zip archive of pickles" if how == "torch.save" else "a pickle, not safetensors") in msg
    assert not marker.exists()


@pytest.mark.parametrize("kind,name", [(k, n) for k, v in KINDS.items() for n in v[3]])
def test_a_pickle_instead_of_the_weights_is_named_and_never_read(tmp_path, kind, name):
    """model.pt / pytorch_model.bin / ... beside the config, with no safetensors file: one line that names it."""
    folder, weights = _copy(kind, tmp_path)
    weights.unlink()
    marker = tmp_path / "executed"
    _plant(folder / name, "torch.save", marker)
    msg = _refused(kind, folder)
    assert f"only {name} there: pickle formats are refused unread" in msg, msg
    assert not marker.exists()


def test_a_pytorch_model_bin_beside_the_base_weights_is_never_unpickled(tmp_path, monkeypatch):
    """transformers is told to read safetensors only: a planted pytorch_model.bin changes nothing."""
    import transformers

    folder, _ = _copy("base", tmp_path)
    marker = tmp_path / "executed"
    _plant(folder / "pytorch_model.bin", "legacy torch.save", marker)
    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, *a, **k):
        seen.append(k)
        return real(cls, *a, **k)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    lm, info = load_base(folder)
    assert seen and all(k.get("use_safetensors") is True and k.get("local_files_only") is True for k in seen)
    shipped, _ = load_base(CKPT / "strategies" / "base")
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), shipped.state_dict().values(), strict=True))
    assert not marker.exists()


# ---------------------------------------------------------------- truncated files
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_truncated_weights_file_is_one_line_naming_it(tmp_path, kind):
    folder, weights = _copy(kind, tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    msg = _refused(kind, folder)
    assert str(weights) in msg and f"truncated: {len(data) // 2} of the {len(data)} bytes its header describes" in msg


def test_what_the_header_check_says():
    assert safetensors_problem(CKPT / "mnist_vae" / "model.safetensors") is None


@pytest.mark.parametrize("content,said", [(b"", "0 bytes, too short"), (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a", "inside"),
                                          (b"hello world, not weights", "no safetensors header"),
                                          (b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}", "not valid JSON")])
def test_what_the_header_check_says_of_broken_files(tmp_path, content, said):
    (tmp_path / "w.safetensors").write_bytes(content)
    assert said in safetensors_problem(tmp_path / "w.safetensors")


def test_bytes_after_the_tensors_are_named(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes((CKPT / "teachers" / "mnist" / "teacher.safetensors").read_bytes() + b"extra")
    assert safetensors_problem(path).startswith("5 bytes after the ")


# ---------------------------------------------------------------- the hash record
def _shipped_folders() -> list[Path]:
    return sorted(p for p in [CKPT, *CKPT.rglob("*")] if p.is_dir()
                  and any(f.is_file() and not f.name.startswith(".") for f in p.iterdir()))


def test_every_shipped_folder_has_a_record_that_matches():
    folders = _shipped_folders()
    kinds = {src for src, *_ in KINDS.values()}
    assert kinds <= {str(p.relative_to(CKPT)) for p in folders} and len(folders) >= 26
    for folder in folders:
        record = record_of(folder)
        assert record is not None and record.is_file(), f"{folder} has no hash record (scripts/record_hashes.py)"
        hashes = json.loads(record.read_text())[KEY]
        assert any(name.endswith(".safetensors") for name in hashes), f"{record} records no weights"
        assert all(len(h) == 64 and set(h) <= set("0123456789abcdef") for h in hashes.values())
        assert verify_folder(folder) == [], verify_folder(folder)


def test_the_record_script_checks_and_rewrites_only_the_record(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("record_hashes_script", REPO / "scripts" / "record_hashes.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert [str(p.relative_to(CKPT)) for p in script.shipped_folders()] == [
        str(p.relative_to(CKPT)) for p in _shipped_folders()]
    assert script.main(["--check"]) == 0 and "folders match their records" in capsys.readouterr().out
    folder, _ = _copy("base", tmp_path)  # indent 1, no final newline: kept as it was
    before = (folder / "base_info.json").read_text()
    info = json.loads(before)
    del info[KEY]
    (folder / "base_info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
    assert script.main(["--check", str(folder)]) == 1 and "has no 'sha256' record" in capsys.readouterr().out
    assert script.main([str(folder)]) == 0
    assert (folder / "base_info.json").read_text() == before
    (folder / "generation_config.json").write_text("{}")
    assert script.main(["--check", str(folder)]) == 1
    assert "generation_config.json does not match the hash recorded in" in capsys.readouterr().out


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_flipped_byte_is_caught_on_loading(tmp_path, kind):
    folder, weights = _copy(kind, tmp_path)
    _load(kind, folder)  # the copy loads as it is
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # the last tensor's last byte: still a well-formed safetensors file
    weights.write_bytes(bytes(data))
    assert safetensors_problem(weights) is None
    msg = _refused(kind, folder)
    assert f"{weights} does not match the hash recorded in {folder / KINDS[kind][2]}" in msg, msg


def test_only_the_weights_are_hashed_on_loading_but_the_record_covers_every_file(tmp_path):
    folder, weights = _copy("image", tmp_path)
    (folder / "metrics.json").write_text(json.dumps({"edited": True}))
    _, info = load_run(folder)  # loading checks the weights alone
    assert info["metrics"] == {"edited": True}
    assert verify_folder(folder) == [f"{folder / 'metrics.json'} does not match the hash recorded in "
                                      f"{folder / 'config.json'}"]
    cfg = json.loads((folder / "config.json").read_text())
    del cfg[KEY]["model.safetensors"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json records no SHA-256 for model.safetensors"):
        load_run(folder)
    del cfg[KEY]  # a folder saved before records existed loads as before
    (folder / "config.json").write_text(json.dumps(cfg))
    assert load_run(folder)[1]["model"] == "vae"


def test_every_new_folder_records_the_hash_of_each_file(tmp_path):
    run = save_run(tmp_path / "run", build_model("vae", seed=0, arch="mlp", hidden=16, latent_dim=3),
                   metrics={"a": 1}, history={"b": 2}, check={"c": 3})
    base_lm = LM.build_base_lm(Vocab(), LM.BaseLMConfig(n_embd=16, n_layer=1, n_head=2, n_positions=40), seed=0)
    base = save_base(base_lm, {"note": "tiny"}, tmp_path / "base")
    seq = save_seq_run(tmp_path / "seq", SeqCVAE(base_lm, Vocab(), SeqCVAEConfig(latent="discrete")), base_lm,
                       task=StrategyTask(), train={}, history=[], metrics={}, base_source="test")
    clf = C.save_classifier(tmp_path / "clf", C.MnistClassifier(), {})
    for folder, record, weights in [(run, "config.json", "model.safetensors"), (base, "base_info.json",
                                    "model.safetensors"), (seq, "config.json", "weights.safetensors"),
                                    (clf, "classifier.json", "classifier.safetensors")]:
        hashes = json.loads((folder / record).read_text())[KEY]
        others = sorted(p.name for p in folder.iterdir() if p.name != record)
        assert sorted(hashes) == others and weights in others
        assert hashes[weights] == sha256_file(folder / weights)
        assert verify_folder(folder) == []
    assert sorted(json.loads((run / "config.json").read_text())[KEY]) == [
        "check.json", "history.json", "metrics.json", "model.safetensors"]
    for kind, folder in [("image", run), ("base", base), ("sequence", seq), ("classifier", clf)]:
        _load(kind, folder)  # each loads, its weights checked against the record
