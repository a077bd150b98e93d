"""eval.rd: reading a rate-distortion curve at other rates, against numpy's linear interpolation."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cvae_core.eval.rd import at_rate, curve, equal_rate

finite = st.floats(-1e3, 1e3, allow_nan=False)


@given(st.lists(st.tuples(st.floats(0, 500, allow_nan=False), finite), min_size=2, max_size=12,
                unique_by=lambda p: p[0]), st.floats(0, 500, allow_nan=False))
def test_at_rate_is_numpys_linear_interpolation_inside_the_range_and_none_outside(points, rate):
    c = curve(points)
    r, d = np.array([p[0] for p in c]), np.array([p[1] for p in c])
    got = at_rate(c, rate)
    if rate < r[0] or rate > r[-1]:
        assert got is None
    else:
        assert math.isclose(got, float(np.interp(rate, r, d)), rel_tol=1e-9, abs_tol=1e-6)


def test_curve_sorts_and_drops_non_finite_points_and_equal_rate_compares_inside_the_range():
    assert curve([(3, 1.0), (1, 2.0), (float("nan"), 0.0), (2, float("inf"))]) == [(1.0, 2.0), (3.0, 1.0)]
    a = [(0.5, 9.0), (1.0, 4.0), (3.0, 1.0), (10.0, 0.0)]
    b = [(1.0, 6.0), (5.0, 2.0)]
    rows = equal_rate(a, b)
    assert [r["rate"] for r in rows] == [1.0, 3.0]  # 0.5 and 10 lie outside b's rates
    assert rows[1]["b"] == 4.0 and rows[1]["a_minus_b"] == -3.0 and rows[0]["a_minus_b"] == -2.0
