"""Metrics of the sequence CVAE on the strategies task (SPEC section 6).

A discrete model's latent values are its K values. A continuous model's "values" are K* points: the centroids of
k-means (K* clusters, seeded) on the posterior means of the evaluated pairs; a pair's value is its cluster, and the
router's p(z|x) is turned into cluster probabilities by the share of 64 samples nearest to each centroid.

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

from cvae_core.sequence.lm import batch, nats_per_answer, sample_answers


@torch.no_grad()
def posterior(model, xs: list[str], ys: list[str], batch_size: int = 128) -> tuple[np.ndarray, np.ndarray | None]:
    """q(z | x, y): (probabilities (N, K), None) for a discrete z, (means (N, m), standard deviations (N, m)) for a
    continuous z."""
    first, second = [], []
    for i in range(0, len(xs), batch_size):
        q = model.inference(xs[i : i + batch_size], ys[i : i + batch_size])
        if model.config.latent == "discrete":
            first.append(q.probs.cpu().numpy())
        else:
            first.append(q.base_dist.loc.cpu().numpy())
            second.append(q.base_dist.scale.cpu().numpy())
    return np.concatenate(first), np.concatenate(second) if second else None


@torch.no_grad()
def value_probs(dist, centroids: np.ndarray | None, generator: torch.Generator, samples: int = 64) -> np.ndarray:
    """A batch of p(z) or q(z) over the latent values, (B, V): a Categorical's probabilities (discrete), or the share
    of `samples` draws nearest to each centroid (continuous)."""
    if centroids is None:
        return dist.probs.cpu().numpy()
    mu, std = dist.base_dist.loc.cpu(), dist.base_dist.scale.cpu()
    z = mu + std * torch.randn((samples, *mu.shape), generator=generator)  # (S, B, m)
    near = torch.cdist(z, torch.from_numpy(centroids).float()).argmin(-1)  # (S, B)
    return torch.nn.functional.one_hot(near, len(centroids)).float().mean(0).numpy()


@torch.no_grad()
def router_probs(model, xs: list[str], centroids: np.ndarray | None = None, batch_size: int = 128,
                 samples: int = 64, seed: int = 0) -> np.ndarray:
    """p(z | x) over the latent values (N, V), by ``value_probs`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    return np.concatenate([value_probs(model.router(xs[i : i + batch_size]), centroids, gen, samples)
                           for i in range(0, len(xs), batch_size)])


@torch.no_grad()
def slot_values(model, centroids: np.ndarray | None = None) -> torch.Tensor:
    """The decoder's slot vectors of the latent values, (V, width): the K strategy embeddings (discrete), or the
    projections of the centroids (continuous)."""
    dev = model.router_head.weight.device
    if centroids is None:
        return model.slot_vectors(torch.arange(model.config.K, device=dev))
    return model.slot_vectors(torch.from_numpy(np.asarray(centroids, dtype=np.float32)).to(dev))


def latent_points(model, means: np.ndarray | None = None, k: int | None = None, seed: int = 0):
    """(slot vectors (V, width), centroids or None, labels of `means` or None) of the latent values: the K values of
    a discrete z, or k k-means centroids of the posterior `means` of a continuous z."""
    if model.config.latent == "discrete":
        return slot_values(model), None, None
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(means)
    cent = km.cluster_centers_.astype(np.float32)
    return slot_values(model, cent), cent, km.labels_


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
def decoder_next_token(model, xs: list[str], ys: list[str], zvec: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """With the slot vector zvec (width,) (or one per pair, (B, width)), teacher-forced on y: the log-probabilities
    of the next token at every position (B, L-1, V), the mask of positions whose next token is an answer token
    (B, L-1), and those next tokens."""
    seqs = [model.vocab.encode(x, y) for x, y in zip(xs, ys, strict=True)]
    ids, attn, ans = (t.to(model.router_head.weight.device) for t in batch(seqs, model.vocab))
    emb = model.slot_embeds(ids, zvec.expand(len(seqs), -1))
    logits = model.decoder_lm(inputs_embeds=emb, attention_mask=attn).logits[:, :-1].float()
    return torch.log_softmax(logits, -1), ans[:, 1:], ids[:, 1:]


def controlled_answers(model, xs: list[str], zvec: torch.Tensor) -> list[str | None]:
    """Greedy answers of the decoder with its slot set to zvec (width,)."""
    return sample_answers(_Decoder(model, zvec), model.vocab, xs, greedy=True)


def sequence_metrics(model, base, task, split, n: int = 500, n_control: int = 100, seed: int = 0) -> dict:
    """All the metrics above on the first n items of a split (controllability on the first n_control inputs)."""
    from sklearn.metrics import normalized_mutual_info_score

    xs, ys, truth = split.x[:n], split.y[:n], split.strategy[:n]
    Ks = task.K
    discrete = model.config.latent == "discrete"
    q, q_std = posterior(model, xs, ys)
    vecs, cent, labels = latent_points(model, None if discrete else q, Ks, seed)
    V = len(vecs)
    pred = q.argmax(1) if discrete else labels
    perm = match_latents(pred, truth, V, Ks)
    r = router_probs(model, xs, cent, seed=seed)
    r_matched = np.zeros((len(xs), Ks))
    for k in range(V):
        r_matched[:, perm[k]] += r[:, k]
    out = {"nmi": float(normalized_mutual_info_score(truth, pred)),
           "router_tv": float(0.5 * np.abs(r_matched - split.mixture[:n]).sum(1).mean()),
           "latent_to_strategy": [task.strategies[int(s)] for s in perm]}
    if cent is not None:
        out["centroids"] = cent.tolist()
    purity, valid = [], []
    for k in range(V):
        answers = controlled_answers(model, xs[:n_control], vecs[k])
        made = [task.check(x, a) if a is not None else [] for x, a in zip(xs[:n_control], answers, strict=True)]
        first = [m[0] for m in made if m]
        valid.append(len(first) / n_control)
        purity.append(np.bincount(first, minlength=Ks).max() / n_control if first else 0.0)
    out["controllability"] = float(np.mean(purity))
    out["controllability_per_z"] = [float(p) for p in purity]
    out["valid_answers"] = float(np.mean(valid))
    jsd, correct, total, rec = 0.0, 0.0, 0.0, 0.0
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, len(xs), 128):  # one teacher-forced decoder pass per latent value serves three metrics
        bx, by = xs[i : i + 128], ys[i : i + 128]
        lps, mask, nxt = zip(*(decoder_next_token(model, bx, by, vecs[k]) for k in range(V)), strict=True)
        lp = torch.stack(lps)  # (V, B, L-1, V)
        m = mask[0].float()
        mix = torch.logsumexp(lp, 0) - np.log(V)  # log of the mean distribution
        js = (lp.exp() * (lp - mix)).sum(-1).mean(0)  # (B, L-1): mean KL of each to the mixture
        jsd += float((js * m).sum())
        total += float(m.sum())
        if discrete:
            qb = torch.from_numpy(q[i : i + 128]).to(lp.device)  # (B, K)
            nll = -(lp.gather(-1, nxt[0].expand(V, -1, -1)[..., None])[..., 0] * m).sum(-1)  # (K, B)
            rec += float((qb.T.to(nll.dtype) * nll).sum())  # sum_k q_k (-log p(y|x,k)), exact, as in the loss
            pick = lp[qb.argmax(1), torch.arange(len(bx), device=lp.device)]  # (B, L-1, V) at z = argmax q
        else:
            with torch.no_grad():
                mu, std = (torch.from_numpy(a[i : i + 128]).to(lp.device) for a in (q, q_std))
                z = mu + std * torch.randn(mu.shape, generator=gen).to(mu.device)  # one sample of q per pair
                rec += float(model.decoder_nll(bx, by, z).sum())
                pick = decoder_next_token(model, bx, by, model.slot_vectors(mu))[0]  # at z = the posterior mean
        correct += float(((pick.argmax(-1) == nxt[0]).float() * m).sum())
    out["recon_nats"] = rec / len(xs)
    out["base_nats"] = nats_per_answer(base, split.__class__(xs, truth, ys, split.mixture[:n]), model.vocab)
    out["recon_ratio"] = out["recon_nats"] / out["base_nats"]
    out["inter_latent_jsd"] = jsd / total
    out["token_accuracy"] = correct / total
    return out


class _Decoder(torch.nn.Module):
    """The decoder with its latent slot fixed to one vector, as a causal LM for ``lm.sample_answers``."""

    def __init__(self, model, zvec: torch.Tensor):
        super().__init__()
        self.model, self.zvec = model, zvec

    def forward(self, input_ids, attention_mask=None):
        m = self.model
        emb = m.slot_embeds(input_ids, self.zvec.expand(len(input_ids), -1))
        return m.decoder_lm(inputs_embeds=emb, attention_mask=attention_mask)
