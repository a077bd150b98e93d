"""Strategies page: the sequence CVAE over a small language model. Type an input x and see which strategy the router
expects and what the decoder writes under each latent value (checked by the exact checker); type an answer y and
see which strategy the inference network recognises; discrete and continuous latents side by side; train here."""

import pandas as pd
import streamlit as st

from cvae_core.errors import LabError
from cvae_core.sequence.cli import METRIC_KEYS
from pages import _runs, _ui, _url
from pages import _strat as S

_ui.leave_legacy_pages_mode()

st.title("Strategies")
st.caption("A toy language task: x is a string of digits, and the answer y is x transformed by one of four hidden "
           "**strategies** (sort ascending, sort descending, reverse, rotate), picked at random with weights that "
           "depend on x's first digit. A small transformer trained on (x, y) pairs can only learn the *mixture*. The "
           "sequence CVAE adds a latent z: a **router** p(z|x) guesses the strategy from x, a **decoder** p(y|x,z) "
           "writes the answer for a given z, and an **inference network** q(z|x,y) recognises the strategy from a "
           "finished answer.")
_url.start("strategies", ("x", "y", "run0", "run1"))  # the inputs and the two runs: a link reproduces the view

options = S.run_options()
job = st.session_state.get("seq_job")
if not options:
    st.info("No sequence CVAE runs: `checkpoints/strategies/` is missing. Run `bash scripts/train_shipped_strategies."
            "sh` (about 20 minutes on a CPU) or train one below.")
names, ids = list(options), _runs.url_ids(options)
for msg in _runs.runs("sequence")[1]:
    st.warning(msg)

c1, c2 = st.columns(2)
_url.restore("x", "text", "40712", max_chars=64)
_url.restore("y", "text", "01247", max_chars=64)
x_text = c1.text_input("Input x (digits)", key="x", max_chars=64,
                       help="Type a digit string, e.g. 40712. Each model says which strategy it expects and what "
                            "it writes under each latent value.")
y_text = c2.text_input("An answer y to recognise", key="y", max_chars=64,
                       help="Type any answer for x; the inference network q(z|x,y) says which latent (strategy) "
                            "explains it.")
_url.publish({"x": x_text, "y": y_text})

if names:
    cols = st.columns(2, gap="large")
    for side, col in enumerate(cols):
        with col:
            default = S.SHIPPED[side] if S.SHIPPED[side] in names else names[min(side, len(names) - 1)]
            _url.restore(f"run{side}", "run", default, choices=_runs.url_choices(options))
            choice = st.selectbox("Left run" if side == 0 else "Right run", names, key=f"run{side}",
                                  help="shipped runs, or the runs you trained here")
            _url.publish({f"run{side}": ids[choice]})
            try:
                model, base, info = S.load(str(options[choice].path), options[choice].key)
            except LabError as e:
                st.error(str(e))
                continue
            task = info["task_obj"]
            st.caption(S.config_line(model))
            m = info.get("metrics") or {}
            k1, k2, k3 = st.columns(3)
            k1.metric("NMI", f"{m.get('nmi', float('nan')):.2f}",
                      help="normalised mutual information between the recognised latent (argmax q(z|x,y)) and the "
                           "true strategy, on held-out test pairs (1 = the latent is the strategy)")
            k2.metric("Controllability", f"{m.get('controllability', float('nan')):.2f}",
                      help="decode with z fixed; the exact checker names each answer's strategy; the share of each "
                           "latent's answers made by its most common strategy, averaged over latents")
            k3.metric("Recon ratio", f"{m.get('recon_ratio', float('nan')):.2f}",
                      help="decoder loss / base model loss on the answers; below 1 means z carries information")
            try:
                x = S.check_input(x_text, model, "x")
            except LabError as e:
                st.error(str(e))
                continue
            e = S.expectations(model, info, task, x)
            st.plotly_chart(S.bars(e["names"], e["probs"], "Router p(z | x)", e["learned"]), key=f"router{side}")
            st.markdown("**One greedy answer per latent value**, checked by the exact checker:")
            st.dataframe(pd.DataFrame(e["rows"]), hide_index=True, key=f"dec{side}",
                         column_config={"p(z|x)": st.column_config.NumberColumn(format="%.2f")})
            st.caption("True mixture for this x: " + ", ".join(f"{s} {w:.2f}" for s, w in e["truth"].items()))
            try:
                y = S.check_input(y_text, model, "y")
            except LabError as err:
                st.warning(str(err))
            else:
                names_q, learned, q = S.recognised(model, info, x, y)
                made = task.check(x, y)
                what = ", ".join(task.strategies[s] for s in made) or "no strategy"
                st.plotly_chart(S.bars(names_q, q, f"Inference network q(z | x, y) · y is made by: {what}", learned),
                                key=f"post{side}")
            with st.expander("Latents and the strategies they learned; all test metrics"):
                st.dataframe(pd.DataFrame(S.metrics_table(info)), hide_index=True, key=f"map{side}")
                st.dataframe(pd.DataFrame([{k: m.get(k) for k in METRIC_KEYS}]), hide_index=True,
                             key=f"all{side}")

