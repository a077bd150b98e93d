"""``python -m cvae_core reproduce PAPER``: each paper's grid of trials over Ray Tune, and its report
(``engine``); one module per paper (``beta_sigma``, ``t3``, ``flow``, ``certificate``, ``sequence``)."""

from cvae_core.reproduce.engine import PAPERS, Paper, paper, reproduce

__all__ = ["PAPERS", "Paper", "paper", "reproduce"]
