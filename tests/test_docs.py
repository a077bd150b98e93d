"""The README stays short, and every relative link or image in README.md and docs/**/*.md points to a file (and, for
a `#fragment` into a markdown file, to a heading) that exists inside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFDEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
_HTML = re.compile(r"""<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are code, not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    body = _prose(text)
    return [m.group(1) for rx in (_INLINE, _REFDEF, _HTML) for m in rx.finditer(body)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup and punctuation dropped, lower case, spaces to hyphens."""
    h = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    h = h.replace("`", "").replace("*", "")
    h = re.sub(r"[^\w\- ]", "", h.strip().lower())
    return h.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for m in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        s = _slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def broken_links(md: Path, root: Path = REPO) -> list[str]:
    bad = []
    for target in links(md.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, fragment = target.partition("#")
        dest = (md.parent / path_part).resolve() if path_part else md.resolve()
        if not dest.is_relative_to(root):
            bad.append(f"{target} (outside the repository)")
        elif not dest.exists():
            bad.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment.lower() not in anchors(dest):
            bad.append(f"{target} (no heading #{fragment} in {dest.relative_to(root)})")
    return bad


def test_readme_is_short():
    n = len((REPO / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}); move detail to docs/"


@pytest.mark.parametrize("md", MARKDOWN, ids=[str(p.relative_to(REPO)) for p in MARKDOWN])
def test_every_relative_link_resolves(md):
    assert broken_links(md) == []


def test_the_link_checker_sees_links_and_ignores_code(tmp_path):
    """The checker itself: inline links, images, reference definitions and HTML are read, code is not; a missing
    file, a missing heading and a path out of the root are each reported, and a good file and heading pass."""
    text = ("# Title\n\n## A `code` heading: yes\n\n[ok](#title) [ok2](#a-code-heading-yes) ![img](docs/x.png)\n"
            "[ref]: docs/y.md\n<img src=\"docs/z.png\">\n`[not](a-link.md)`\n```\n[no](fenced.md)\n```\n"
            "[web](https://example.com/a.md)\n")
    assert links(text) == ["#title", "#a-code-heading-yes", "docs/x.png", "https://example.com/a.md",
                           "docs/y.md", "docs/z.png"]
    assert anchors(REPO / "docs" / "cli.md") >= {"what---json-reports", "the-sequence-cvaes-commands"}
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "page.md").write_text("# Page\n\n## Same\n\n## Same\n")
    probe = root / "probe.md"
    probe.write_text("# Title\n[a](docs/page.md#same-1) [b](#title) [c](nope.md) [d](docs/page.md#gone) [e](../x.md)\n")
    assert broken_links(probe, root) == ["nope.md (no such file)",
                                         "docs/page.md#gone (no heading #gone in docs/page.md)",
                                         "../x.md (outside the repository)"]