st.divider()
st.subheader("Train a sequence CVAE here")
st.caption("Over the shipped base model, on the same task. It trains in the background (about 0.4 s a step on a "
           "laptop CPU). The first 30% of the steps make the latent informative by hard EM (each pair goes to the "
           "latent value, or for a continuous z one of K fixed points, whose decoder explains it best), then the "
           "ELBO with β. At the end it is measured on 200 test pairs "
           "and saved; pick it above as *saved: NAME*.")
t1, t2, t3, t4 = st.columns(4)
latent = t1.radio("Latent", ["discrete", "continuous"], key="t_latent", horizontal=True)
size = t2.number_input("K values" if latent == "discrete" else "Dimensions m", 1 if latent == "continuous" else 2, 8,
                       4 if latent == "discrete" else 2, key="t_size")
beta = t3.select_slider("β (KL weight)", [0.1, 0.25, 0.5, 1.0, 2.0], value=0.5, key="t_beta")
steps = t4.number_input("Steps", 10, 5000, 300, step=50, key="t_steps")
# no key: the suggested name follows the settings (a keyed text input would keep its first value)
name = st.text_input("Save as", f"{latent}-K{size}-beta{beta:g}-{steps}" if latent == "discrete"
                     else f"{latent}-m{size}-beta{beta:g}-{steps}")
running = job is not None and job.alive
b1, b2 = st.columns(2)
if b1.button("Train", icon=":material/play_arrow:", disabled=running, type="primary"):
    try:
        st.session_state.seq_job = job = S.new_job(name, latent, int(size), float(beta), int(steps))
        running = True
    except LabError as e:
        st.error(str(e))
if b2.button("Stop", icon=":material/stop:", disabled=not running):
    job.stop()


@st.fragment(run_every=1.0 if running else None)  # polls only while a job runs
def show_job() -> None:
    if st.session_state.get("seq_job") is not None:
        S.job_status(st.session_state["seq_job"])


show_job()

with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "- **The objective.** The three parts are trained together on (x, y) pairs to maximise "
        r"$\mathbb{E}_{q_\xi(z|x,y)}[\log p_\psi(y|x,z)] - \beta\,\mathrm{KL}(q_\xi(z|x,y)\,\|\,p_\phi(z|x))$: the "
        "decoder p_ψ must write y well under the z the inference network q_ξ picks from the finished answer, and "
        "the KL pulls the router p_φ, which sees x only, towards q_ξ. With a discrete z the expectation is an exact "
        r"sum over the K values, $\sum_k q_k \log p_\psi(y|x,k)$; a continuous z is sampled (reparameterised). "
        "Both KLs are exact.\n"
        "- **Is z used?** Baseline-normalised reconstruction: the decoder's loss on y over the base model's; below "
        "1 means z tells the decoder something. NMI compares q's most likely z with the true strategy; purity asks "
        "whether decoding with one z fixed gives one strategy (checked exactly).\n"
        "- **Reading the bars.** The router's bars are a guess from x alone: the best it can learn is the true "
        "mixture for that x. The inference network's bars should pick one strategy once it sees y.")
