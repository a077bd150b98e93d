"""The sequence CVAE with a strategy latent (SPEC section 6): a router p_phi(z|x), a decoder p_psi(y|x,z) and an
inference network q_xi(z|x,y), each over its own copy of a causal LM backbone (``cvae_core.sequence.lm``), each frozen,
LoRA-adapted (``peft``) or fully trained.

- Router: the backbone on ``<bos> <x> x </x>``, hidden states mean-pooled, a head -> Cat(pi(x)) (discrete, K values) or
  N(mu(x), diag sigma(x)^2) (continuous, m dimensions).
- Inference network: the backbone on the whole template with y, pooled, a head -> Cat or N.
- Decoder: the template ``<bos> <x> x </x> <z> [z] </z> <y> y </y> <eos>``; the slot [z] (where the base model was
  trained on the ``<z?>`` token, "no strategy given") carries a learned embedding: row k of a K x width table for a
  discrete z (a learned strategy token), a linear map of z to the model width for a continuous z (a latent prefix).
  Both start at the embedding of ``<z?>`` plus a random offset (``z_init`` token-embedding standard deviations), so
  the decoder starts close to the base model. Only the
  answer tokens are scored.
- Objective: E_q[log p(y|x,z)] - beta KL(q(z|x,y) || p(z|x)). Discrete: exact enumeration over the K values
  (sum_k q_k log p(y|x,k)) and the analytic KL of two categoricals. Continuous: one reparameterised sample and the
  analytic KL of two diagonal Gaussians.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from cvae_core.data.strategies import Vocab
from cvae_core.errors import ConfigError
from cvae_core.fields import check_field_types
from cvae_core.sequence.lm import answer_nll, batch

MODES = ("frozen", "lora", "full")  # how a part uses the base LM
LATENTS = ("discrete", "continuous")


@dataclass
class SeqCVAEConfig:
    latent: str = field(default="discrete", metadata={
        "help": '"discrete" (K values) or "continuous" (latent_dim Gaussian dimensions)', "choices": LATENTS})
    K: int = field(default=4, metadata={"help": "discrete latent values"})
    latent_dim: int = field(default=4, metadata={"help": "continuous latent size"})
    beta: float = field(default=0.5, metadata={
        "help": "weight of KL(q(z|x,y) || p(z|x)); below 1 an informative z beats an ignored one "
                "(docs/results/sequence-cvae.md)"})
    router: str = field(default="lora", metadata={"help": "backbone of the router: frozen, lora or full",
                                                  "choices": MODES})
    decoder: str = field(default="lora", metadata={"help": "backbone of the decoder", "choices": MODES})
    inference: str = field(default="lora", metadata={"help": "backbone of the inference network", "choices": MODES})
    lora_r: int = field(default=8, metadata={"help": "rank of the LoRA adapters (parts in lora mode)"})
    lora_alpha: float = field(default=16.0, metadata={
        "help": "LoRA scaling alpha: the adapters' update is scaled by lora_alpha / lora_r"})
    z_init: float = field(default=1.0, metadata={
        "help": "the latent embeddings start at the empty slot's plus this times the token-embedding std"})

    def __post_init__(self) -> None:
        check_field_types(self, ConfigError)  # "K=1.5" or "beta=abc" in one line, before the value checks below
        if self.latent not in LATENTS:
            raise ConfigError(f"latent must be discrete or continuous (got {self.latent!r})")
        if self.K < 2 or self.latent_dim < 1:
            raise ConfigError(f"need K >= 2 and latent_dim >= 1 (got K={self.K}, latent_dim={self.latent_dim})")
        for part in ("router", "decoder", "inference"):
            if getattr(self, part) not in MODES:
                raise ConfigError(f"{part} must be one of {', '.join(MODES)} (got {getattr(self, part)!r})")
        if not self.beta >= 0:
            raise ConfigError(f"beta must be >= 0 (got {self.beta})")
        if self.lora_r < 1 or not self.lora_alpha > 0:
            raise ConfigError(f"LoRA needs lora_r >= 1 and lora_alpha > 0 (got lora_r={self.lora_r}, "
                              f"lora_alpha={self.lora_alpha})")
        if not self.z_init >= 0:
            raise ConfigError(f"z_init is a multiple of a standard deviation, >= 0 (got {self.z_init})")


def _wrap(base, mode: str, cfg: SeqCVAEConfig):
    """A private copy of the backbone, frozen, with LoRA adapters (peft; the copy's own weights frozen), or trained."""
    lm = copy.deepcopy(base)
    if mode == "full":
        return lm
    for p in lm.parameters():
        p.requires_grad_(False)
    if mode == "frozen":
        return lm
    from peft import LoraConfig, get_peft_model

    targets = ["c_attn", "c_proj", "c_fc"] if hasattr(lm, "transformer") else "all-linear"
    return get_peft_model(lm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                         lora_dropout=0.0, fan_in_fan_out=hasattr(lm, "transformer")))


