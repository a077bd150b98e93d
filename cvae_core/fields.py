"""Config fields that document themselves. Every field of a model config and of ``TrainConfig`` is declared as
``field(default=..., metadata={"help": "...", "choices": (...)})``: "help" is its one-line documentation (the app's
tooltips), "choices" the fixed values of a str field that takes only those (the app shows a select box). A str
field without "choices" is free text. The config's own ``__post_init__`` still validates; the tests check that it
accepts exactly the choices.

Example:
    >>> from dataclasses import dataclass, field
    >>> from cvae_core.fields import field_choices, field_help
    >>> @dataclass
    ... class Config:
    ...     hidden: int = field(default=256, metadata={"help": "width of the feature layer"})
    ...     arch: str = field(default="conv", metadata={"help": "the body", "choices": ("conv", "mlp")})
    >>> field_help(Config)
    {'hidden': 'width of the feature layer', 'arch': 'the body'}
    >>> field_choices(Config)
    {'arch': ('conv', 'mlp')}
"""

from __future__ import annotations

import dataclasses
import math
import numbers

HELP, CHOICES = "help", "choices"  # the metadata keys
FLOAT32_MAX = 3.4028234663852886e38  # the models compute in float32: a larger number would become inf there


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its help text, for every field of the dataclass `cls` ("" where a field has none)."""
    return {f.name: f.metadata.get(HELP, "") for f in dataclasses.fields(cls)}


def field_choices(cls: type) -> dict[str, tuple[str, ...]]:
    """Field name -> its allowed values, for the fields of the dataclass `cls` that have a fixed set of values."""
    return {f.name: tuple(f.metadata[CHOICES]) for f in dataclasses.fields(cls) if CHOICES in f.metadata}


def check_field_types(config, error: type[Exception] = ValueError) -> None:
    """Every field whose default is a bool/int/float/str must hold that kind of value, so that a typo in --option,
    a widget or config.json fails in one line (raised as `error`), not in torch. An int is accepted for a float;
    floats must be finite and within float32's range (the models compute in float32). Integral values are stored as
    ``int`` and real ones as ``float`` (numpy scalars would be saved otherwise in config.json). Fields defaulting to
    None or to anything else are the config's own to check."""
    for f in dataclasses.fields(config):
        v, d = getattr(config, f.name), f.default
        if isinstance(d, bool):
            ok, kind = isinstance(v, bool), "true or false"
        elif isinstance(d, int):
            ok, kind = isinstance(v, numbers.Integral) and not isinstance(v, bool), "an integer"
            if ok:
                setattr(config, f.name, int(v))
        elif isinstance(d, float):
            ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            kind = "a finite number"
            if ok and abs(v) > FLOAT32_MAX:
                ok, kind = False, f"a finite number within float32's range, |x| <= {FLOAT32_MAX:.3g}"
            if ok:
                setattr(config, f.name, float(v))
        elif isinstance(d, str):
            ok, kind = isinstance(v, str), "a string"
        else:
            continue
        if not ok:
            raise error(f"{f.name} must be {kind} (got {v!r})")
