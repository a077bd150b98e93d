"""Training of the sequence CVAE: ``fit_seq``, Adam over random batches of (x, y) pairs with a hard-EM warm start
and a KL warm-up (SPEC section 6).

Why not ``cvae_core.train.fit``: its batches are index slices of whole uint8 tensors on the device, while a sequence
batch is a list of strings tokenised per batch; its schedule has phases with fixed objectives, while this one ramps
the KL weight step by step; and the shipped runs' recorded commands draw batches with replacement, which ``fit``'s
permutation sampler would change. Folding it into ``fit`` is left for a later step (see docs/architecture.md).
"""

from __future__ import annotations

import torch

from cvae_core.sequence.model import SeqCVAE


def fit_seq(model: SeqCVAE, split, *, steps: int = 1000, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
            log_every: int = 100, kl_warmup: float = 0.5, warm_start: float = 0.0, progress=None) -> list[dict]:
    """Adam on the mean loss over random batches of (x, y) pairs; returns one record per log tick (mean rec, kl,
    loss since the last tick). Only parameters that require gradients train (LoRA adapters, heads, z embeddings,
    fully trained backbones).

    - ``warm_start``: over this first share of the steps, hard EM (``SeqCVAE.warm_start_loss``) makes the latent
      informative before the ELBO takes over: each pair goes to the latent value (a discrete value, or one of K
      fixed points of a continuous z) whose decoder explains it best, and the decoder specialises on it. From a
      random start the ELBO alone lets the decoder ignore z (at beta = 1 an informative z and an ignored one have the
      same ELBO, and the decoder's general improvements go to whichever value q already prefers; measured in
      docs/results/sequence-cvae.md).
    - ``kl_warmup``: after the warm start the KL weight rises linearly from 0 to beta over this share of the rest."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator(device=model.router_head.weight.device).manual_seed(seed + 1)
    first = round(warm_start * steps)
    warm_steps = kl_warmup * (steps - first)
    model.train()
    records, acc, n = [], {"rec": 0.0, "kl": 0.0, "loss": 0.0}, 0
    for step in range(1, steps + 1):
        idx = torch.randint(len(split.x), (batch_size,), generator=gen).tolist()
        xs, ys = [split.x[i] for i in idx], [split.y[i] for i in idx]
        if step <= first:
            out = model.warm_start_loss(xs, ys)
            loss = out["loss"].mean()
        else:
            out = model.loss(xs, ys, generator=noise)
            warm = min(1.0, (step - first) / warm_steps) if warm_steps > 0 else 1.0
            loss = (out["rec"] + warm * model.config.beta * out["kl"]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k in acc:
            acc[k] += float(out[k].detach().mean())
        n += 1
        if step % log_every == 0 or step == steps:
            records.append({"step": step, **{k: v / n for k, v in acc.items()}})
            acc, n = dict.fromkeys(acc, 0.0), 0
            if progress:
                progress(step / steps, f"step {step}: loss {records[-1]['loss']:.3f}")
    model.eval()
    return records
