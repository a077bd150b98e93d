"""(Re)write the SHA-256 record of every shipped folder under checkpoints/, or check them (``--check``).

    .venv/bin/python scripts/record_hashes.py                    # every folder under checkpoints/ that holds files
    .venv/bin/python scripts/record_hashes.py checkpoints/mnist_vae
    .venv/bin/python scripts/record_hashes.py --check            # exit 1, one line per problem, if any differs

A folder's record is the key ``sha256`` of its JSON file (config.json of a run, base_info.json of a base model,
classifier.json, teacher.json of a certificate teacher): ``{file name: SHA-256 hex}`` of every other file in it
(``cvae_core.integrity``). Loading checks the weights file against it; ``tests/runs/test_integrity.py`` checks every
file of every shipped folder. Only that key changes: the JSON keeps its indentation, nothing else is rewritten (and
no weights file is touched). Run it after changing a shipped folder on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvae_core.integrity import KEY, folder_hashes, record_of, verify_folder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shipped_folders(root: Path = REPO / "checkpoints") -> list[Path]:
    """Every folder under `root` that directly holds a (non-hidden) file, by path."""
    return sorted(p for p in [root, *root.rglob("*")] if p.is_dir() and not any(s.startswith(".") for s in p.parts[
        len(root.parts):]) and any(f.is_file() and not f.name.startswith(".") for f in p.iterdir()))


def rewrite_record(folder: Path) -> tuple[Path, int]:
    """Set `folder`'s record to the SHA-256 of its other files, keeping the JSON file's indentation and final
    newline; written to a temporary file and renamed into place. Returns (the record file, files recorded)."""
    record = record_of(folder)
    if record is None:
        raise SystemExit(f"{folder}: no JSON file to hold a record (one of config.json, base_info.json, "
                         "classifier.json, teacher.json, or a teacher.safetensors)")
    text = record.read_text() if record.is_file() else "{}\n"
    indent = re.match(r"\{\n( +)", text)
    obj = json.loads(text)
    obj[KEY] = folder_hashes(folder, record.name)
    out = json.dumps(obj, indent=len(indent.group(1)) if indent else 2, sort_keys=True, allow_nan=False)
    tmp = record.with_name(f".{record.name}.tmp-{os.getpid()}")
    tmp.write_text(out + ("\n" if text.endswith("\n") else ""))
    os.replace(tmp, record)
    return record, len(obj[KEY])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path, help="folders to record (default: all under checkpoints/)")
    ap.add_argument("--check", action="store_true", help="only check the records; exit 1 if any file differs")
    a = ap.parse_args(argv)
    folders = a.folders or shipped_folders()
    if a.check:
        problems = [line for f in folders for line in verify_folder(f)]
        print("\n".join(problems) or f"{len(folders)} folders match their records")
        return 1 if problems else 0
    for folder in folders:
        record, n = rewrite_record(folder.resolve())
        print(f"{record.relative_to(REPO) if record.is_relative_to(REPO) else record}: {n} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
