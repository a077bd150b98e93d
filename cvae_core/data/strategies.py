"""The toy "strategies" task of the sequence CVAE (SPEC section 6): x is a digit string, y is x transformed by one of
K* hidden strategies (sort ascending, sort descending, reverse, rotate, ...), drawn with mixture weights that depend
on x. An exact checker says which strategies map x to y. Token ids are int64 and never scaled.

- ``STRATEGIES``: name -> function on digit strings. ``StrategyTask`` picks K* of them, the length range of x and the
  mixture rule: ``"first-digit"`` (the first digit d prefers strategy d mod K*: weight (1 - s) + s/K* for it, s/K*
  for the others, s = ``spread``) or ``"uniform"``.
- ``StrategyTask.sample(n, rng)`` draws (x, strategy, y); with ``distinct=True`` (the default) only inputs on which
  the K* strategies all give different answers, so the strategy is identifiable from (x, y).
- ``make_split``: training and test sets whose inputs never overlap (the test inputs are held out).
- ``Vocab``: the token ids of the template ``<bos> <x> {x} </x> <z> {z} </z> <y> {y} </y> <eos>``; the slot {z} holds
  the ``<z?>`` token ("no strategy given") for the base model and the latent's embedding in the CVAE's decoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cvae_core.errors import ConfigError, DataError

STRATEGIES: dict[str, Callable[[str], str]] = {
    "sort_asc": lambda s: "".join(sorted(s)),
    "sort_desc": lambda s: "".join(sorted(s, reverse=True)),
    "reverse": lambda s: s[::-1],
    "rotate": lambda s: s[1:] + s[:1],  # the first digit moves to the end
    "swap_pairs": lambda s: "".join(s[i + 1] + s[i] for i in range(0, len(s) - 1, 2)) + (s[-1] if len(s) % 2 else ""),
    "increment": lambda s: "".join(str((int(c) + 1) % 10) for c in s),  # every digit + 1, 9 -> 0
}
MIXTURES = ("first-digit", "uniform")


@dataclass(frozen=True)
class StrategyTask:
    strategies: tuple[str, ...] = ("sort_asc", "sort_desc", "reverse", "rotate")
    min_len: int = 4
    max_len: int = 8
    mixture: str = "first-digit"
    spread: float = 0.4  # share of the weight spread evenly over all strategies (first-digit rule)
    distinct: bool = True  # only inputs on which every strategy gives a different answer

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or len(self.strategies) < 2 or len(set(self.strategies)) != len(self.strategies):
            raise ConfigError(f"strategies must be 2 or more different names from {', '.join(STRATEGIES)} "
                              f"(got {', '.join(self.strategies)})")
        if not 2 <= self.min_len <= self.max_len <= 32:
            raise ConfigError(f"need 2 <= min_len <= max_len <= 32 (got {self.min_len}, {self.max_len})")
        if self.mixture not in MIXTURES:
            raise ConfigError(f"mixture must be one of {', '.join(MIXTURES)} (got {self.mixture!r})")
        if not 0 <= self.spread <= 1:
            raise ConfigError(f"spread must be in [0, 1] (got {self.spread})")

    @property
    def K(self) -> int:
        return len(self.strategies)

    def weights(self, x: str) -> np.ndarray:
        """The true mixture p(strategy | x), (K*,)."""
        check_digits(x)
        K = self.K
        if self.mixture == "uniform":
            return np.full(K, 1.0 / K)
        w = np.full(K, self.spread / K)
        w[int(x[0]) % K] += 1 - self.spread
        return w

    def apply(self, x: str, k: int) -> str:
        return STRATEGIES[self.strategies[k]](x)

    def check(self, x: str, y: str) -> list[int]:
        """Every strategy (index) that maps x to y: the exact checker. Empty when none does."""
        check_digits(x)
        return [k for k in range(self.K) if self.apply(x, k) == y]

    def is_distinct(self, x: str) -> bool:
        return len({self.apply(x, k) for k in range(self.K)}) == self.K

    def sample(self, n: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray, list[str]]:
        """n draws of (x, strategy index, y). Inputs are uniform over lengths, then digits."""
        xs: list[str] = []
        while len(xs) < n:
            length = int(rng.integers(self.min_len, self.max_len + 1))
            x = "".join(map(str, rng.integers(0, 10, size=length)))
            if not self.distinct or self.is_distinct(x):
                xs.append(x)
        ks = np.array([rng.choice(self.K, p=self.weights(x)) for x in xs], dtype=np.int64)
        return xs, ks, [self.apply(x, int(k)) for x, k in zip(xs, ks, strict=True)]


def check_digits(x: str) -> None:
    if not x or not x.isascii() or not x.isdigit():
        raise DataError(f"an input is a non-empty string of the digits 0-9 (got {x!r})")


@dataclass
class StrategySplit:
    """Inputs, true strategies (int64) and answers of one split, with the true mixtures (N, K*)."""

    x: list[str]
    strategy: np.ndarray
    y: list[str]
    mixture: np.ndarray


def make_split(task: StrategyTask, n_train: int = 20_000, n_test: int = 2_000, seed: int = 0
               ) -> tuple[StrategySplit, StrategySplit]:
    """Training and test sets with disjoint inputs: the test set draws first, and training draws that hit a test
    input are replaced. Seeded: the same arguments give the same sets."""
    rng = np.random.default_rng(seed)
    xs, ks, ys = task.sample(n_test, rng)
    held = set(xs)
    test = StrategySplit(xs, ks, ys, np.stack([task.weights(x) for x in xs]))
    tx: list[str] = []
    tk: list[int] = []
    ty: list[str] = []
    for _ in range(100):
        need = n_train - len(tx)
        if need == 0:
            break
        a, b, c = task.sample(need, rng)
        for x, k, y in zip(a, b, c, strict=True):
            if x not in held:
                tx.append(x)
                tk.append(int(k))
                ty.append(y)
    if len(tx) < n_train:
        raise DataError(f"could not draw {n_train} training inputs outside the test set: too few inputs of length "
                        f"{task.min_len}-{task.max_len}")
    train = StrategySplit(tx, np.array(tk, dtype=np.int64), ty, np.stack([task.weights(x) for x in tx]))
    return train, test


@dataclass
class Vocab:
    """Token ids: the specials, then the ten digits. Every sequence has the template
    ``<bos> <x> x </x> <z> <z?> </z> <y> y </y> <eos>``: ``<z?>`` is the latent slot. The base model is trained with
    the slot empty (the ``<z?>`` token itself: "no strategy given"); the CVAE's decoder puts the embedding of its
    latent there, so it starts from a model that already knows the template."""

    specials: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<x>", "</x>", "<z>", "</z>", "<y>", "</y>", "<z?>")
    tokens: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = [*self.specials, *"0123456789"]
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def pad(self) -> int:
        return self.ids["<pad>"]

    @property
    def slot(self) -> int:
        return self.ids["<z?>"]

    def encode(self, x: str, y: str | None = None) -> list[int]:
        """The template ``<bos> <x> x </x> <z> <z?> </z> <y> y </y> <eos>``; with y = None it stops after <y> (a prompt
        to decode from)."""
        check_digits(x)
        toks = ["<bos>", "<x>", *x, "</x>", "<z>", "<z?>", "</z>", "<y>"]
        if y is not None:
            if y:
                check_digits(y)
            toks += [*y, "</y>", "<eos>"]
        return [self.ids[t] for t in toks]

    @staticmethod
    def x_length(x: str) -> int:
        """Tokens of the input part ``<bos> <x> x </x>`` (what the router reads)."""
        return len(x) + 3

    def decode(self, ids) -> list[str]:
        return [self.tokens[int(i)] for i in ids]

    def answer(self, ids) -> str | None:
        """The digits between <y> and </y> of a token sequence; None when the sequence has no well-formed answer."""
        toks = self.decode(ids)
        if "<y>" not in toks:
            return None
        rest = toks[toks.index("<y>") + 1 :]
        if "</y>" not in rest:
            return None
        digits = rest[: rest.index("</y>")]
        return "".join(digits) if digits and all(t.isdigit() for t in digits) else None
