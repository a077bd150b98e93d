"""The Home page's lessons: at least six, each a link to a page in a state that page accepts as it is (no URL
warning, no error, no exception) on the shipped runs, with what to look at and a question."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from _apptest import texts
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pages._lessons import LESSONS  # noqa: E402

TOPICS = ("σ", "rate-distortion", "imbalance", "rare combinations", "collapse", "strategy", "traversals")


@pytest.fixture(autouse=True)
def shipped_runs_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CVAE_CHECKPOINTS_DIR", raising=False)


def test_six_lessons_cover_the_topics_with_three_sentences_and_a_question():
    assert len(LESSONS) >= len(TOPICS) >= 6
    for topic, lesson in zip(TOPICS, LESSONS, strict=False):
        assert topic.lower() in lesson.title.lower(), (topic, lesson.title)
        assert lesson.look.count(". ") + 1 == 3 and lesson.look.endswith(".")
        assert lesson.question.endswith("?")


@pytest.mark.parametrize("lesson", LESSONS, ids=[lesson.title[:30] for lesson in LESSONS])
def test_each_lesson_opens_its_page_in_its_state_without_a_warning(lesson):
    page, _, query = lesson.link.partition("?")
    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=180)
    params = dict(parse_qsl(query))
    at.query_params.update(params)
    at.run()
    url_lines = [w for w in at.warning if w.icon == ":material/link_off:"]  # (other warnings are the page's content)
    assert not at.exception and not at.error and not url_lines, texts([*at.error, *url_lines])
    for key, value in params.items():  # the page kept the lesson's state in its URL
        assert at.query_params[key] == value, (key, at.query_params.get(key))


def test_the_home_page_shows_the_lessons_with_links_in_their_state():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert not at.exception
    assert "Lessons for a class" in [h.value for h in at.header]
    links = sorted(link.proto.query_string for link in at.get("page_link"))
    assert links == sorted(lesson.link.partition("?")[2].replace(",", "%2C") for lesson in LESSONS)


def test_the_home_script_alone_falls_back_to_plain_links():
    """Run without app.py's navigation (as the Home tests do), a lesson is a plain link to the same state."""
    at = AppTest.from_file(str(REPO / "pages" / "home.py"), default_timeout=120).run()
    assert not at.exception
    shown = texts(at.markdown)
    assert all(f"[Open the page in this state]({lesson.link})" in shown for lesson in LESSONS)
