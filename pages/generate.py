"""Generate page: samples of one run from fixed noise, with β and ν sliders that snap to the shipped (and saved) sweeps
and answer at once, τ and the class or attribute controls, a KL-ordered latent traversal, an interpolation between
two test images, and a PNG download of each picture. The whole view lives in the URL."""

import streamlit as st

from cvae_core.errors import LabError
from pages import _gen, _jobs, _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Generate")
st.caption("Move β, ν or τ and watch the same noise decoded by another model or at another scale. The β and ν "
           "sliders step through runs trained in advance (the shipped sweeps), so every move answers at once; "
           "**Train exactly** trains any other value in the background.")
_url.start("generate", _gen.URL_KEYS)
ch = _gen.choices()
if not ch.runs:
    st.info("There is no image run to draw from: train and save one on the **Train** page.")
    st.stop()
if _url.fresh() or "gen_family" not in st.session_state:
    _gen.from_url(ch)
_gen.apply_pending()
families = [f for f in _gen.FAMILIES if f == "any" or ch.sweep(f)]
entry = _gen.selected(ch)
family = st.session_state["gen_family"]
nu = family == "nu"
sym = "ν" if nu else "β"

c1, c2, c3 = st.columns([1.7, 2.6, 1], vertical_alignment="bottom")
c1.selectbox("Family", families, key="gen_family", format_func=_gen.FAMILIES.get, on_change=_gen.on_family,
             help="a β sweep (the same MLP on MNIST trained at β = 0.01 … 100), the ct3vae ν sweep, or any run")
if family == "any":
    c2.selectbox("Run", list(ch.runs), key="gen_run", format_func=lambda i: ch.runs[i].label,
                 help="shipped runs by folder name, your saved runs as saved: NAME")
else:
    sweep = ch.sweep(family)
    c2.select_slider(f"{sym} ({'Student-t degrees of freedom' if nu else 'KL weight'}): snaps to the trained runs",
                     list(sweep), key="gen_value", format_func=lambda v: f"{v:g}",
                     help="each notch is a run trained at that value; small ν: heavy tails, large ν: Gaussian" if nu
                     else "each notch is a run trained at that β; small β: sharp but an irregular latent space")

try:
    model, info, data = _gen.load(entry)
except LabError as e:
    st.error(str(e))
    st.stop()
if family != "any":
    with c3.popover(f"Train {sym} exactly", icon=":material/model_training:", width="stretch"):
        _gen.train_form(family, entry, st.session_state["gen_value"], info, data)
value = (info.get("config") or {}).get("nu" if nu else "beta")
st.markdown(f"On show: **{_url.plain(entry.label)}**, {info['model']} trained at {sym} = "
            f"**{value:g}**" if isinstance(value, (int, float)) else f"On show: **{_url.plain(entry.label)}** "
            f"({info['model']})")
if "gen_message" in st.session_state:  # shown once, after the job ended
    kind, text = st.session_state.pop("gen_message")
    getattr(st, kind)(text)
if "gen_job" in st.session_state:
    _jobs.job_progress("gen_job", _gen.job_ended)

# ------------------------------------------------------------------ sampling controls
tau0 = float(model.default_tau)
_url.restore("gen_tau", "float", 1.0, url_key="tau", lo=0.0, hi=_gen.TAU_MAX)
_url.restore("gen_seed", "int", 0, url_key="seed", lo=0, hi=1_000_000)
n_test = len(data.x_test)
k = model.config.num_classes
y_options = ([_gen.ALL] if model.class_conditional else []) + [str(c) for c in range(k)]
_gen.keep_in_range(y_options, n_test)  # after a run switch: a class or image index the new run does not have
_url.restore("gen_a", "int", 0, url_key="a", lo=0, hi=n_test - 1)
_url.restore("gen_b", "int", 1, url_key="b", lo=0, hi=n_test - 1)
if model.conditional:
    _url.restore("gen_y", "choice", _gen.default_class(y_options), url_key="y", choices=y_options)
    if model.config.condition == "attributes":
        for a in _gen.ATTRS:
            _url.restore(f"gen_{a}", "float", _gen.PRESET[a], url_key=a, lo=0.0, hi=1.0)
elif _url.fresh():
    for key in ("y", *_gen.ATTRS):
        if key in st.query_params:
            st.warning(_url.unused_message(key, st.query_params[key], f"is not used by {entry.label} (unconditional)"),
                       icon=":material/link_off:")

d = st.columns([2.2, 1, 1.2], vertical_alignment="bottom")
tau_rel = d[0].slider("τ / τ₀ (sampling scale)", 0.0, _gen.TAU_MAX, step=0.05, key="gen_tau",
                      help=f"z = prior mean + τ · prior spread · noise; τ₀ = {tau0:.3g} is this run's own scale "
                           "(1 for a Gaussian prior, the theoretical τ for a Student-t one). 0: the prior's mean")
