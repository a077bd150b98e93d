"""Training of the sequence CVAE: ``fit_seq``, Adam over random batches of (x, y) pairs with a hard-EM warm start
and a KL warm-up (SPEC section 6), run by the lab's one engine, ``cvae_core.train.run_loop``: the same
``TrainControl`` (pause, step, stop), device-side sums with one host sync per log tick, configurable gradient clip,
NaN recovery and callbacks as the image models.

What stays here, and why ``fit`` itself is not used: a sequence batch is a list of strings tokenised per batch (not an
index slice of a uint8 tensor), batches are drawn with replacement (the shipped runs' recorded commands did, and
``fit``'s permutation sampler would change their weights), and the KL weight ramps step by step inside a phase.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch

from cvae_core.errors import ConfigError
from cvae_core.sequence.model import SeqCVAE
from cvae_core.train import History, LoopPhase, TrainControl, run_loop


class _Progress:
    """A ``run_loop`` callback that reports ``progress(fraction, text)`` at each log tick; `before` steps of other
    restarts count as done, of `total` steps in all."""

    def __init__(self, progress, total: int, before: int = 0, prefix: str = ""):
        self.progress, self.total, self.before, self.prefix = progress, total, before, prefix

    def on_log(self, model, record: dict, history: History) -> None:
        self.progress((self.before + record["step"]) / self.total,
                      f"{self.prefix}step {record['step']}: loss {record['loss']:.3f}")


@torch.no_grad()
def heldout_neg_elbo(model: SeqCVAE, xs: list[str], ys: list[str], batch_size: int = 128, seed: int = 0) -> float:
    """The mean -ELBO (beta = 1: E_q[-log p(y|x,z)] + KL(q(z|x,y) || p(z|x)), nats per pair) of the pairs (xs, ys):
    exact for a discrete z, one seeded sample per pair for a continuous z. No labels: what ``fit_seq``'s restarts
    choose by."""
    was = model.training
    model.eval()
    gen = torch.Generator(device=model.router_head.weight.device).manual_seed(seed)
    total = 0.0
    for i in range(0, len(xs), batch_size):
        out = model.loss(xs[i : i + batch_size], ys[i : i + batch_size], generator=gen)
        total += float((out["rec"] + out["kl"]).sum())
    model.train(was)
    return total / max(1, len(xs))


def restart_seed(seed: int, r: int) -> int:
    """The seed of restart r of a run seeded `seed` (restart 0 is the run itself)."""
    return seed if r == 0 else int(np.random.SeedSequence([seed, r]).generate_state(1)[0]) % 2**31


def fit_seq(model: SeqCVAE, split, *, steps: int = 1000, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
            log_every: int = 100, kl_warmup: float = 0.5, warm_start: float = 0.0, grad_clip: float | None = 1.0,
            restarts: int = 1, heldout=None, restart_log: list | None = None,
            progress=None, control: TrainControl | None = None, history: History | None = None,
            callbacks=()) -> History:
    """Adam on the mean loss over random batches of (x, y) pairs; returns the History, one record per log tick (mean
    rec, kl, loss since the last tick). Only parameters that require gradients train (LoRA adapters, heads, z
    embeddings, fully trained backbones).

    - ``warm_start``: over this first share of the steps (the phase ``warm_start``), hard EM
      (``SeqCVAE.warm_start_loss``) makes the latent informative before the ELBO takes over (the phase ``elbo``):
      each pair goes to the latent value (a discrete value, or one of K fixed points of a continuous z) whose decoder
      explains it best, and the decoder specialises on it. From a random start the ELBO alone lets the decoder ignore
      z (at beta = 1 an informative z and an ignored one have the same ELBO, and the decoder's general improvements go
      to whichever value q already prefers; measured in docs/results/sequence-cvae.md).
    - ``restarts``: the warm start is run this many times, each from its own random start (restart 0 is `model` as
      given, with `seed`; restart r > 0 a copy ``reinitialise``d and with batches drawn from ``restart_seed(seed,
      r)``), and the one whose -ELBO on the held-out pairs `heldout` (an object with ``x`` and ``y``; no labels are
      read) is lowest goes on to the ELBO phase, in `model`, with its optimiser state and batch stream. Which
      partition of the pairs the latent finds is settled in the warm start, and a partial one (two strategies on one
      value) explains held-out answers worse. 1 (or no warm start): one run, as before. With the restart won by
      restart 0 the result equals the run with ``restarts=1``. `restart_log`, a list, receives one dict per restart
      (``restart``, ``seed``, ``heldout_neg_elbo``, ``picked``).
    - ``kl_warmup``: after the warm start the KL weight rises linearly from 0 to beta over this share of the rest.
    - ``grad_clip``: the max gradient norm (1.0, as the shipped runs were trained; None = off).
    - ``control``, ``history``, ``callbacks``: as for ``cvae_core.train.fit``; ``progress(fraction, text)`` is called
      at each log tick (the restarts' warm starts count towards the fraction). `history` holds the records of the
      restart being trained, then those of the one picked."""
    first = round(warm_start * steps)
    restarts = int(restarts)
    if restarts < 1:
        raise ConfigError(f"restarts must be an integer >= 1 (got {restarts})")
    if restarts > 1 and first and heldout is None:
        raise ConfigError("restarts > 1 choose by the -ELBO of held-out pairs: pass heldout=")
    warm_steps = kl_warmup * (steps - first)
    history = history if history is not None else History()
    R = restarts if first else 1
    total = R * first + (steps - first)

    def runner(m: SeqCVAE, s: int) -> dict:
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)  # one optimiser for both phases: the ELBO phase keeps Adam's state
        gen = torch.Generator().manual_seed(s)
        noise = torch.Generator(device=m.router_head.weight.device).manual_seed(s + 1)

        def step_fn(step: int, phase_i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            idx = torch.randint(len(split.x), (batch_size,), generator=gen).tolist()
            xs, ys = [split.x[i] for i in idx], [split.y[i] for i in idx]
            if step < first:
                out = m.warm_start_loss(xs, ys)
                loss = out["loss"].mean()
            else:
                out = m.loss(xs, ys, generator=noise)
                warm = min(1.0, (step + 1 - first) / warm_steps) if warm_steps > 0 else 1.0
                loss = (out["rec"] + warm * m.config.beta * out["kl"]).mean()
            return loss, {k: out[k].detach().mean() for k in ("rec", "kl", "loss")}

        return {"model": m, "opt": opt, "gen": gen, "noise": noise, "step_fn": step_fn, "seed": s}

    def loop(run: dict, phases: list[LoopPhase], hist: History, before: int, prefix: str) -> History:
        run["model"].train()
        cbs = [*callbacks, *([_Progress(progress, total, before, prefix)] if progress else [])]
        return run_loop(run["model"], phases, run["step_fn"], log_every=log_every, grad_clip=grad_clip,
                        epoch_of=lambda at: at * batch_size / len(split.x), control=control, history=hist,
                        callbacks=cbs)

    if R == 1:
        run = runner(model, seed)
        opt = run["opt"]
        plan = [LoopPhase("warm_start", 0, first, lambda: opt)] if first else []
        plan.append(LoopPhase("elbo", first, steps, lambda: opt))
        return loop(run, plan, history, 0, "")

    pristine = copy.deepcopy(model)  # every restart starts from a copy of the untrained model, re-drawn
    results = []
    for r in range(R):
        m = model if r == 0 else copy.deepcopy(pristine)
        s = restart_seed(seed, r)
        if r:
            m.reinitialise(s)
        run = runner(m, s)
        hist = history if r == 0 else History()
        opt = run["opt"]
        hist = loop(run, [LoopPhase("warm_start", 0, first, lambda opt=opt: opt)], hist, r * first,
                    f"restart {r + 1}/{R}: ")
        if hist.status != "finished":  # stopped or diverged: the run ends here, as it is
            if hist is not history:
                _adopt(history, hist)
                model.load_state_dict(m.state_dict())
            return history
        run["score"] = heldout_neg_elbo(m, heldout.x, heldout.y, seed=seed)
        run["history"] = copy.deepcopy(hist)
        results.append(run)
    best = min(range(R), key=lambda i: results[i]["score"])
    for i, run in enumerate(results):
        if restart_log is not None:
            restart_log.append({"restart": i, "seed": run["seed"], "heldout_neg_elbo": run["score"],
                                "picked": i == best})
    win = results[best]
    if best:  # the winner's weights, optimiser state and random streams go on in `model`
        model.load_state_dict(win["model"].state_dict())
        trained = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(trained, lr=lr)
        opt.load_state_dict(win["opt"].state_dict())
        run = runner(model, win["seed"])
        run["gen"].set_state(win["gen"].get_state())
        run["noise"].set_state(win["noise"].get_state())
        run["opt"] = opt
        _adopt(history, win["history"])
    else:
        run = win
    opt = run["opt"]
    history.status, history.message = "running", ""
    return loop(run, [LoopPhase("elbo", first, steps, lambda: opt)], history, R * first - first, "")


def _adopt(history: History, other: History) -> None:
    """`history` (the caller's object) takes the fields of `other`."""
    for f in dataclasses.fields(History):
        setattr(history, f.name, copy.deepcopy(getattr(other, f.name)))
