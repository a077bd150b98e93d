"""Atomic writes and strict JSON, the lowest layer beside ``errors``: nothing here knows about models or data."""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None (JSON has no such numbers) and tuples by lists, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def swap_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder `tmp` to `dest`; an existing `dest` is moved aside first and removed afterwards,
    so at every moment `dest` is either the old complete folder or the new one."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