seed = d[1].number_input("Noise seed", 0, 1_000_000, key="gen_seed", help="the same seed gives the same noise")
y = _gen.ALL
attrs: tuple[float, ...] = ()
if model.conditional:
    y = d[2].selectbox("Digit" if model.config.condition == "attributes" else "Class", y_options, key="gen_y",
                       format_func=lambda v: "one row per class" if v == _gen.ALL else _gen.class_label(data, v))
    if model.config.condition == "attributes":
        cols = st.columns(len(_gen.ATTRS))
        attrs = tuple(float(col.slider(f"{a} (0 → 1)", 0.0, 1.0, step=0.05, key=f"gen_{a}"))
                      for col, a in zip(cols, _gen.ATTRS, strict=True))
tau = tau_rel * tau0

# ------------------------------------------------------------------ the pictures
left, right = st.columns(2, gap="large")
with left:
    st.subheader("Samples from fixed noise")
    png, what = _gen.samples_png(entry.key, int(seed), tau, y, attrs, model)
    st.image(png, width="stretch", output_format="PNG",
             caption=f"{what}; τ = {tau:.3g} ({tau_rel:g} τ₀), noise seed {seed}")
    st.download_button("Download PNG", png, file_name=f"{entry.name}_samples_tau{tau_rel:g}_seed{seed}.png",
                       mime="image/png", key="dl_samples", on_click="ignore", icon=":material/download:")
stats = _gen.stats(entry.key, model, data)  # cached per run, as is everything drawn below
a, b = int(st.session_state["gen_a"]), int(st.session_state["gen_b"])
with right:
    st.subheader("Latent traversal")
    png, dims = _gen.traversal_png(entry.key, a, model, data)
    by = "average KL per dimension, nats" if stats.by == "KL" else "variance of the encoder means (KL does not " \
        "split by dimension for this prior)"
    st.image(png, width="stretch", output_format="PNG",
             caption=f"each row moves one latent dimension of test image {a}'s code from −3 to +3 spreads; rows: "
             f"dimensions {', '.join(str(x) for x in dims)}, most informative first ({by}: "
             + ", ".join(f"{v:.2f}" for v in stats.score[: len(dims)]) + ")")
    st.download_button("Download PNG", png, file_name=f"{entry.name}_traversal_image{a}.png", mime="image/png",
                       key="dl_traversal", on_click="ignore", icon=":material/download:")

st.subheader("Interpolation between two test images")
e1, e2, e3 = st.columns([1, 1, 4], vertical_alignment="bottom")
e1.number_input("Test image A", 0, n_test - 1, key="gen_a")
e2.number_input("Test image B", 0, n_test - 1, key="gen_b")
png = _gen.interpolation_png(entry.key, a, b, model, data)
st.image(png, width="stretch", output_format="PNG",
         caption="top: decoded along the straight line between the two codes (encoder means); "
         "bottom: the same steps blended in pixels. "
         + ("A conditional run decodes each step with the nearer image's condition." if model.conditional else ""))
st.download_button("Download PNG", png, file_name=f"{entry.name}_interpolation_{a}_{b}.png", mime="image/png",
                   key="dl_interp", on_click="ignore", icon=":material/download:")

_url.publish({"family": family, "run": entry.id if family == "any" else None,
              "beta": st.session_state.get("gen_value") if family in _gen.BETA_TAGS else None,
              "nu": st.session_state.get("gen_value") if nu else None, "tau": tau_rel, "seed": int(seed),
              "y": y if model.conditional else None, "a": a, "b": b,
              **{name: (attrs[i] if attrs else None) for i, name in enumerate(_gen.ATTRS)}})

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **Samples.** Each cell decodes one fixed noise vector ε: $z = \\mu_p + \\tau\\,\\sigma_p\\,\\varepsilon$ "
        "(a Student-t prior also scales ε by its chi-square draw), $x = \\text{decoder}(z)$, the decoder's mean image. "
        "The noise depends only on the seed, so moving β or ν shows what *another model* makes of the same ε, and "
        "moving τ what the same model makes of ε scaled.\n"
        "- **β** weighs the KL term: the loss is $-\\mathbb{E}_q[\\log p(x\\mid z)] + \\beta\\,"
        "\\mathrm{KL}(q(z\\mid x)\\,\\|\\,p(z))$. Small β: sharp reconstructions, but samples from the prior fall "
        "where no image was encoded. Large β: smooth, blurry, finally the same image everywhere (collapse).\n"
        "- **ν** is the Student-t prior's degrees of freedom: small ν gives heavy tails, ν → ∞ the Gaussian.\n"
        "- **Traversal.** Each row changes one latent dimension of one image's code, the others held; rows are "
        "ordered by the average $\\mathrm{KL}(q(z_d\\mid x)\\,\\|\\,p(z_d))$ over 1,000 test images (the "
        "information that dimension carries). A row that does not change is an inactive dimension.\n"
        "- **Interpolation.** The top row decodes $z_t = (1-t)\\,z_A + t\\,z_B$; the bottom row blends the pixels. "
        "Where the top row stays digit-like and the bottom row is a double exposure, the latent space has learned "
        "something about digits that pixel space does not know.")
