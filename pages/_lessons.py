"""Guided lessons for a class, shown on the Home page: each opens one page in the state it talks about (a link with
the view in its URL), says in three sentences what to look at, and asks the class one question."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

import streamlit as st
from streamlit.errors import StreamlitAPIException


@dataclass(frozen=True)
class Lesson:
    title: str
    link: str  # a page path with its view in the query string (pages/_url.py checks every value)
    look: str  # three sentences: what to look at
    question: str  # for the class


LESSONS = (
    Lesson("Why VAE samples are blurry: the decoder's σ",
           "compare?runs=mnist_vae,mnist_sigma_vae,mnist_bs_vae",
           "The three runs differ only in the decoder variance: fixed σ = 1 (vae), one learned σ per batch "
           "(sigma_vae) and one per image (bs_vae). Read the MSE and rate columns: with σ = 1 a pixel error costs so "
           "little that the KL term wins, the code keeps few nats and the reconstructions blur. The samples below "
           "the table come from the same noise, so the differences are the models'.",
           "If σ sets the price of a pixel error, what would a fixed σ = 0.1 do to the rate, and why?"),
    Lesson("β and the rate-distortion trade-off",
           "compare?runs=bs_beta0.1,bs_beta1,bs_beta10,bs_beta100",
           "These are one model, bs_vae, trained at β = 0.1, 1, 10 and 100, with samples from the same noise. On the "
           "curve, a larger β moves a run to the left (less information in the code) and up (worse "
           "reconstructions); the three lines are bs_vae and two constant-variance baselines. The table at the "
           "bottom reads the baseline at bs_vae's rates: that is the Beta-Sigma paper's claim, tested on our data.",
           "Which β would you choose to generate new digits, and which to compress them? Why are they not the same?"),
    Lesson("Class imbalance and the Student-t prior",
           "class_balance?rho=100",
           "The training set of these runs has 100 times more images of its commonest digit than of its rarest. The "
           "bars show which digits 1,000 samples of each model turn out to be, next to the training frequencies; "
           "compare the rare digits under the Gaussian vae and the Student-t ct3vae. Move τ, the sampling scale, and "
           "watch the shares and the grids change.",
           "Why could a heavy-tailed prior leave more room in the latent space for the rare classes?"),
    Lesson("Rare combinations and the learned prior",
           "rare_combinations?digit=4&thick=1&slant=0&red=1&large=0",
           "Four models are asked for a thick, red, small 4 slanting left, a combination that never appears in "
           "their training data. Under each grid, the share of attributes that come out as asked is measured in the "
           "pixels, not judged by eye. The heat map shows how each model fares on every combination, common, rare "
           "and held out; the flow prior learns p(z|y) instead of assuming N(0, I).",
           "How can a model draw a combination it has never seen, and why would the shape of its prior matter?"),
    Lesson("Posterior collapse and the certificate",
           "certificate",
           "Both runs were trained on binarised MNIST with a heavy KL weight (α_KL = 8), where a VAE is tempted to "
           "make its code ignore the input. The margin GT = IT − LTS compares the encoder's witness against a fixed "
           "teacher: above zero, it proves the code depends on the image. Type other test image numbers and watch "
           "the teacher and witness bars.",
           "GT > 0 proves the encoder uses its input, but GT < 0 proves nothing. Why is the test one-sided?"),
    Lesson("Strategy latents: one question, several ways to answer",
           "strategies",
           "A small language model answers a digit question; a latent variable picks the strategy of the answer. "
           "Each row decodes the same question with another latent value, so the differences are the latent's doing. "
           "Compare the discrete latent (one of K strategies) with the continuous one, and read how well the latents "
           "match the strategies the data was made with.",
           "What would you expect if the latent were ignored by the decoder, and how would the page show it?"),
    Lesson("What the code means: traversals and interpolations",
           "generate?family=bs&beta=3&tau=1&seed=0&a=0&b=1",
           "Each row of the traversal moves one latent dimension of one test image's code from −3 to +3 spreads, the "
           "most informative dimension first (the caption gives each one's KL in nats). Move β to 0.1 and then to 30 "
           "and count the rows that still change the digit. The interpolation's top row walks through the code "
           "between two images; the bottom row only blends their pixels.",
           "At a large β fewer rows change the image: where did the other dimensions' information go?"),
)


def lessons_section() -> None:
    """The Home page's lesson cards: a link that opens the page in the lesson's state, what to look at, a question."""
    st.header("Lessons for a class")
    st.caption("Each lesson opens a page on the shipped runs, in the state it talks about. Nothing needs training.")
    cols = st.columns(2, gap="medium")
    for i, lesson in enumerate(LESSONS):
        with cols[i % 2], st.container(border=True):
            st.markdown(f"**{i + 1}. {lesson.title}**")
            page, _, query = lesson.link.partition("?")
            try:
                st.page_link(f"pages/{page}.py", label="Open the page in this state",
                             icon=":material/arrow_forward:", query_params=dict(parse_qsl(query)))
            except StreamlitAPIException:  # the page script run on its own, without app.py's navigation
                st.markdown(f"[Open the page in this state]({lesson.link})")
            st.markdown(lesson.look)
            st.markdown(f":material/help: *{lesson.question}*")
