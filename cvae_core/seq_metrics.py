"""Metrics of the sequence CVAE on the strategies task (SPEC section 6), for a discrete latent.

- ``nmi``: normalised mutual information between argmax q(z|x,y) and the true strategy.
- ``controllability``: decode greedily with z fixed to each value; the exact checker names the strategy of each
  answer; purity per z = the share of its answers made by its most common strategy (answers no strategy makes count
  against it); the mean over z.
- ``router_tv``: latents matched to strategies (the assignment that maximises agreement of argmax q with the truth),
  then the total variation between the router's p(z|x), so permuted, and the true mixture, averaged over x.
- ``recon_ratio``: the decoder's answer loss E_q[-log p(y|x,z)] over the base model's -log p(y|x); below 1 means z
  carries information about y.
- ``inter_latent_jsd``: Jensen-Shannon divergence among the K z-conditioned next-token distributions, teacher-forced
  on the true answer, averaged over answer tokens and items (0: z changes nothing).
- ``token_accuracy``: the decoder's greedy next-token accuracy on the answer tokens with z = argmax q.
"""

from __future__ import annotations

import numpy as np
import torch

from .lm import nats_per_answer, sample_answers


@torch.no_grad()
def posterior(model, xs: list[str], ys: list[str], batch_size: int = 128) -> np.ndarray:
    """q(z | x, y) probabilities, (N, K)."""
    return np.concatenate([model.inference(xs[i : i + batch_size], ys[i : i + batch_size]).probs.cpu().numpy()
                           for i in range(0, len(xs), batch_size)])


@torch.no_grad()
def router_probs(model, xs: list[str], batch_size: int = 128) -> np.ndarray:
    return np.concatenate([model.router(xs[i : i + batch_size]).probs.cpu().numpy()
                           for i in range(0, len(xs), batch_size)])


def match_latents(pred: np.ndarray, truth: np.ndarray, K: int, K_true: int) -> np.ndarray:
    """perm[k] = the strategy latent k is matched to (Hungarian assignment on the co-occurrence counts; with K > K*
    the extra latents go to the strategy they co-occur with most)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((K, K_true))
    np.add.at(counts, (pred, truth), 1)
    perm = counts.argmax(1)
    rows, cols = linear_sum_assignment(-counts)
    perm[rows] = cols
    return perm


@torch.no_grad()
def decoder_next_token(model, xs: list[str], ys: list[str], k: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """With z = k, teacher-forced on y: the log-probabilities of the next token at every position (B, L-1, V), the
    mask of positions whose next token is an answer token (B, L-1), and those next tokens (B, L-1)."""
    from .lm import batch

    seqs = [model.slot_sequence(x, y) for x, y in zip(xs, ys, strict=True)]
    ids, attn, ans = (t.to(model.router_head.weight.device) for t in batch(seqs, model.vocab))
    emb = model.slot_embeds(ids, model.z_embed.weight[k].expand(len(seqs), -1))
    logits = model.decoder_lm(inputs_embeds=emb, attention_mask=attn).logits[:, :-1].float()
    return torch.log_softmax(logits, -1), ans[:, 1:], ids[:, 1:]


def sequence_metrics(model, base, task, split, n: int = 500, n_control: int = 100) -> dict:
    """All the metrics above on the first n items of a split (controllability on the first n_control inputs)."""
    from sklearn.metrics import normalized_mutual_info_score

    xs, ys, truth = split.x[:n], split.y[:n], split.strategy[:n]
    K, Ks = model.config.K, task.K
    q = posterior(model, xs, ys)
    pred = q.argmax(1)
    perm = match_latents(pred, truth, K, Ks)
    r = router_probs(model, xs)
    r_matched = np.zeros((len(xs), Ks))
    for k in range(K):
        r_matched[:, perm[k]] += r[:, k]
    out = {"nmi": float(normalized_mutual_info_score(truth, pred)),
           "router_tv": float(0.5 * np.abs(r_matched - split.mixture[:n]).sum(1).mean()),
           "latent_to_strategy": [task.strategies[int(s)] for s in perm]}
    purity, valid = [], []
    for k in range(K):
        answers = sample_answers(model_decoder(model, k), model.vocab, xs[:n_control], greedy=True,
                                 prompt=model.slot_sequence)
        made = [task.check(x, a) if a is not None else [] for x, a in zip(xs[:n_control], answers, strict=True)]
        first = [m[0] for m in made if m]
        valid.append(len(first) / n_control)
        purity.append(np.bincount(first, minlength=Ks).max() / n_control if first else 0.0)
    out["controllability"] = float(np.mean(purity))
    out["controllability_per_z"] = [float(p) for p in purity]
    out["valid_answers"] = float(np.mean(valid))
    jsd, correct, total, rec = 0.0, 0.0, 0.0, 0.0
    for i in range(0, len(xs), 128):  # one teacher-forced decoder pass per latent value serves three metrics
        bx, by = xs[i : i + 128], ys[i : i + 128]
        lps, mask, nxt = zip(*(decoder_next_token(model, bx, by, k) for k in range(K)), strict=True)
        lp = torch.stack(lps)  # (K, B, L-1, V)
        m = mask[0].float()
        mix = torch.logsumexp(lp, 0) - np.log(K)  # log of the mean distribution
        js = (lp.exp() * (lp - mix)).sum(-1).mean(0)  # (B, L-1): mean KL of each to the mixture
        jsd += float((js * m).sum())
        qb = torch.from_numpy(q[i : i + 128]).to(lp.device)  # (B, K)
        nll = -(lp.gather(-1, nxt[0].expand(K, -1, -1)[..., None])[..., 0] * m).sum(-1)  # (K, B): -log p(y|x,k)
        rec += float((qb.T.to(nll.dtype) * nll).sum())  # sum_k q_k (-log p(y|x,k)), exact, as in the loss
        pick = lp[qb.argmax(1), torch.arange(len(bx), device=lp.device)]  # (B, L-1, V) at z = argmax q
        correct += float(((pick.argmax(-1) == nxt[0]).float() * m).sum())
        total += float(m.sum())
    out["recon_nats"] = rec / len(xs)
    out["base_nats"] = nats_per_answer(base, split.__class__(xs, truth, ys, split.mixture[:n]), model.vocab)
    out["recon_ratio"] = out["recon_nats"] / out["base_nats"]
    out["inter_latent_jsd"] = jsd / total
    out["token_accuracy"] = correct / total
    return out


class _Decoder(torch.nn.Module):
    """The decoder with z fixed to one discrete value, as a causal LM for ``lm.sample_answers`` (the prompt is the
    template up to <y> with the slot after <z>)."""

    def __init__(self, model, k: int):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, input_ids, attention_mask=None):
        m = self.model
        emb = m.slot_embeds(input_ids, m.z_embed.weight[self.k].expand(len(input_ids), -1))
        return m.decoder_lm(inputs_embeds=emb, attention_mask=attention_mask)


def model_decoder(model, k: int) -> _Decoder:
    return _Decoder(model, k)
