"""Checkpoints cannot run code: weights are read from safetensors only, and a folder's files match the SHA-256
hashes it records. The lowest layer beside ``errors`` and ``io``: nothing here knows about models.

- ``safetensors_problem(path)`` reads a weights file's first bytes and header (never the tensors) and names what is
  wrong before any loader touches it: a pickle or a ``torch.save`` zip archive (refused unread: unpickling can run
  code), a truncated file, anything else that is not safetensors. safetensors itself never executes code; this
  check turns its terse errors into one line that says what the file is.
- ``pickle_note(folder)`` names the pickle-format files (``model.pt``, ``pytorch_model.bin``, ...) a folder holds
  instead of its safetensors weights: they are never read.
- The hash record of a folder is the key ``sha256`` of one JSON file in it (``record_of``): ``{file name: SHA-256
  hex digest}`` of every other file in the folder. ``record_hashes`` writes it (the run-folder writers call it
  inside their atomic write); a loader checks its weights file against it with ``check_hash`` (only the weights:
  about 2 ms for a 2.7 MB run on a 2-core CPU); ``read_weights`` does both checks, then reads. ``verify_folder``
  checks every file (the shipped runs' test and ``scripts/record_hashes.py --check``). A folder without a record
  (saved before there were records) loads as before.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cvae_core.errors import CheckpointError
from cvae_core.io import write_json

KEY = "sha256"
# The JSON file that holds a folder's record, by kind of folder, in the order they are looked for: a base model
# (transformers' config.json is not ours to extend), the classifier, a certificate teacher, a run.
RECORD_FILES = ("base_info.json", "classifier.json", "teacher.json", "config.json")
TEACHER_WEIGHTS = "teacher.safetensors"  # a teacher folder holds this file alone until its teacher.json is written
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
REFUSED = "refused unread, since unpickling can run code"
MAX_HEADER = 100_000_000  # the safetensors library's own limit on the header's size


# --------------------------------------------------------------------------------------- safetensors, never pickles
def safetensors_problem(path: str | Path) -> str | None:
    """None when `path` starts like a complete safetensors file (an 8-byte header size, a JSON header, and exactly
    the bytes its tensors' offsets describe); else a short phrase naming what it is instead. Reads the header only."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)  # the header's size (u64, little-endian), then its first byte: "{"
            n = struct.unpack("<Q", head[:8])[0] if len(head) == 9 else 0
            if head[8:] != b"{" or not 2 <= n <= MAX_HEADER:  # not safetensors: say what it is
                if head[:4] == b"PK\x03\x04":
                    return f"a torch.save zip archive of pickles, not safetensors: {REFUSED}"
                if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode: pickle protocol 2-5
                    return f"a pickle, not safetensors: {REFUSED}"
                return f"{size} bytes, too short for a safetensors header" if size < 9 else "no safetensors header"
            if 8 + n > size:
                return f"truncated: {size} bytes, inside its {n}-byte header"
            header = json.loads(b"{" + f.read(n - 1))
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "its header is not valid JSON"
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"], default=0)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        return "its header does not describe tensors"
    want = 8 + n + end
    if size < want:
        return f"truncated: {size} of the {want} bytes its header describes"
    if size > want:
        return f"{size - want} bytes after the {want} its header describes"
    return None


def pickle_note(folder: str | Path) -> str:
    """'' or ' (only X, Y there: pickle formats are refused unread, ...)': what a loader adds when the safetensors
    weights are missing but pickle-format files (torch.save, pytorch_model.bin) lie where they would be."""
    folder = Path(folder)
    found = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    return f" (only {', '.join(found)} there: pickle formats are {REFUSED})" if found else ""


# --------------------------------------------------------------------------------------------------- hash records
def sha256_file(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def record_of(folder: str | Path) -> Path | None:
    """The JSON file that holds (or, for a teacher folder not yet recorded, will hold) `folder`'s hash record."""
    folder = Path(folder)
    for name in RECORD_FILES:
        if (folder / name).is_file():
            return folder / name
    return folder / "teacher.json" if (folder / TEACHER_WEIGHTS).is_file() else None


def folder_files(folder: str | Path, record: str) -> list[Path]:
    """The files a record covers: every regular, non-hidden file of `folder` but the record itself, by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and p.name != record)


def folder_hashes(folder: str | Path, record: str) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in folder_files(folder, record)}


def record_hashes(folder: str | Path, record: str) -> dict[str, str]:
    """Write the SHA-256 of every other file of `folder` under the key ``sha256`` of `folder/record` (created when
    absent, its other keys kept). Called on the temporary folder of an atomic write, so the record lands with it."""
    path = Path(folder) / record
    obj = json.loads(path.read_text()) if path.is_file() else {}
    obj[KEY] = hashes = folder_hashes(folder, record)
    write_json(path, obj)
    return hashes


def recorded_hashes(record: str | Path) -> dict | None:
    """The ``sha256`` key of a record file, or None when the file or the key is absent."""
    record = Path(record)
    if not record.is_file():
        return None
    try:
        obj = json.loads(record.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{record} is not valid JSON ({e})") from None
    return obj.get(KEY) if isinstance(obj, dict) else None


def check_hash(path: str | Path, hashes: dict | None, record: str | Path) -> None:
    """Nothing when there is no record (`hashes` None: a folder saved before records existed) or when the file's
    SHA-256 is the one recorded for its name; else one CheckpointError line."""
    if hashes is None:
        return
    path = Path(path)
    want = hashes.get(path.name) if isinstance(hashes, dict) else None
    if not isinstance(want, str):
        raise CheckpointError(f"{record} records no SHA-256 for {path.name} (its '{KEY}' key is incomplete)")
    if sha256_file(path) != want.lower():
        raise CheckpointError(f"{path} does not match the hash recorded in {record} (the file was changed or "
                              "damaged after it was saved)")


def read_weights(path: str | Path, hashes: dict | None, record: str | Path, *,
                 damaged: str = "is corrupt or not a safetensors file", then: str = "") -> dict[str, torch.Tensor]:
    """The tensors (on the CPU) of the safetensors weights file `path`, read only after its header was checked (a
    pickle is refused unread, a truncated file named) and its SHA-256 matched `hashes` (the record in `record`; None:
    no record). Anything wrong is one CheckpointError line: ``{path} {damaged} ({why}){then}`` (`then`: what to do
    about it, e.g. "; rebuild it with ...")."""
    path = Path(path)
    problem = safetensors_problem(path)
    if problem:
        raise CheckpointError(f"{path} {damaged} ({problem}){then}")
    try:
        check_hash(path, hashes, record)
    except CheckpointError as e:
        raise CheckpointError(f"{e}{then}") from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} {damaged} ({e}){then}") from None


def verify_folder(folder: str | Path) -> list[str]:
    """Every way `folder`'s files differ from its record, one line each ([] when they all match)."""
    folder = Path(folder)
    record = record_of(folder)
    if record is None or not record.is_file():
        return [f"{folder}: no hash record (one of {', '.join(RECORD_FILES)} with a '{KEY}' key)"]
    try:
        hashes = recorded_hashes(record)
    except CheckpointError as e:
        return [str(e)]
    if not isinstance(hashes, dict):
        return [f"{record} has no '{KEY}' record"]
    files = {p.name: p for p in folder_files(folder, record.name)}
    out = [f"{folder / n} is not in the record of {record}" for n in sorted(set(files) - set(hashes))]
    out += [f"{folder / n} is recorded in {record} but missing" for n in sorted(set(hashes) - set(files))]
    out += [f"{files[n]} does not match the hash recorded in {record}" for n in sorted(set(files) & set(hashes))
            if sha256_file(files[n]) != str(hashes[n]).lower()]
    return out
