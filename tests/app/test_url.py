"""The URL-state checker of every page (pages/_url.py), without Streamlit: any URL value in gives a valid value and
at most one message naming the parameter, the (shortened) value and the value used, and never an exception
(hypothesis); valid values round-trip through the URL; path-like run names never reach a run."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pages._url import (  # noqa: E402
    MAX_MANY,
    check,
    shorten,
    to_url,
    unused_message,
)

RUNS = {"mnist_vae": "mnist_vae", "runs/mine": "saved: mine", "saved: mine": "saved: mine", "a.b-c_2": "a.b-c_2"}
RULES = [  # (kind, default, rules, is the value allowed?)
    ("int", 0, {"lo": 0, "hi": 1_000_000}, lambda v: isinstance(v, int) and 0 <= v <= 1_000_000),
    ("int", 5000, {"choices": [1000, 2000, 5000, 10000]}, lambda v: v in (1000, 2000, 5000, 10000)),
    ("float", 1.0, {"lo": 0.0, "hi": 3.0}, lambda v: isinstance(v, float) and 0.0 <= v <= 3.0),
    ("float", 1.0, {"choices": [0.01, 0.1, 1.0, 10.0]}, lambda v: v in (0.01, 0.1, 1.0, 10.0)),
    ("choice", "equal", {"choices": ["equal", "frequency"]}, lambda v: v in ("equal", "frequency")),
    ("bool", False, {}, lambda v: isinstance(v, bool)),
    ("text", "40712", {"max_chars": 64}, lambda v: isinstance(v, str) and len(v) <= 64),
    ("run", "mnist_vae", {"choices": RUNS}, lambda v: v in RUNS.values()),
]
UNESCAPED = re.compile(r"(?<!\\)[\[<>`]")  # markdown that would turn a quoted value into a link, HTML or code

url_text = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="0123456789.-+eEinfa", max_size=40),  # number-like
    st.from_regex(r"[+-]?[0-9]{1,4000}(\.[0-9]{0,5})?", fullmatch=True),  # up to 4,000 digits
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e999", "-0", "1_000", "٣", " 7 ", "", "../../etc", "runs/mine",
                     "runs/../x", "/etc/passwd", "a\\b", "x" * 10_000, "[x](javascript:alert(1))", "<b>x</b>"]),
    st.builds(lambda s: s * 150, st.text(min_size=1, max_size=5)),  # long repetitions
)


@pytest.mark.parametrize("kind,default,rules,allowed", RULES, ids=[f"{r[0]}-{i}" for i, r in enumerate(RULES)])
@settings(max_examples=150, deadline=None)
@given(raw=url_text)
def test_any_string_gives_a_valid_value_or_a_message(kind, default, rules, allowed, raw):
    value, message = check("param_key", raw, kind, default, **rules)
    assert allowed(value), (raw, value)
    if message is None:
        return
    assert "param_key" in message and "\n" not in message and len(message) < 600, message
    assert not UNESCAPED.search(message), message
    shown = shorten(raw)
    assert shown in message  # the value given, quoted (and cut to 40 characters with its length)
    assert "instead" in message  # and the value used


@given(raw=url_text)
@settings(max_examples=200, deadline=None)
def test_a_valid_value_is_used_silently_and_an_invalid_one_never_silently(raw):
    """int in [0, 100]: a message exactly when the string is not the decimal integer that is used."""
    value, message = check("seed", raw, "int", 7, lo=0, hi=100)
    s = raw.strip()
    plain = re.fullmatch(r"[+-]?[0-9]+(\.0*)?", s) is not None and len(s) <= 32
    if message is None:
        assert plain and int(s.split(".")[0]) == value
    else:
        assert value == 7 or (plain and value == min(max(int(s.split(".")[0]), 0), 100))


@given(raws=st.lists(url_text, max_size=40))
@settings(max_examples=100, deadline=None)
def test_repeated_parameters_keep_the_good_values(raws):
    value, message = check("run", raws, "run", ["mnist_vae"], choices=RUNS, many=True)
    assert isinstance(value, list) and value and all(v in RUNS.values() for v in value)
    assert len(value) == len(set(value))
    good = [RUNS[r] for r in raws[:MAX_MANY] if r in RUNS]
    if good:
        assert value == list(dict.fromkeys(good))
    if len(raws) <= MAX_MANY:
        assert (message is None) == all(r in RUNS for r in raws)


@given(key=st.text(max_size=500), raw=st.text(max_size=500))
@settings(max_examples=100, deadline=None)
def test_unused_parameter_message_is_short_and_plain(key, raw):
    msg = unused_message(key, raw)
    assert len(msg) < 300 and "\n" not in msg and not UNESCAPED.search(msg)


@given(v=st.integers(0, 1_000_000))
def test_ints_round_trip(v):
    assert check("seed", to_url(v), "int", 0, lo=0, hi=1_000_000) == (v, None)


@given(v=st.floats(0.0, 3.0))
def test_floats_round_trip_at_url_precision(v):
    assert check("tau", to_url(v), "float", 1.0, lo=0.0, hi=3.0) == (float(to_url(v)), None)


@given(name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True))
def test_run_ids_round_trip_and_path_like_names_never_reach_a_run(name):
    runs = {name: f"label of {name}", f"runs/{name}": f"saved: {name}"}
    if ".." not in name:
        assert check("run", name, "run", "x", choices=runs) == (f"label of {name}", None)
        assert check("run", f"runs/{name}", "run", "x", choices=runs) == (f"saved: {name}", None)
    for bad in (f"../{name}", f"{name}/..", f"runs/{name}/x", f"/{name}", f"{name}\\x", "a" * 101 + name):
        value, message = check("run", bad, "run", "x", choices=runs | {bad: "reached"})
        assert value == "x" and "is not a run name" in message


@pytest.mark.parametrize("raw,kind,rules,value,says", [
    ("-1", "float", {"lo": 0.0, "hi": 3.0}, 0.0, "is below the smallest allowed value 0; using 0 instead"),
    ("abc", "float", {"lo": 0.0}, 1.0, "'abc' is not a number; using 1 instead"),
    ("nan", "float", {}, 1.0, "'nan' is not a number"),
    ("1e999", "float", {}, 1.0, "'1e999' is not a finite number"),
    ("9" * 3000, "int", {}, 1, "(3,000 characters) is too long to be a number; using 1 instead"),
    ("2", "float", {"choices": [2.5, 5.0, 10.0]}, 1.0, "'2' is not one of 2.5, 5, 10; using 1 instead"),
    ("rare", "choice", {"choices": ["equal", "frequency"]}, "equal", "is not one of equal, frequency"),
    ("x" * 10_000, "text", {"max_chars": 64}, "40712", "(10,000 characters) is longer than 64 characters"),
    ("nope", "run", {"choices": RUNS}, "mnist_vae", "No run named 'nope' (URL parameter k); using mnist_vae"),
    ("../../etc", "run", {"choices": RUNS}, "mnist_vae", "'../../etc' is not a run name"),
])
def test_messages_name_the_parameter_the_value_and_what_is_used(raw, kind, rules, value, says):
    default = {"float": 1.0, "int": 1, "choice": "equal", "text": "40712", "run": "mnist_vae"}[kind]
    got, message = check("k", raw, kind, default, **rules)
    assert got == value and says in message and ("URL parameter k" in message)
    if kind == "float" and value != 0.0:
        assert math.isfinite(got)


def test_absent_parameters_are_the_default_without_a_word():
    assert check("k", None, "int", 3) == (3, None)
    assert check("k", [], "run", ["a"], choices=["a"], many=True) == (["a"], None)
    with pytest.raises(ValueError):
        check("k", "1", "complex", 0)  # a page's own mistake, not a URL's
