"""Training of the sequence CVAE: ``fit_seq``, Adam over random batches of (x, y) pairs with a hard-EM warm start
and a KL warm-up (SPEC section 6), run by the lab's one engine, ``cvae_core.train.run_loop``: the same
``TrainControl`` (pause, step, stop), device-side sums with one host sync per log tick, configurable gradient clip,
NaN recovery and callbacks as the image models.

What stays here, and why ``fit`` itself is not used: a sequence batch is a list of strings tokenised per batch (not an
index slice of a uint8 tensor), batches are drawn with replacement (the shipped runs' recorded commands did, and
``fit``'s permutation sampler would change their weights), and the KL weight ramps step by step inside a phase.
"""

from __future__ import annotations

import torch

from cvae_core.sequence.model import SeqCVAE
from cvae_core.train import History, LoopPhase, TrainControl, run_loop


class _Progress:
    """A ``run_loop`` callback that reports ``progress(fraction, text)`` at each log tick."""

    def __init__(self, progress, steps: int):
        self.progress, self.steps = progress, steps

    def on_log(self, model, record: dict, history: History) -> None:
        self.progress(record["step"] / self.steps, f"step {record['step']}: loss {record['loss']:.3f}")


def fit_seq(model: SeqCVAE, split, *, steps: int = 1000, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
            log_every: int = 100, kl_warmup: float = 0.5, warm_start: float = 0.0, grad_clip: float | None = 1.0,
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
    - ``kl_warmup``: after the warm start the KL weight rises linearly from 0 to beta over this share of the rest.
    - ``grad_clip``: the max gradient norm (1.0, as the shipped runs were trained; None = off).
    - ``control``, ``history``, ``callbacks``: as for ``cvae_core.train.fit``; ``progress(fraction, text)`` is called
      at each log tick."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)  # one optimiser for both phases: the ELBO phase keeps Adam's state
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=model.router_head.weight.device).manual_seed(seed + 1)
    first = round(warm_start * steps)
    warm_steps = kl_warmup * (steps - first)
    plan = [LoopPhase("warm_start", 0, first, lambda: opt)] if first else []
    plan.append(LoopPhase("elbo", first, steps, lambda: opt))

    def step_fn(step: int, phase_i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        idx = torch.randint(len(split.x), (batch_size,), generator=gen).tolist()
        xs, ys = [split.x[i] for i in idx], [split.y[i] for i in idx]
        if step < first:
            out = model.warm_start_loss(xs, ys)
            loss = out["loss"].mean()
        else:
            out = model.loss(xs, ys, generator=noise)
            warm = min(1.0, (step + 1 - first) / warm_steps) if warm_steps > 0 else 1.0
            loss = (out["rec"] + warm * model.config.beta * out["kl"]).mean()
        return loss, {k: out[k].detach().mean() for k in ("rec", "kl", "loss")}

    model.train()
    callbacks = [*callbacks, *([_Progress(progress, steps)] if progress else [])]
    return run_loop(model, plan, step_fn, log_every=log_every, grad_clip=grad_clip,
                    epoch_of=lambda at: at * batch_size / len(split.x), control=control, history=history,
                    callbacks=callbacks)