class SeqCVAE(nn.Module):
    def __init__(self, base, vocab: Vocab, config: SeqCVAEConfig | None = None):
        super().__init__()
        config = config or SeqCVAEConfig()
        self.config, self.vocab = config, vocab
        width = base.get_input_embeddings().embedding_dim
        self.router_lm = _wrap(base, config.router, config)
        self.decoder_lm = _wrap(base, config.decoder, config)
        self.inference_lm = _wrap(base, config.inference, config)
        out = config.K if config.latent == "discrete" else 2 * config.latent_dim
        self.router_head = nn.Linear(width, out)
        self.inference_head = nn.Linear(width, out)
        nn.init.zeros_(self.router_head.weight)  # the prior starts uniform / standard normal; the posterior starts
        nn.init.zeros_(self.router_head.bias)  # random (PyTorch's default), which breaks the symmetry between values
        table = base.get_input_embeddings().weight.detach()
        # where the latent embeddings start: the empty slot's embedding, plus a random offset of this scale
        self._z_empty = table[vocab.slot].cpu().clone() if vocab.slot < len(table) else torch.zeros(width)
        self._z_scale = config.z_init * float(table.std())
        if config.latent == "discrete":
            self.z_embed = nn.Embedding(config.K, width)  # a learned strategy token per latent value
        else:
            self.z_proj = nn.Linear(config.latent_dim, width)  # the latent prefix: empty slot + a linear map of z
        self._init_latent()  # (heads start on the CPU)

    @torch.no_grad()
    def _init_latent(self) -> None:
        """The latent embeddings' random start, from torch's global stream: the empty slot plus a random offset."""
        empty, scale, cfg = self._z_empty, self._z_scale, self.config
        if cfg.latent == "discrete":
            w = self.z_embed.weight
            w.copy_((empty + scale * torch.randn(cfg.K, w.shape[1])).to(w.device))
        else:
            self.z_proj.bias.copy_(empty.to(self.z_proj.bias.device))
            self.z_proj.weight.normal_(0.0, scale / cfg.latent_dim**0.5)

    @torch.no_grad()
    def reinitialise(self, seed: int) -> None:
        """Draw every randomly initialised part afresh from `seed`, as a new build would: the LoRA adapters (A
        random, B zero), the inference head (PyTorch's default), the router head (zeros) and the latent embeddings.
        The backbones' own weights are left as they are: call it before training (a fully trained backbone is then
        still the base's). Torch's global stream is left as it was. A training restart (``fit_seq``'s
        ``restarts``) starts from a copy of the model so re-drawn."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for lm in (self.router_lm, self.decoder_lm, self.inference_lm):
                for mod in lm.modules():
                    if hasattr(mod, "reset_lora_parameters") and hasattr(mod, "lora_A"):  # a peft LoRA layer
                        for name in mod.lora_A:
                            mod.reset_lora_parameters(name, True)
            self.inference_head.reset_parameters()
            nn.init.zeros_(self.router_head.weight)
            nn.init.zeros_(self.router_head.bias)
            self._init_latent()

    # ------------------------------------------------------------------ parts
    def _pooled(self, lm, seqs: list[list[int]]) -> torch.Tensor:
        device = self.router_head.weight.device
        ids, attn, _ = (t.to(device) for t in batch(seqs, self.vocab))
        # No attention mask and no ids (see decoder_nll): the pooling weights leave the padding out
        h = lm(inputs_embeds=lm.get_input_embeddings()(ids), output_hidden_states=True).hidden_states[-1]  # (B,L,w)
        w = attn.unsqueeze(-1).to(h.dtype)
        return (h * w).sum(1) / w.sum(1)  # mean over the real tokens

    def router(self, xs: list[str]):
        """p(z | x): a Categorical (discrete) or an Independent Normal (continuous)."""
        prompts = [self.vocab.encode(x)[: self.vocab.x_length(x)] for x in xs]  # <bos> <x> x </x>
        return self._dist(self.router_head(self._pooled(self.router_lm, prompts)))

    def inference(self, xs: list[str], ys: list[str]):
        """q(z | x, y)."""
        seqs = [self.vocab.encode(x, y) for x, y in zip(xs, ys, strict=True)]
        return self._dist(self.inference_head(self._pooled(self.inference_lm, seqs)))

    def _dist(self, out: torch.Tensor):
        D = torch.distributions
        if self.config.latent == "discrete":
            return D.Categorical(logits=out)
        mu, log_var = out.chunk(2, dim=-1)
        return D.Independent(D.Normal(mu, torch.exp(0.5 * log_var)), 1)

    def slot_vectors(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder's latent slot holds for z: (B,) latent indices (discrete) or (B, m) vectors (continuous)
        -> (B, width)."""
        return self.z_embed(z) if self.config.latent == "discrete" else self.z_proj(z)

    def decoder_nll(self, xs: list[str], ys: list[str], z: torch.Tensor) -> torch.Tensor:
        """-log p(y | x, z) per item, (B,): z is (B,) latent indices (discrete) or (B, m) vectors (continuous)."""
        device = self.router_head.weight.device
        seqs = [self.vocab.encode(x, y) for x, y in zip(xs, ys, strict=True)]
        ids, _, ans = (t.to(device) for t in batch(seqs, self.vocab))
        # No attention mask: the padding is on the right and the LM is causal, so no scored token can see it, and the
        # result is the same to the last bit. A mask costs a check that it holds a zero (a host sync per forward on
        # a GPU, in transformers' mask building) and the mask arithmetic itself.
        return answer_nll(self.decoder_lm, ids, None, ans, inputs_embeds=self.slot_embeds(ids, self.slot_vectors(z)))

    def nll_per_value(self, xs: list[str], ys: list[str], values: torch.Tensor) -> torch.Tensor:
        """-log p(y | x, z = v) for every item and every value v of `values` ((V,) indices or (V, m) vectors): (B, V),
        in one decoder pass over B * V rows."""
        B, V = len(xs), len(values)
        z = values.repeat(B) if values.dim() == 1 else values.repeat(B, 1)
        return self.decoder_nll([x for x in xs for _ in range(V)], [y for y in ys for _ in range(V)], z).view(B, V)

    def slot_embeds(self, ids: torch.Tensor, zvec: torch.Tensor) -> torch.Tensor:
        """The decoder's input embeddings of ids (B, L) with each row's latent slot (the <z?> token) set to zvec
        (B, width)."""
        slot = ids == self.vocab.slot  # (B, L)
        emb = self.decoder_lm.get_input_embeddings()(ids)  # (B, L, width)
        return torch.where(slot[..., None], zvec[:, None, :].to(emb.dtype), emb)

    # ------------------------------------------------------------------ objective
    def loss(self, xs: list[str], ys: list[str], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-item terms (B,): ``rec`` = -E_q log p(y|x,z), ``kl``, ``loss`` = rec + beta kl; ``q`` and ``p`` the
        posterior and the prior."""
        q, p = self.inference(xs, ys), self.router(xs)
        kl = torch.distributions.kl_divergence(q, p)
        if self.config.latent == "discrete":
            values = torch.arange(self.config.K, device=q.logits.device)
            rec = (q.probs * self.nll_per_value(xs, ys, values)).sum(1)  # exact: sum_k q_k(-log p(y|x,k))
        else:
            mu, std = q.base_dist.loc, q.base_dist.scale
            eps = torch.randn(mu.shape, generator=generator, device=mu.device) if generator else torch.randn_like(mu)
            rec = self.decoder_nll(xs, ys, mu + std * eps)
        return {"rec": rec, "kl": kl, "loss": rec + self.config.beta * kl, "q": q}

    def anchors(self) -> torch.Tensor:
        """The latent values of the warm start: the K values of a discrete z, (K,); for a continuous z, K fixed points
        +-2 e_1, +-2 e_2, ..., +-2 e_m, then +-4 e_1, ... (the first K), (K, m)."""
        device = self.router_head.weight.device
        if self.config.latent == "discrete":
            return torch.arange(self.config.K, device=device)
        K, m = self.config.K, self.config.latent_dim
        a = torch.zeros(K, m, device=device)
        k = torch.arange(K, device=device)
        a[k, (k // 2) % m] = 2.0 * (1 + k // (2 * m)).float() * (1 - 2 * (k % 2)).float()
        return a

    def warm_start_loss(self, xs: list[str], ys: list[str]) -> dict[str, torch.Tensor]:
        """Hard EM over the warm-start values (``anchors``): each pair is assigned the value whose decoder explains y
        best (argmin_k -log p(y|x,a_k), by enumeration); the decoder is trained on that value only, and the inference
        network and the router to put their mass on it (-log q(a_k|x,y) - log p(a_k|x)). Per-item ``rec`` (the
        assigned value's -log p), ``kl`` (KL(q||p), not optimised here), ``loss``; ``pick`` the values."""
        A = self.anchors()
        nll = self.nll_per_value(xs, ys, A)
        pick = nll.detach().argmin(1)
        q, p = self.inference(xs, ys), self.router(xs)
        target = A[pick]
        rec = nll.gather(1, pick[:, None])[:, 0]
        return {"rec": rec, "kl": torch.distributions.kl_divergence(q, p).detach(),
                "loss": rec - q.log_prob(target) - p.log_prob(target), "pick": pick}
