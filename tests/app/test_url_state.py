"""``pages/_url.restore`` re-sends a widget's value until the browser has sent it back once (``browser_sent``). This
reads Streamlit internals, so it is checked here against the pinned Streamlit with AppTest, which sends every
widget's value with each rerun as a browser does."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from pages import _url

    _url.start("probe", known=("m",))
    st.session_state.setdefault("log", []).append(_url.browser_sent("m"))
    m = _url.restore("m", "int", 16, lo=1, hi=64)
    st.number_input("Latent dim m", min_value=1, max_value=64, key="m")
    st.session_state["shown"] = m


def test_browser_sent_tells_whether_the_widget_value_came_with_the_request():
    at = AppTest.from_function(_script, default_timeout=30)
    at.query_params["m"] = "24"
    at.run()
    # the first run: no widget yet, nothing sent; the value comes from the URL (not the default 16 nor the min 1)
    assert at.session_state["log"] == [False]
    assert at.number_input[0].value == 24
    at.run()  # AppTest sends the widget's value with the rerun, as the browser does once it has drawn it
    assert at.session_state["log"] == [False, True]
    assert at.number_input[0].value == 24
    at.number_input[0].set_value(30).run()
    assert at.session_state["log"] == [False, True, True]
    assert at.number_input[0].value == 30 and at.session_state["shown"] == 30
    assert "m" in at.session_state["_url_held"]  # from now on the value is never re-sent (key presses are kept)


def test_a_key_never_bound_to_a_widget_is_not_sent():
    def script():
        import streamlit as st

        from pages import _url

        st.session_state["sent"] = _url.browser_sent("nothing-here")

    at = AppTest.from_function(script, default_timeout=30).run()
    assert at.session_state["sent"] is False


def test_where_the_internals_cannot_tell_the_value_counts_as_sent():
    # outside a script run there is no run context: the same path as another Streamlit's internals, and restore
    # must then hold the value (True) rather than re-send it on every run
    from pages import _url

    assert _url.browser_sent("m") is True
