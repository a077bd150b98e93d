"""The one set-up pipeline of a run: ``build_run(name, data, overrides, train)``.

The command line, the Train page, the nu training of the Class balance page and the sequence CVAE's training (CLI
and Strategies page, through ``sequence.runs.train_and_save``) all start a run through it, so they check the same
things in the same order:

1. the model's options (one-line ``ConfigError``) before any data is read;
2. the fields a data set fixes (image shape, number of classes, an attribute condition and its width): an option
   that contradicts the data set is refused in one line, instead of being silently replaced;
3. a seeded build inside ``torch.random.fork_rng``, so starting a run never resets the global random stream that
   another session's training thread is using;
4. ``check_model_data``: a model that cannot train on this data set is refused before any work starts.

For the sequence family, `data` is the strategies task (a ``StrategyTask``) and `base` the loaded base language model
the CVAE is built over; nothing is fixed by the task, and step 4 checks that the base's context holds the task's
longest sequence.

``TICK_IMAGES`` is the one number of test images each log tick reads (active units, the live certificate, the
latent map), whoever started the run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cvae_core.data import Dataset, load_dataset
from cvae_core.data.strategies import StrategyTask, Vocab
from cvae_core.errors import ConfigError
from cvae_core.eval.attributes import condition_fields
from cvae_core.models.base import LatentModel, ModelConfig
from cvae_core.registry import MODELS, SEQUENCE_FAMILIES, build_model, make_config
from cvae_core.sequence.model import SeqCVAE
from cvae_core.train import TrainConfig, check_model_data

TICK_IMAGES = 500  # test images whose encoder means each log tick reads


@dataclass
class RunSetup:
    """A model ready to train on its data set."""

    name: str  # the registry name
    model: LatentModel | SeqCVAE
    data: Dataset | StrategyTask
    config: ModelConfig
    train: TrainConfig

    @property
    def dataset_info(self) -> dict[str, Any]:
        if isinstance(self.data, StrategyTask):
            return {"name": "strategies", **dataclasses.asdict(self.data)}
        return {"name": self.data.name, **self.data.info}


def data_fixed_fields(name: str, data: Dataset, overrides: dict[str, Any]) -> dict[str, Any]:
    """The options the data set fixes, after checking that `overrides` does not contradict them (ConfigError)."""
    fixed = condition_fields(name, data, overrides)
    for key, val in fixed.items():
        given = overrides.get(key)
        given = tuple(given) if isinstance(given, list) else given  # JSON gives lists
        if given not in (None, val) and not (key == "cond_dim" and given == 0):  # cond_dim 0 = from the data
            raise ConfigError(f"option {key} is set by the data set: {data.name} has {key}={val}")
    return fixed


def build_run(name: str, data: Dataset | StrategyTask | str, overrides: dict[str, Any] | None = None,
              train: TrainConfig | None = None, *, data_root: str | Path | None = None, rho: float = 10.0,
              data_seed: int = 0, download: bool = False, base=None) -> RunSetup:
    """Config, data-fixed fields (with their conflict check), a seeded build and the model/data check.

    `data` is a loaded ``Dataset`` or a data set's name (then it is loaded with `data_root`, `rho`, `data_seed` and
    `download`, after the options were checked). `train` defaults to ``TrainConfig()``; its seed seeds the weights.
    A sequence model (``seq_cvae``) takes the task as `data` and its base language model as `base`.

    Example:
        >>> from cvae_core.runs.setup import build_run
        >>> run = build_run("cvae", "mnist", {"latent_dim": 4})
        >>> run.config.num_classes, run.config.condition, run.model.config.latent_dim
        (10, 'class', 4)
        >>> build_run("cvae", "mnist", {"num_classes": 3})
        Traceback (most recent call last):
        ...
        cvae_core.errors.ConfigError: option num_classes is set by the data set: mnist has num_classes=10
    """
    overrides = dict(overrides or {})
    train = train or TrainConfig()
    config = make_config(name, **overrides)  # the options alone, before any data is read
    if MODELS[name].family in SEQUENCE_FAMILIES:  # nothing is fixed by the task: these options are the config
        return _build_sequence_run(name, data, config, train, base)
    if isinstance(data, str):
        data = load_dataset(data, root=data_root, rho=rho, seed=data_seed, download=download)
    overrides.update(data_fixed_fields(name, data, overrides))
    config = make_config(name, **overrides)
    with torch.random.fork_rng(devices=[]):  # seeding must not reset the stream of another thread's job
        model = build_model(name, config, seed=train.seed)
    check_model_data(model, data)
    return RunSetup(name, model, data, config, train)


def _build_sequence_run(name: str, task, config: ModelConfig, train: TrainConfig, base) -> RunSetup:
    """The sequence family's steps 3 and 4: a seeded build over a copy of `base`, after checking that the base can
    hold the task's sequences."""
    if not isinstance(task, StrategyTask):
        raise ConfigError(f"{name} trains on the strategies task (a StrategyTask), not {task!r}")
    if base is None:
        raise ConfigError(f"{name} is built over a base language model: pass base= (sequence.runs.load_base)")
    need = 2 * task.max_len + 9  # <bos> <x> x </x> <z> <z?> </z> <y> y </y> <eos>
    have = getattr(base.config, "n_positions", None)
    if have is not None and have < need:
        raise ConfigError(f"the base model's context ({have} tokens) is shorter than the task's longest sequence "
                          f"({need}); train a base for this task (python -m cvae_core train-base)")
    with torch.random.fork_rng(devices=[]):  # seeding must not reset the stream of another thread's job
        torch.manual_seed(train.seed)
        model = SeqCVAE(base, Vocab(), config)
    return RunSetup(name, model, task, config, train)
