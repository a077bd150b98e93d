"""What the lab exposes (issue 19, "Exposure"; docs/serving.md): the server binds to localhost with XSRF and CORS
protection, a host allow-list and a small upload cap (.streamlit/config.toml, read here and by a real
``streamlit run``); no page renders text as HTML (an AST check of app.py and pages/, with a self-test on made-up
source); and run folders whose names carry markup, under a runs root anyone could write to, are one problem line on
the pages that list runs, never a label, an option or raw HTML."""

from __future__ import annotations

import ast
import socket
import sys
import tomllib
from pathlib import Path

import pytest
from _apptest import open_page, texts
from streamlit import config as st_config

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _server import running_server  # noqa: E402  (bench/_server.py)

from cvae_core.registry import build_model  # noqa: E402
from cvae_core.runs import catalog  # noqa: E402
from cvae_core.runs.folder import save_run  # noqa: E402
from pages import _balance  # noqa: E402

CONFIG = REPO / ".streamlit" / "config.toml"
LOCAL = {"localhost", "127.0.0.1", "::1"}
MAX_UPLOAD_MB = 16  # the lab uploads nothing; a larger cap needs a reason (and a line in docs/serving.md)
SOURCES = [REPO / "app.py", *sorted((REPO / "pages").glob("*.py"))]


# ------------------------------------------------------------------ .streamlit/config.toml
@pytest.fixture(scope="module")
def cfg() -> dict:
    return tomllib.loads(CONFIG.read_text(encoding="utf-8"))


def test_config_binds_to_localhost_with_xsrf_cors_hosts_and_an_upload_cap(cfg):
    server = cfg["server"]
    assert server["address"] in LOCAL
    assert server["enableXsrfProtection"] is True and server["enableCORS"] is True
    assert set(server["allowedHosts"]) and set(server["allowedHosts"]) <= LOCAL
    assert 0 < server["maxUploadSize"] <= MAX_UPLOAD_MB
    assert server.get("maxMessageSize", 200) <= 200  # never above Streamlit's default


def test_every_configured_option_exists_in_the_installed_streamlit(cfg):
    """Streamlit ignores an option it does not know (a typo, or one a new version renamed) with a log line only."""
    known = set(st_config.get_config_options())
    given = {f"{section}.{key}" for section, options in cfg.items() for key in options}
    assert given - known == set()


def test_the_class_balance_swatches_are_the_colours_of_their_bars(cfg):
    """The page's run headings colour their swatch with markdown colours (no HTML); the theme makes those colours
    the bars' colours."""
    assert _balance.SWATCHES == (":primary[■]", ":orange[■]")
    assert cfg["theme"]["primaryColor"].upper() == _balance.MAIN_COLOR.upper()
    assert cfg["theme"]["orangeTextColor"].upper() == _balance.OTHER_COLOR.upper()


def test_nothing_overrides_the_address_and_nothing_is_uploaded():
    make_run = (REPO / "Makefile").read_text().split("\nrun:")[1].split("\n\n")[0]
    assert "streamlit run" in make_run and "address" not in make_run
    assert "0.0.0.0" not in (REPO / "README.md").read_text(encoding="utf-8")
    uploads = [p.name for p in SOURCES if "file_uploader" in p.read_text(encoding="utf-8")]
    assert uploads == [], f"{uploads} upload files now: check server.maxUploadSize and docs/serving.md"


# ------------------------------------------------------------------ no text rendered as HTML
HTML_CALLS = {"html", "iframe"}  # st.html, st.components.v1.html / iframe


def html_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every place in `source` that can render a string as HTML: an ``unsafe_allow_html`` that is not the constant
    False (as a keyword, or as a string anywhere, e.g. in a ``**kwargs`` dict), a call of ``.html``/``.iframe``
    (``st.html``, ``components.html``) or of a name imported from ``streamlit.components``, and any import of
    ``streamlit.components``."""
    found = []
    where = lambda node: f"{filename}:{node.lineno}"  # noqa: E731
    imported = set()
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streamlit.components") or \
                isinstance(node, ast.ImportFrom) and node.module == "streamlit" and \
                any(a.name == "components" for a in node.names) or \
                isinstance(node, ast.Import) and any(a.name.startswith("streamlit.components") for a in node.names):
            found.append(f"{where(node)}: imports streamlit.components")
            imported |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "unsafe_allow_html":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{where(node.value)}: unsafe_allow_html={ast.unparse(node.value)}")
        elif isinstance(node, ast.Constant) and node.value == "unsafe_allow_html":
            found.append(f"{where(node)}: 'unsafe_allow_html' as a string")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in HTML_CALLS or isinstance(f, ast.Name) and f.id in imported:
                found.append(f"{where(node)}: {ast.unparse(f)}(...)")
    return found


def test_html_check_flags_made_up_regressions():
    bad = {
        "st.markdown(f'<b>{name}</b>', unsafe_allow_html=True)": "unsafe_allow_html=True",
        "st.caption(text, unsafe_allow_html=flag)": "unsafe_allow_html=flag",
        "st.markdown(text, **{'unsafe_allow_html': True})": "as a string",
        "st.html(f'<p>{name}</p>')": "st.html(...)",
        "import streamlit.components.v1 as components\ncomponents.html(page)": "components.html(...)",
        "from streamlit.components.v1 import html\nhtml(page)": "html(...)",
        "from streamlit import components\ncomponents.v1.iframe(url)": "components.v1.iframe(...)",
        "st.sidebar.html(x)": "st.sidebar.html(...)",
    }
    for source, what in bad.items():
        found = html_uses(source)
        assert found and any(what in f for f in found), (source, found)
    for fine in ("st.markdown(f'### {name}')", "st.markdown(x, unsafe_allow_html=False)", "html = 1",
                 "import html\nhtml.escape(x)", "st.write(text)"):
        assert html_uses(fine) == [], fine


def test_no_page_renders_text_as_html():
    found = [f for p in SOURCES for f in html_uses(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))]
    assert found == []


# ------------------------------------------------------------------ run folders with markup in their names
HOSTILE = ["<img src=x onerror=alert(1)>", "[x](javascript:alert(1))", "**bold** ~~x~~ $x$ `code` <b>b",
           "line\n# heading onerror", "saved: javascript:alert(1)"]
# what of those names would be markup (letters alone are not: a problem line may show them, with '?' for the rest)
MARKERS = ("<img", "<b>", "](javascript", "javascript:alert", "alert(1)", "**bold**", "~~x~~", "$x$", "`code`",
           "# heading")
LT = {"name": "mnist-lt", "rho": 100.0, "seed": 0}


@pytest.fixture
def quiet_prefetcher():
    """The Class balance page's prefetcher keeps drawing in the background after a view: drop its queue."""
    yield
    _balance.prefetcher().close()


