"""CelebA from local files in torchvision's layout (cvae_core/data/celeba.py), on a small FAKE folder written here
in the official formats: random 178x218 JPEGs in img_align_celeba/, list_attr_celeba.txt (count line, 40 names,
then "000001.jpg -1  1 ..." rows) and list_eval_partition.txt ("000001.jpg 0" rows). Pixels, attributes and the
split are checked against torchvision's own CelebA reader (its MD5 check switched off, as the files are fakes) and
against the values written; then the cache, `limit` and the one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvae_core.data import DATASETS, load_dataset
from cvae_core.data import celeba as C
from cvae_core.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
         "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
         "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
         "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
PARTITION = [0, 0, 1, 2, 0, 2, 0, 1, 0, 2, 0, 0]  # 7 train, 2 validation, 3 test


def write_celeba(root: Path, seed: int = 0, newline: str = "\n") -> tuple[list[str], np.ndarray]:
    """A fake ROOT/celeba in the official formats; returns (file names, attribute values in {-1, 1})."""
    rng = np.random.default_rng(seed)
    d = root / "celeba"
    (d / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    files = [f"{i + 1:06d}.jpg" for i in range(len(PARTITION))]
    for f in files:  # smooth random colours, so that JPEG keeps them roughly as drawn
        small = rng.integers(0, 256, (11, 9, 3), dtype=np.uint8)
        Image.fromarray(small).resize((178, 218), Image.BILINEAR).save(d / "img_align_celeba" / f, quality=95)
    values = rng.choice([-1, 1], size=(len(files), 40))
    lines = [str(len(files)), " ".join(NAMES) + " "]  # the official header line ends with a space
    lines += [f + " " + " ".join(f"{v:2d}" for v in row) for f, row in zip(files, values, strict=True)]
    (d / "list_attr_celeba.txt").write_text(newline.join(lines) + newline)
    (d / "list_eval_partition.txt").write_text(newline.join(f"{f} {p}" for f, p in zip(files, PARTITION,
                                                                                      strict=True)) + newline)
    return files, values


def write_torchvision_extras(root: Path, files: list[str]) -> None:
    """The three other text files torchvision's CelebA reads (identity, boxes, landmarks), with made-up values."""
    d = root / "celeba"
    (d / "identity_CelebA.txt").write_text("".join(f"{f} {i + 1}\n" for i, f in enumerate(files)))
    (d / "list_bbox_celeba.txt").write_text(f"{len(files)}\nimage_id x_1 y_1 width height\n"
                                            + "".join(f"{f} 95 71 226 313\n" for f in files))
    names = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    (d / "list_landmarks_align_celeba.txt").write_text(
        f"{len(files)}\n{names}\n" + "".join(f"{f} 69 109 106 113 77 142 73 152 108 154\n" for f in files))


@pytest.fixture
def fake(tmp_path):
    files, values = write_celeba(tmp_path)
    return tmp_path, files, values


def test_against_torchvision(fake, monkeypatch):
    from torchvision import transforms
    from torchvision.datasets import CelebA

    root, files, values = fake
    write_torchvision_extras(root, files)
    monkeypatch.setattr(CelebA, "_check_integrity", lambda self: True)  # the fakes have other MD5s
    tf = transforms.Compose([transforms.CenterCrop(148), transforms.Resize(64)])
    d = load_dataset("celeba", root=root)
    for split, x, extras in (("train", d.x_train, d.extras_train), ("test", d.x_test, d.extras_test)):
        ref = CelebA(str(root), split=split, target_type="attr", transform=tf)
        assert len(ref) == len(x)
        assert torch.equal(extras["attributes"], ref.attr.float())  # torchvision maps -1/1 to 0/1 as well
        for i in range(len(ref)):
            img, _ = ref[i]
            assert torch.equal(x[i], torch.from_numpy(np.array(img)).permute(2, 0, 1))


def test_shapes_attributes_and_split(fake):
    root, files, values = fake
    d = load_dataset("celeba", root=root)
    train, test = [i for i, p in enumerate(PARTITION) if p == 0], [i for i, p in enumerate(PARTITION) if p == 2]
    assert d.x_train.shape == (7, 3, 64, 64) and d.x_test.shape == (3, 3, 64, 64)
    assert d.x_train.dtype == torch.uint8
    assert d.num_classes == 1 and d.class_names == ["face"]
    assert torch.equal(d.y_train, torch.zeros(7, dtype=torch.int64)) and torch.equal(d.y_test, torch.zeros(3,
                                                                                                         dtype=torch.int64))
    a = d.extras_train["attributes"]
    assert a.dtype == torch.float32 and a.shape == (7, 40)
    assert np.array_equal(a.numpy(), (values[train] == 1).astype(np.float32))  # -1 -> 0, 1 -> 1, rows in file order
    assert np.array_equal(d.extras_test["attributes"].numpy(), (values[test] == 1).astype(np.float32))
    assert d.info["attributes"] == NAMES and d.info["limit"] is None
    # the pixels: the centre 148x148 of each JPEG, resized (PIL bilinear, antialiased) to 64x64
    with Image.open(root / "celeba" / "img_align_celeba" / files[test[1]]) as im:
        expect = np.asarray(im.convert("RGB").crop((15, 35, 163, 183)).resize((64, 64), Image.BILINEAR))
    assert np.array_equal(d.x_test[1].numpy().transpose(1, 2, 0), expect)


