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

HELP, CHOICES = "help", "choices"  # the metadata keys


def field_help(cls: type) -> dict[str, str]:
    """Field name -> its help text, for every field of the dataclass `cls` ("" where a field has none)."""
    return {f.name: f.metadata.get(HELP, "") for f in dataclasses.fields(cls)}


def field_choices(cls: type) -> dict[str, tuple[str, ...]]:
    """Field name -> its allowed values, for the fields of the dataclass `cls` that have a fixed set of values."""
    return {f.name: tuple(f.metadata[CHOICES]) for f in dataclasses.fields(cls) if CHOICES in f.metadata}
