"""Page state in the URL: the one mechanism every page uses, so a link reproduces the view.

A page declares each URL parameter with a kind and its rules and reads it through ``restore`` (a widget's first value
of a page view) or ``param`` (a value without a widget); after its widgets it writes the view back with ``publish``.
A parameter that is present but invalid (not a number, NaN or infinite, 3,000 digits, out of range, not one of the
choices, an unknown run, a path-like run name, 10 kB of text) is never an exception and never a silent reset: the
page shows one line naming the parameter, the value given (shortened) and the value used instead.

``check`` is the pure part (no Streamlit; property-tested in tests/app/test_url.py): any URL value in, a valid value
and at most one message out.

Widgets are not bound with ``bind="query-params"``: Streamlit 1.67 drops an invalid bound value without a word, and an
infinite or 3,000-digit value for a bound integer ``number_input`` raises OverflowError before the page can react.
The Train page's model-option widgets (``_widgets.field_widget``) start from ``restore`` like every other widget.

Kinds: ``int``, ``float`` (finite decimals; ``lo``/``hi`` inclusive bounds, clamped; numeric ``choices``), ``choice``
(one of ``choices``), ``bool`` (true/false), ``text`` (at most ``max_chars``), ``run`` (a run id: a folder name, or
``runs/NAME`` for a saved run; ``choices`` maps every accepted spelling to the value used). With ``many=True`` a
repeated parameter (``?run=a&run=b``) gives a list.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

KINDS = ("int", "float", "choice", "bool", "text", "run")
MAX_NUMBER = 32  # characters of a number in a URL; longer is not a number anyone typed
MAX_RUN = 100  # characters of a run name
MAX_MANY = 32  # values of a repeated parameter
SHOWN = 40  # characters of a bad value quoted back
_INT = re.compile(r"[+-]?[0-9]+(\.0*)?")
_FLOAT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_SAVED_ID = re.compile(r"runs/[^/]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MARKDOWN = re.compile(r"([\\`*\[\]<>$~|#:{}])")  # st.warning renders markdown: a quoted value stays plain text
# ('_' is left alone: run names are full of them, and inside a word it never starts emphasis)


class Checked(NamedTuple):
    value: Any  # the value to use
    message: str | None  # one line when the URL's value was not used as given


def shorten(text: str, limit: int = SHOWN) -> str:
    """`text` quoted for a message: repr'd (so control characters show as escapes), cut to about `limit` characters
    with its length when longer, markdown escaped."""
    if len(repr(text)) <= limit + 2:
        return _MARKDOWN.sub(r"\\\1", repr(text))
    n = min(len(text), limit - 8)
    while n and len(repr(text[:n])) > limit - 6:  # escapes such as \U0001dab0 count as what they show
        n -= 1
    return _MARKDOWN.sub(r"\\\1", repr(text[:n] + "…")) + f" ({len(text):,} characters)"


def show(value: Any) -> str:
    """A value as a message shows it: numbers with %g, lists joined, None as 'nothing'."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(show(v) for v in value) or "nothing"
    value = str(value)
    return shorten(value, MAX_RUN) if len(value) > MAX_RUN or _CONTROL.search(value) else plain(value)


def plain(text: str) -> str:
    """`text` with its markdown escaped and control characters as spaces, for a message line."""
    return _MARKDOWN.sub(r"\\\1", _CONTROL.sub(" ", text))


def _listing(choices: Iterable) -> str:
    items = [show(c) for c in choices]
    return ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")


def _one(raw: str, kind: str, *, lo, hi, choices, max_chars: int) -> tuple[Any, str | None, bool]:
    """(value, problem, clamped) for one URL value: problem None when it is valid as given; a clamped value is
    used instead of the default."""
    if kind == "text":
        if len(raw) > max_chars:
            return None, f"is longer than {max_chars} characters", False
        if _CONTROL.search(raw):
            return None, "contains control characters", False
        return raw, None, False
    s = raw.strip()
    if kind == "bool":
        return ({"true": True, "false": False}[s.lower()], None, False) if s.lower() in ("true", "false") else \
            (None, "is not true or false", False)
    if kind == "run":
        if len(raw) > MAX_RUN:
            return None, f"is not a run name (longer than {MAX_RUN} characters)", False
        if "\\" in raw or ".." in raw or _CONTROL.search(raw) or ("/" in raw and not _SAVED_ID.fullmatch(raw)):
            return None, "is not a run name (a folder name, or runs/NAME for a saved run)", False
        if raw not in choices:
            return None, "unknown", False
        return choices[raw], None, False
    if kind == "choice":
        if raw not in choices:
            return None, f"is not one of {_listing(choices)}", False
        return raw, None, False
    # numbers
    if len(s) > MAX_NUMBER:
        return None, "is too long to be a number", False
    if kind == "int":
        if not _INT.fullmatch(s):
            return None, "is not a whole number", False
        v: float = int(s.split(".")[0])
    else:
        if not _FLOAT.fullmatch(s):
            return None, "is not a number", False
        v = float(s)
        if not math.isfinite(v):
            return None, "is not a finite number", False
    if choices is not None:
        hit = next((c for c in choices if math.isclose(c, v, rel_tol=1e-9, abs_tol=1e-12)), None)
        return (hit, None, False) if hit is not None else (None, f"is not one of {_listing(choices)}", False)
    cast = int if kind == "int" else float
    if lo is not None and v < lo:
        return cast(lo), f"is below the smallest allowed value {show(lo)}", True
    if hi is not None and v > hi:
        return cast(hi), f"is above the largest allowed value {show(hi)}", True
    return v, None, False


