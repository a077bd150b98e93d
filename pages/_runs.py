"""The runs every page lists and loads: one cached ``catalog.list_runs`` under one cache signature
(``catalog.signature``, so a run saved, re-saved or removed is listed at the next rerun), how a URL names a listed run,
and the cached loaders of a run and its data set. Pages never list run folders themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from cvae_core.data import Dataset, load_dataset
from cvae_core.errors import CheckpointError, DataError, LabError
from cvae_core.runs import catalog
from cvae_core.runs.catalog import RunEntry
from cvae_core.runs.folder import is_sequence_run, load_run, read_run_info


# ------------------------------------------------------------------ the run list
@st.cache_data(show_spinner=False, max_entries=32)
def _listed(roots: tuple[str, ...], kind: str, dataset: str | None, model: str | None, condition: str | None,
            sig: str) -> tuple[list[RunEntry], list[str]]:
    """`sig` (``digest`` of ``catalog.signature``) is hashed with the rest: the list is read again whenever a run
    folder changes."""
    return catalog.list_runs(roots, dataset=dataset, model=model, kind=kind, condition=condition)


def runs(kind: str = "image", *, dataset: str | None = None, model: str | None = None,
         condition: str | None = None) -> tuple[list[RunEntry], list[str]]:
    """(runs of this kind under the shipped and the saved root that match, one-line problems of unreadable folders):
    ``catalog.list_runs``, cached until a run folder under the roots changes."""
    roots = tuple(str(r) for r in catalog.default_roots(kind))
    return _listed(roots, kind, dataset, model, condition, digest(catalog.signature(roots, kind)))


def digest(sig: tuple) -> str:
    """A cache signature as one short string: Streamlit hashes a long tuple of tuples item by item (about 1 ms per
    cached call with a few dozen runs), one string at once."""
    return hashlib.sha1(repr(sig).encode()).hexdigest()


@dataclass(frozen=True)
class Unreadable:
    """A run folder whose config.json could not be read: listed so that picking it shows why."""

    path: Path
    label: str
    id: str


def unreadable(kind: str = "image") -> list[Unreadable]:
    """The folders under the roots that look like runs of this kind (a config.json) but ``runs`` could not read (a
    name that is not ``catalog.admissible`` is only a problem line of ``runs``, never an option)."""
    roots = catalog.default_roots(kind)
    listed = {str(r.path) for r in runs(kind)[0]}
    out = []
    for folder, *_ in catalog.signature(roots, kind):
        path = Path(folder)
        if folder in listed or not catalog.admissible(path.name) or is_sequence_run(path) != (kind == "sequence"):
            continue
        shipped = path.parent == roots[0]
        out.append(Unreadable(path, path.name if shipped else f"saved: {path.name}",
                              path.name if shipped else f"runs/{path.name}"))
    return out


def url_ids(options: Mapping[str, Any]) -> dict[str, str]:
    """option label -> how a URL names it: a run's catalog id (its folder name, ``runs/NAME`` when saved); an option
    that is not a run folder (the live training job) by its label."""
    return {label: getattr(v, "id", None) or label for label, v in options.items()}


def url_choices(options: Mapping[str, Any]) -> dict[str, str]:
    """What a URL may name an option by (its id, or its label as older links did) -> the option's label."""
    ids = url_ids(options)
    return {ids[label]: label for label in options} | {label: label for label in options}


# ------------------------------------------------------------------ loaders
@st.cache_resource(show_spinner="Loading the data set ...")
def get_dataset(name: str, rho: float = 10.0, seed: int = 0) -> Dataset:
    return load_dataset(name, rho=rho, seed=seed)


@st.cache_resource(show_spinner=False, max_entries=32)
def get_run(path: str, key: str):
    """(model, info) of a run folder; `key` (``catalog.run_key``) keys the cache so a re-saved run is reloaded."""
    return load_run(path)


def run_dataset(info: dict) -> Dataset:
    """The data set a run was trained on, as its folder's config.json names it (mnist when it names none)."""
    ds = info.get("dataset") or {}
    name = ds.get("name") or "mnist"
    if name.endswith("-lt"):
        return get_dataset(name, rho=float(ds.get("rho", 10.0)), seed=int(ds.get("seed", 0)))
    return get_dataset(name)  # the defaults share the Train page's cached copy


def load_source(path: Path):
    """(model, info, data) of a run folder; raises CheckpointError/DataError with one line."""
    path = Path(path)
    try:
        model, info = get_run(str(path), catalog.run_key(path))
    except OSError as e:
        raise CheckpointError(f"cannot read the run in {path}: {e.strerror or e}") from None
    data = run_dataset(info)
    if tuple(model.config.image_shape) != tuple(data.image_shape):
        raise DataError(f"{path.name} expects images of shape {tuple(model.config.image_shape)}, but its data set "
                        f"{data.name} has {tuple(data.image_shape)}")
    return model, info, data


@st.cache_data(show_spinner=False, max_entries=256)
def run_metrics(path: str, key: str) -> dict:
    """A run folder's test metrics (metrics.json through its config reader); {} when it cannot be read. `key`
    (``catalog.run_key``) keys the cache, so a re-saved run is read again."""
    try:
        return dict(read_run_info(Path(path)).get("metrics") or {})
    except (LabError, OSError):
        return {}