@pytest.fixture
def hostile_roots(lab_dirs):
    """A shipped and a saved mnist-lt run with ordinary names, and the same run under every hostile name in the
    saved root (small untrained MLPs)."""
    runs, ckpt = lab_dirs
    model = build_model("vae", seed=0, arch="mlp", hidden=16, latent_dim=2).eval()
    metrics = {"neg_elbo": -100.0, "rate": 5.0, "distortion": -105.0, "mse": 0.05, "au": 2}
    save_run(ckpt / "mnistlt100_vae", model, dataset=LT, metrics=metrics, history={"step": 10})
    save_run(runs / "kept-run", model, dataset=LT, metrics=metrics, history={"step": 10})
    for name in HOSTILE:
        save_run(runs / name, model, dataset=LT, metrics=metrics, history={"step": 10})
    assert {p.name for p in runs.iterdir()} >= set(HOSTILE)
    return runs, ckpt


def every_proto(at) -> str:
    """The text of every element's protobuf on the page (labels, options, markdown bodies, chart specs)."""
    out, todo = [], [at._tree]
    while todo:
        node = todo.pop()
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        todo.extend(getattr(node, "children", {}).values())
    return "\n".join(out)


def test_catalog_refuses_names_with_markup_in_one_plain_line(hostile_roots):
    runs, ckpt = hostile_roots
    listed, problems = catalog.list_runs([ckpt, runs])
    assert [r.label for r in listed] == ["mnistlt100_vae", "saved: kept-run"]
    assert len(problems) == len(HOSTILE) and all("is not listed" in p and "rename it" in p for p in problems)
    assert not any(m in p for p in problems for m in MARKERS + ("[", "<", "*", "`", "\n"))
    for name in ("mnist_vae", "a", "x.y_z-1", "9" * 95):
        assert catalog.admissible(name)
    for name in (*HOSTILE, "", ".hidden", "-x", "a b", "a/b", "é", "9" * 96, "a\x00"):
        assert not catalog.admissible(name)


@pytest.mark.usefixtures("one_thread", "quiet_prefetcher")
@pytest.mark.parametrize("page", ["pages/home.py", "pages/class_balance.py", "pages/latent_map.py"])
def test_pages_show_hostile_folder_names_as_one_plain_problem_line(hostile_roots, page):
    at = open_page(str(REPO / page), 240)
    assert not at.exception, at.exception
    shown = every_proto(at)
    assert not [m for m in MARKERS if m in shown]
    if page != "pages/latent_map.py":  # the latent map lists what it can open, without the problem lines
        lines = texts(at.warning) + texts(at.error)
        assert lines.count("is not listed") == len(HOSTILE)
    assert "kept-run" in shown and "mnistlt100_vae" in shown  # the runs with ordinary names are still there
    if page == "pages/class_balance.py":  # the run headings: a markdown swatch, the label escaped, no HTML
        assert "### :primary[■] mnistlt100_vae" in texts(at.markdown)
        assert "### :orange[■] saved\\: kept-run" in texts(at.markdown)


# ------------------------------------------------------------------ a real `streamlit run` with the repo's config
def handshake(port: int, host: str, origin: str | None = None) -> int:
    """The HTTP status of a WebSocket upgrade of /_stcore/stream sent with these Host and Origin headers."""
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13"]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(s.recv(1024).split(b"\r\n")[0].split()[1])


def test_streamlit_run_listens_on_loopback_only_and_refuses_other_hosts_and_origins(tmp_path):
    """``streamlit run app.py`` with no address argument (what ``make run`` does) reads .streamlit/config.toml: every
    listening socket is on 127.0.0.1 or ::1, and the WebSocket refuses a foreign Host (DNS rebinding) and a foreign
    Origin (another web site's page). No script runs, so this takes a few seconds."""
    psutil = pytest.importorskip("psutil")
    with running_server(tmp_path / "runs", tmp_path / "server.log", flags=(), timeout=30) as (proc, port):
        listening = {c.laddr.ip for c in psutil.Process(proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening and listening <= {"127.0.0.1", "::1"}, listening
        assert handshake(port, f"localhost:{port}") == 101
        assert handshake(port, f"127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}") == 101
        assert handshake(port, f"evil.example:{port}", origin=f"http://evil.example:{port}") == 403  # rebinding
        assert handshake(port, f"localhost:{port}", origin="http://evil.example") == 403  # another site's page