def test_cache_is_read_back_and_rebuilt_when_the_files_change(fake, monkeypatch):
    root, files, values = fake
    first = load_dataset("celeba", root=root)
    cache = root / "celeba" / "cache-64px"
    assert sorted(os.listdir(cache)) == ["a_test.npy", "a_train.npy", "meta.json", "x_test.npy", "x_train.npy"]
    assert not [p for p in os.listdir(root / "celeba") if ".tmp-" in p]  # the temporary folder was renamed

    def no_decode(path):
        raise AssertionError("a second load must read the cache")

    with monkeypatch.context() as mp:
        mp.setattr(C, "decode", no_decode)
        again = load_dataset("celeba", root=root)
    assert torch.equal(first.x_train, again.x_train) and torch.equal(first.x_test, again.x_test)
    assert torch.equal(first.extras_train["attributes"], again.extras_train["attributes"])
    # new attribute values (a changed text file) -> decoded again, new values
    attr = root / "celeba" / "list_attr_celeba.txt"
    text = attr.read_text().splitlines()
    text[2] = text[2].replace("-1", " 1") if "-1" in text[2] else text[2]
    attr.write_text("\n".join(text) + "\n\n")  # a blank line at the end is allowed
    third = load_dataset("celeba", root=root)
    assert torch.equal(third.extras_train["attributes"][0], torch.ones(40))


def test_limit_and_crlf(tmp_path):
    files, values = write_celeba(tmp_path, seed=1, newline="\r\n")
    d = load_dataset("celeba", root=tmp_path, limit=2)
    assert len(d.x_train) == 2 and len(d.x_test) == 2 and d.info["limit"] == 2
    assert np.array_equal(d.extras_train["attributes"].numpy(), (values[[0, 1]] == 1).astype(np.float32))
    assert np.array_equal(d.extras_test["attributes"].numpy(), (values[[3, 5]] == 1).astype(np.float32))
    assert (tmp_path / "celeba" / "cache-64px-limit2").is_dir()
    full = load_dataset("celeba", root=tmp_path / "celeba")  # pointing at the celeba folder itself also works
    assert torch.equal(full.x_train[:2], d.x_train)
    with pytest.raises(DataError, match="limit must be a positive"):
        load_dataset("celeba", root=tmp_path, limit=0)


def test_missing_files_one_line_error(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("celeba", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "none found" in msg
    for part in ("img_align_celeba/*.jpg", "list_attr_celeba.txt", "list_eval_partition.txt", "torchvision's layout"):
        assert part in msg
    (tmp_path / "celeba").mkdir()
    (tmp_path / "celeba" / "list_attr_celeba.txt").write_text("0\n")
    with pytest.raises(DataError, match=r"found only celeba/list_attr_celeba.txt$"):
        load_dataset("celeba", root=tmp_path)


def test_damaged_files(fake):
    root, files, _ = fake
    d = root / "celeba"
    (d / "img_align_celeba" / files[4]).unlink()
    with pytest.raises(DataError, match=f"{files[4]}: listed in list_attr_celeba.txt but missing"):
        load_dataset("celeba", root=root)
    (d / "img_align_celeba" / files[4]).write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="not a readable JPEG"):
        load_dataset("celeba", root=root)
    attr = d / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(["13", *lines[1:]]) + "\n")
    with pytest.raises(DataError, match="says 13 images but lists 12"):
        load_dataset("celeba", root=root)
    attr.write_text("\n".join([*lines[:2], lines[2].replace(" 1", " 2", 1).replace("-1", " 2", 1), *lines[3:]]))
    with pytest.raises(DataError, match="must be -1 or 1"):
        load_dataset("celeba", root=root)
    attr.write_text("\n".join(lines))
    (d / "list_eval_partition.txt").write_text(f"{files[0]} 0\n")
    with pytest.raises(DataError, match="no partition for 11 images"):
        load_dataset("celeba", root=root)
    (d / "list_eval_partition.txt").write_text(f"{files[0]} train\n")
    with pytest.raises(DataError, match="line 1 should be"):
        load_dataset("celeba", root=root)
    assert not [p for p in os.listdir(d) if p.startswith("cache")]  # no cache from a failed decode


def test_registered():
    assert DATASETS["celeba"][0] is C.load_celeba