def check(key: str, raw: str | Sequence[str] | None, kind: str, default: Any, *, lo: float | None = None,
          hi: float | None = None, choices: Iterable | Mapping | None = None, max_chars: int = 200,
          many: bool = False, noun: str = "run") -> Checked:
    """The value to use for URL parameter `key` given its raw value(s) (None: absent), and a message when the URL's
    value was not used as given. Never raises for any `raw`.

    Malformed values (not a number, NaN, too long, not a choice, unknown or path-like run) give `default`; a number
    outside ``[lo, hi]`` gives the nearest bound. `choices` (kind ``run``: a mapping from every accepted spelling to
    the value used) restricts the value. With `many`, `raw` is a list: each value is checked, the bad ones left out,
    and `default` is used when none is left."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (got {kind!r})")
    if kind == "run":
        choices = choices if isinstance(choices, Mapping) else {c: c for c in (choices or ())}
    elif kind == "choice" or choices is not None:
        choices = list(choices or ())
    if raw is None or (not isinstance(raw, str) and not raw):
        return Checked(default, None)
    values = ([raw] if isinstance(raw, str) else list(raw)) if many else [raw if isinstance(raw, str) else raw[-1]]
    good, notes = [], []
    for i, r in enumerate(values):
        r = str(r)
        if i >= MAX_MANY:
            notes.append(f"URL parameter {key}: {len(values) - MAX_MANY:,} more values left out (at most {MAX_MANY}).")
            break
        v, problem, clamped = _one(r, kind, lo=lo, hi=hi, choices=choices, max_chars=max_chars)
        if (problem is None or clamped) and v not in good:
            good.append(v)
        if problem is None:
            continue
        if clamped:
            using = f"using {show(v)} instead"
        else:
            using = "left out" if many else f"using {show(default)} instead"
        if problem == "unknown":
            notes.append(f"No {noun} named {shorten(r)} (URL parameter {key}); {using}.")
        else:
            notes.append(f"URL parameter {key}: {shorten(r)} {problem}; {using}.")
    if many:
        value = good or default
        if not good and notes:
            notes.append(f"Using {show(default)} for {key}.")
    else:
        value = good[0] if good else default
    return Checked(value, " ".join(notes) or None)


def unused_message(key: str, raw: str, why: str = "is not used on this page") -> str:
    """A URL parameter the page does not read (here, or in this view: `why`)."""
    return f"URL parameter {shorten(key, 30)} {why}; ignored (its value: {shorten(raw)})."


def to_url(value: Any) -> str | list[str]:
    """How the URL writes a value: numbers with %g (5.0 -> '5'), bools true/false, lists as repeated values."""
    if isinstance(value, (list, tuple)):
        return [to_url(v) for v in value]
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ------------------------------------------------------------------ the Streamlit side
def _st():
    import streamlit as st  # here, so that the pure functions above import without Streamlit

    return st


VIEW, FRESH, HELD = "_url_view", "_url_fresh", "_url_held"


def start(page: str, known: Iterable[str] = (), prefixes: Iterable[str] = ()) -> None:
    """Call at the top of a page (after its title). Marks the first run of a page view (a new session, or arriving
    from another page), when widgets take their values from the URL; then warns once about URL parameters the page
    does not read (`known` names, or names starting with one of `prefixes`) and drops them from the URL."""
    st = _st()
    fresh = st.session_state.get(VIEW) != page
    st.session_state[VIEW], st.session_state[FRESH] = page, fresh
    if not fresh:
        return
    st.session_state[HELD] = set()
    known, prefixes = set(known), tuple(prefixes)
    for key in list(st.query_params):
        if key not in known and not key.startswith(prefixes):
            st.warning(unused_message(key, st.query_params[key]), icon=":material/link_off:")
            _drop(key)


def _drop(key: str) -> None:
    """Remove a parameter from the URL (a parameter still bound to a widget stays)."""
    from streamlit.errors import StreamlitAPIException

    try:
        _st().query_params.pop(key, None)
    except StreamlitAPIException:
        pass


def browser_sent(key: str) -> bool:
    """Whether the browser sent widget `key`'s value with the request that started this run: then it shows the
    value it sent. Read from Streamlit's internals (pinned in requirements.txt; checked by
    tests/app/test_url_state.py); True where they cannot tell, so that ``restore`` never re-sends without end."""
    try:
        from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

        state = get_script_run_ctx().session_state._state
        widget_id = state._key_id_mapper.get_id_from_key(key)
        return widget_id is not None and widget_id in state._new_widget_state.states
    except Exception:  # noqa: BLE001 - internals of another Streamlit version: treat the value as sent
        return True


def fresh() -> bool:
    """Whether this run is the first of a page view (see ``start``)."""
    return bool(_st().session_state.get(FRESH, True))


def given(prefix: str = "") -> dict[str, str]:
    """The URL's parameters as given (the last value of each), those whose names start with `prefix`."""
    qp = _st().query_params
    return {k: qp[k] for k in qp if k.startswith(prefix)}


