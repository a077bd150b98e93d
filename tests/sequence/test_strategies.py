"""The strategies task of the sequence CVAE (SPEC section 6): each strategy on hand-worked examples, the exact checker
against every strategy's own output (hypothesis), the mixture rule and its empirical frequencies, the held-out split
and the token template."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cvae_core.data.strategies import STRATEGIES, StrategyTask, Vocab, make_split
from cvae_core.errors import ConfigError, DataError

ALL = tuple(STRATEGIES)


@pytest.mark.parametrize(("name", "x", "y"), [
    ("sort_asc", "31420", "01234"), ("sort_desc", "31420", "43210"), ("reverse", "31420", "02413"),
    ("rotate", "31420", "14203"), ("swap_pairs", "31420", "13240"), ("swap_pairs", "3142", "1324"),
    ("increment", "19093", "20104"),
])
def test_each_strategy_on_a_worked_example(name, x, y):
    assert STRATEGIES[name](x) == y


digit_strings = st.text(alphabet="0123456789", min_size=2, max_size=12)


@settings(max_examples=200, deadline=None)
@given(digit_strings)
def test_the_checker_finds_every_strategy_that_maps_x_to_y(x):
    task = StrategyTask(strategies=ALL)
    outputs = [STRATEGIES[name](x) for name in ALL]
    for k, y in enumerate(outputs):
        found = task.check(x, y)
        assert k in found
        assert found == [j for j, other in enumerate(outputs) if other == y]  # exactly those, no more
        assert (found == [k]) == (outputs.count(y) == 1)
    assert task.check(x, x + "0") == []  # one digit too many: no strategy keeps the length wrong
    assert task.is_distinct(x) == (len(set(outputs)) == len(outputs))


def test_mixture_weights():
    task = StrategyTask(spread=0.4)
    for x in ("0123", "5555", "7001", "93"):
        w = task.weights(x)
        assert w.sum() == pytest.approx(1.0)
        want = np.full(4, 0.1)
        want[int(x[0]) % 4] = 0.7
        np.testing.assert_allclose(w, want)
    np.testing.assert_allclose(StrategyTask(mixture="uniform").weights("123"), [0.25] * 4)


def test_sampled_strategies_follow_the_mixture_of_their_inputs():
    """20,000 draws: for each first digit, the share of each strategy is within 5 binomial standard errors of the
    rule's weight; every answer is the chosen strategy applied to x, and all inputs are distinct."""
    task = StrategyTask()
    xs, ks, ys = task.sample(20_000, np.random.default_rng(1))
    assert all(task.apply(x, int(k)) == y for x, k, y in zip(xs, ks, ys, strict=True))
    assert all(task.is_distinct(x) and task.min_len <= len(x) <= task.max_len for x in xs)
    first = np.array([int(x[0]) for x in xs])
    for d in range(10):
        sel = ks[first == d]
        w = task.weights(str(d) + "0")
        share = np.bincount(sel, minlength=4) / len(sel)
        se = np.sqrt(w * (1 - w) / len(sel))
        assert np.all(np.abs(share - w) < 5 * se), (d, share, w)


def test_split_holds_out_the_test_inputs_and_is_seeded():
    task = StrategyTask()
    train, test = make_split(task, n_train=3000, n_test=500, seed=3)
    assert len(train.x) == 3000 and len(test.x) == 500
    assert not set(train.x) & set(test.x)
    assert train.strategy.dtype == np.int64 and train.mixture.shape == (3000, 4)
    np.testing.assert_allclose(test.mixture, np.stack([task.weights(x) for x in test.x]))
    again_train, again_test = make_split(task, n_train=3000, n_test=500, seed=3)
    assert again_train.x == train.x and again_test.y == test.y and np.array_equal(again_train.strategy, train.strategy)
    other, _ = make_split(task, n_train=3000, n_test=500, seed=4)
    assert other.x != train.x


def test_template_round_trip_and_answers():
    v = Vocab()
    assert len(v) == 10 + 10
    ids = v.encode("4071", "0147")
    assert v.decode(ids) == ["<bos>", "<x>", "4", "0", "7", "1", "</x>", "<z>", "<z?>", "</z>", "<y>", "0", "1", "4",
                             "7", "</y>", "<eos>"]
    assert ids[v.x_length("4071")] == v.ids["<z>"] and ids.count(v.slot) == 1  # the router reads what comes before
    assert v.answer(ids) == "0147"
    assert v.decode(v.encode("12")) == ["<bos>", "<x>", "1", "2", "</x>", "<z>", "<z?>", "</z>", "<y>"]  # a prompt
    assert v.answer(v.encode("12")) is None
    assert v.answer(v.encode("12") + [v.ids["</y>"]]) is None  # an empty answer
    assert v.answer(v.encode("12") + [v.ids["3"], v.ids["<x>"], v.ids["</y>"]]) is None  # not all digits


@pytest.mark.parametrize("bad", ["", "12a4", "１２", " 12", "-3"])
def test_bad_inputs_are_one_line(bad):
    with pytest.raises(DataError, match="non-empty string of the digits 0-9"):
        StrategyTask().check(bad, "1")
    with pytest.raises(DataError):
        Vocab().encode(bad)


def test_bad_configs_are_one_line():
    with pytest.raises(ConfigError, match="2 or more different names"):
        StrategyTask(strategies=("sort_asc", "nope"))
    with pytest.raises(ConfigError, match="2 or more different names"):
        StrategyTask(strategies=("reverse", "reverse"))
    with pytest.raises(ConfigError, match="min_len"):
        StrategyTask(min_len=5, max_len=3)
    with pytest.raises(ConfigError, match="mixture"):
        StrategyTask(mixture="zipf")

