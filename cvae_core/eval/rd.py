"""The rate-distortion curve of a beta sweep, and the question the Beta-Sigma VAE paper asks of it: at equal rate,
which family distorts less?

A point is (rate R, distortion) of one run; a family's curve is its points sorted by rate, read between points by
linear interpolation in R (nothing is extrapolated beyond a curve's rates). The distortions that compare across
likelihoods (SPEC section 1): the test MSE per pixel, and ``distortion_train_sigma``, -log p(x|z) of a Gaussian
decoder at the model's own training-set MSE (``eval.likelihood.evaluate``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

RD_KEYS = ("distortion_train_sigma", "mse")  # the distortions compared


def curve(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """(rate, distortion) pairs sorted by rate; non-finite pairs dropped."""
    return sorted((float(r), float(d)) for r, d in points if math.isfinite(r) and math.isfinite(d))


def at_rate(c: list[tuple[float, float]], rate: float) -> float | None:
    """The distortion of curve `c` at `rate` (linear between its points), None outside its range of rates.

    Example:
        >>> at_rate([(0.0, 10.0), (2.0, 6.0), (4.0, 5.0)], 1.0), at_rate([(0.0, 10.0), (2.0, 6.0)], 3.0)
        (8.0, None)
    """
    if not c or rate < c[0][0] or rate > c[-1][0]:
        return None
    for (r0, d0), (r1, d1) in zip(c, c[1:], strict=False):
        if r0 <= rate <= r1:
            return d0 if r1 == r0 else d0 + (d1 - d0) * (rate - r0) / (r1 - r0)
    return c[-1][1]  # a one-point curve at exactly that rate


def equal_rate(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[dict]:
    """At each rate of curve `a` inside curve `b`'s range of rates: {"rate", "a", "b", "a_minus_b"}. A negative
    difference means `a` distorts less than `b` at that rate."""
    out = []
    for rate, d in a:
        other = at_rate(b, rate)
        if other is not None:
            out.append({"rate": rate, "a": d, "b": other, "a_minus_b": d - other})
    return out