def _raw(key: str, many: bool) -> str | list[str] | None:
    qp = _st().query_params
    if key not in qp:
        return None
    return qp.get_all(key) if many else qp[key]


def param(key: str, kind: str, default: Any, *, level: str = "warning", **rules) -> Any:
    """The value URL parameter `key` asks for, checked (see ``check``); a present but invalid value shows one line
    (`level`: "warning", or "error" where the page cannot show what the link meant) and gives the value used."""
    value, message = check(key, _raw(key, rules.get("many", False)), kind, default, **rules)
    if message:
        getattr(_st(), level)(message, icon=":material/link_off:")
    return value


def _still_valid(value: Any, kind: str, rules: dict) -> bool:
    choices = rules.get("choices")
    if choices is None:
        return True
    allowed = set(choices.values()) if isinstance(choices, Mapping) else list(choices)
    return all(v in allowed for v in value) if rules.get("many") else value in allowed


def restore(key: str, kind: str, default: Any, *, url_key: str | None = None, **rules) -> Any:
    """Give widget `key` its value before it is drawn: from URL parameter `url_key` (default: `key`; checked, see
    ``param``) on the first run of a page view, after ``reset``, or when its value is no longer allowed (a run that
    vanished); otherwise the widget keeps the value it has. Widgets restored this way take no ``value=``/``index=``
    of their own."""
    st = _st()
    if fresh() or key not in st.session_state or not _still_valid(st.session_state[key], kind, rules):
        st.session_state[key] = param(url_key or key, kind, default, **rules)
    elif key not in st.session_state.setdefault(HELD, set()):
        # Until the browser has sent this widget's value back once, set it again (the same value): Streamlit then
        # sends the value with the widget on this run too. A click during the page's first run (Start pressed before
        # the page had drawn) starts a run whose request lacks the widgets the browser had not yet drawn, and the
        # browser then showed each at its minimum (latent dim 1, steps 1) while the server held the real values.
        # Not after that: a value sent on every run overwrote keys pressed on a slider while the page reran for the
        # previous press (20 presses moved it 2 steps). "Until the page had run to its end once" was not enough
        # either: the browser can still lack the widgets of a run that ended on the server.
        if browser_sent(key):
            st.session_state[HELD].add(key)
        else:
            st.session_state[key] = st.session_state[key]
    return st.session_state[key]


def reset(*keys: str) -> None:
    """A widget callback: forget these keys (state and URL), so they start again from their defaults."""
    st = _st()
    for k in keys:
        st.session_state.pop(k, None)
        _drop(k)


def publish(values: Mapping[str, Any]) -> None:
    """Write the view to the URL: each key set to its value (``to_url``), or removed when the value is None. Other
    parameters (the Train page's bound model options) are left alone."""
    qp = _st().query_params
    changed = {}
    for key, value in values.items():
        if value is None:
            if key in qp:
                _drop(key)
            continue
        want = to_url(value)
        have = qp.get_all(key)
        if have != (want if isinstance(want, list) else [want]):
            changed[key] = want
    if changed:
        qp.update(changed)
