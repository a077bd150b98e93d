"""Compare page: two to four runs side by side (metrics, samples from the same noise) and the rate-distortion curve
of the shipped beta sweeps, with the chosen runs marked."""

import streamlit as st

from cvae_core.eval.rd import curve, equal_rate
from pages import _cmp, _runs, _runtable, _ui, _url

_ui.leave_legacy_pages_mode()
st.title("Compare runs")
st.caption("Pick two to four runs: their test metrics, their samples from the same noise, and where they sit on the "
           "rate-distortion curve of the β sweeps. The choice lives in the URL (`runs=a,b`), so a link shows the "
           "same comparison.")
_url.start("compare", ("runs", "spread"))
opts = _cmp.options()
if len(opts) < _cmp.MIN_RUNS:
    st.info("There are fewer than two runs to compare: train and save one on the **Train** page.")
    st.stop()
if _url.fresh() or "compare_runs" not in st.session_state:
    st.session_state["compare_runs"] = _cmp.chosen_from_url(opts)
st.session_state["compare_runs"] = [r for r in st.session_state["compare_runs"] if r in opts]
chosen = st.multiselect("Runs", list(opts), key="compare_runs", max_selections=_cmp.MAX_RUNS,
                        help="Shipped runs by name, saved runs as runs/NAME, the β sweeps as FAMILY_betaB "
                             "(bs = bs_vae, sse = vae with σ² = 1/2, sigma1 = vae with σ = 1).")
_url.publish({"runs": ",".join(chosen) if chosen else None})
entries = [opts[c] for c in chosen]
if len(entries) < _cmp.MIN_RUNS:
    st.info("Pick at least two runs.")
else:
    _runtable.runs_section(entries, per_row=len(entries))
    st.caption("Every grid is decoded from the same prior noise (seed 0), so differences are the models'. −ELBO has "
               "the decoder variance frozen at its training-set value, the fair column between families.")
    gt = {e.name: _runs.run_metrics(str(e.path), e.key).get("GT") for e in entries}
    if any(v is not None for v in gt.values()):
        st.markdown("**Collapse certificate** on the test set, margin GT = IT − LTS (above 0: the code provably "
                    "depends on the image; below 0 proves nothing): "
                    + " · ".join(f"{name} **{v:+.3f}**" if v is not None else f"{name} (not measured)"
                                 for name, v in gt.items()))

st.header("Rate against distortion: the β sweeps")
points = _cmp.sweeps(_cmp.sweep_signature())
if not any(points.values()):
    st.info("The β sweeps are not shipped in this copy: `python scripts/train_sweeps.py` trains them (about 30 min "
            "on 2 cores).")
    st.stop()
means = _cmp.seed_means(_cmp.seed_means_signature())
_url.restore("spread", "bool", False)
spread = st.toggle("Add the mean over seeds of the longer grid", key="spread", disabled=not means,
                   help="`python -m cvae_core reproduce beta-sigma`: the same families and β, 10 epochs, 3 seeds "
                        "(docs/results/beta-sigma/); dotted, with ± one standard deviation of the rate and of the "
                        "distortion. " + ("" if means else "Its trials are not in this copy."))
_url.publish({"spread": True if spread else None})
st.plotly_chart(_cmp.rd_figure(points, _cmp.FAMILIES, entries, means if spread else None), key="rd")
with st.expander("What am I looking at?", icon=":material/school:"):
    st.markdown(
        "Each line is one family trained at β = 0.01 … 100 (MNIST, the same MLP, 6 epochs, seed 0). Moving right, the "
        "code carries more information (rate R = KL(q(z|x) ‖ p(z)), in nats); lower is a better reconstruction. "
        "The families' own distortions are not comparable (σ = 1, σ² = 1/2 and a per-image σ weigh errors "
        "differently), so the left panel scores every model with the same yardstick: a Gaussian decoder whose "
        "variance is the model's own training-set MSE,\n\n"
        "$D = \\tfrac{1}{2\\sigma_t^2}\\lVert x - \\hat x(z)\\rVert^2 + \\tfrac{n}{2}\\log 2\\pi\\sigma_t^2$, "
        "$\\sigma_t^2$ = training MSE per pixel, $z \\sim q(z\\mid x)$;\n\n"
        "the right panel is the plain test MSE per pixel. The Beta-Sigma paper's claim: at equal rate, bs_vae "
        "distorts less than the constant-variance baseline (sse: σ² = 1/2, the sum of squared errors). "
        "The table below reads the baseline's curve at each bs_vae rate.")
if "bs" in points and "sse" in points:
    bs = curve((p.metrics["rate"], p.metrics["distortion_train_sigma"]) for p in points["bs"]
               if "distortion_train_sigma" in p.metrics)
    sse = curve((p.metrics["rate"], p.metrics["distortion_train_sigma"]) for p in points["sse"]
                if "distortion_train_sigma" in p.metrics)
    rows = equal_rate(bs, sse)
    if rows:
        st.dataframe([{"rate R (nats)": round(r["rate"], 2), "bs_vae D": round(r["a"], 1),
                       "sse baseline D at that rate": round(r["b"], 1), "bs − sse": round(r["a_minus_b"], 1)}
                      for r in rows], hide_index=True)
        better = sum(r["a_minus_b"] < 0 for r in rows)
        st.caption(f"At {better} of the {len(rows)} bs_vae rates inside the baseline's range, bs_vae distorts less "
                   "(negative difference). Rates outside the baseline's range are not compared (no extrapolation).")
