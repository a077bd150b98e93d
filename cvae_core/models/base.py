"""The interface every model in the lab implements, so the trainer, metrics, CLI and app stay generic.

A model is made of parts that return ``torch.distributions`` objects:
    encode(x, y) -> q(z|x[,y])        prior(y, n) -> p(z[|y])        decode(z, y) -> logits (B, C, H, W)
and one likelihood component ``nll(x, logits) -> (-log p(x|z) per image (B,), extras)``.
``item_terms(x, y, extras)`` returns the family's named terms per item (``loss`` is its objective, which need not
be an ELBO); ``loss(x, y, extras)`` averages them over the batch. ``rate_key`` / ``distortion_key`` say which terms
are the rate and the distortion, so that evaluation, the app's curves and the generic tests read any family.

Hooks for families that need more than a Gaussian VAE (each defaulted here):
    setup(data)            look at the training data once before training; keep what it computes in buffers
    phases()               training phases over parameter groups, each minimising one named term
    prior_noise(n, gen)    the noise of one prior sample (Student-t adds a chi-square draw, a flow its base noise)
    prior_latents(noise, y, tau), map_overlays(n, gen)
Conditioning is a config field (``condition``: "class" or "attributes", ``cond_dim``), so a run folder alone
rebuilds a conditional model; ``condition_vector(y)`` turns y into the (B, d) float vector the networks see.
"""

from __future__ import annotations

import abc
import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Distribution

from cvae_core.data import check_images, check_labels, to_float
from cvae_core.errors import ConfigError
from cvae_core.fields import check_field_types

CONDITIONS = ("class", "attributes")
ARCHS = ("conv", "mlp")  # the bodies of cvae_core.nets
TAU_MAX = 1000.0  # the largest sampling scale: a multiple of the prior's spread far past where samples saturate


def check_tau(tau: float | None, name: str = "tau") -> None:
    """A sampling scale is None (the family's default) or a number in [0, TAU_MAX]; else a one-line ConfigError."""
    if tau is None:
        return
    if not (isinstance(tau, numbers.Real) and not isinstance(tau, bool) and 0 <= tau <= TAU_MAX):
        raise ConfigError(f"{name} must be >= 0 and at most {TAU_MAX:g} (got {tau!r}); it scales the prior's spread")


@dataclass
class ModelConfig:
    """Fields every model config has (families add their own). Each field is defaulted and documented in its
    metadata (``cvae_core.fields``: "help", and "choices" for a str field with a fixed set of values)."""

    image_shape: tuple[int, int, int] = field(default=(1, 28, 28), metadata={"help": "(C, H, W) of the data set"})
    num_classes: int = field(default=10, metadata={"help": "K; used by conditional models and for per-class plots"})
    latent_dim: int = field(default=16, metadata={"help": "m"})
    arch: str = field(default="conv", metadata={"help": '"conv" (28/32/64 px) or "mlp"', "choices": ARCHS})
    hidden: int = field(default=256, metadata={"help": "width of the feature layer between body and heads"})
    beta: float = field(default=1.0, metadata={"help": "weight of the KL (rate) term"})

    def __post_init__(self) -> None:
        check_field_types(self)
        shape = self.image_shape  # JSON gives a list
        if (not isinstance(shape, (tuple, list)) or len(shape) != 3
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in shape)):
            raise ValueError(f"image_shape must be three positive integers (C, H, W) (got {shape!r})")
        self.image_shape = tuple(int(v) for v in shape)
        for name in ("latent_dim", "hidden", "num_classes"):  # layer sizes (already checked to be integers)
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 and an integer (got {getattr(self, name)!r})")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0 (got {self.beta})")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be 'conv' or 'mlp' (got {self.arch!r})")


@dataclass
class ConditionFields:
    """Mixin of conditional configs: what the encoder and decoder see besides x and z."""

    condition: str = field(default="class", metadata={
        "help": '"class" (one-hot of num_classes) or "attributes" (cond_dim values in [0, 1])', "choices": CONDITIONS})
    cond_dim: int = field(default=0, metadata={
        "help": 'size of the condition vector; 0 = from the data (num_classes for "class")'})

    def _check_condition(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"condition must be 'class' or 'attributes' (got {self.condition!r})")
        if self.condition == "class":
            if self.cond_dim not in (0, self.num_classes):
                raise ValueError(f"a class condition has cond_dim = num_classes = {self.num_classes} "
                                 f"(got cond_dim={self.cond_dim})")
            self.cond_dim = self.num_classes
        elif self.cond_dim < 1:
            raise ValueError(f"an attribute condition needs cond_dim >= 1, the number of attributes "
                             f"(got {self.cond_dim})")


@dataclass(frozen=True)
class Phase:
    """One training phase: `fraction` of the steps, Adam over the parameters whose names start with one of
    `params` (all when empty; the others are frozen), minimising the named term `objective`."""

    name: str
    fraction: float = 1.0
    params: tuple[str, ...] = ()
    objective: str = "loss"

    def __post_init__(self) -> None:
        if not isinstance(self.params, tuple) or not all(isinstance(p, str) for p in self.params):
            raise ConfigError(f"phase {self.name!r}: params must be a tuple of parameter-name prefixes "
                              f"(got {self.params!r})")


class LatentModel(nn.Module, abc.ABC):
    """Base class. Subclasses implement encode/prior/decode/nll/kl; the rest is shared."""

    rate_key: str = "kl"  # the named term that is the rate R
    distortion_key: str = "rec"  # the named term that is the distortion D
    objective_label: str = "D + β·R"  # how the app labels the `loss` term
    calibrated_variance: bool = False  # True when the decoder variance is fitted to the images being scored
    closed_form_kl: bool = True  # False when `kl` is a Monte-Carlo estimate at the sampled z (a flow prior)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config

    @property
    def conditional(self) -> bool:
        """True when encode/decode/prior use y (the config has a condition)."""
        return getattr(self.config, "condition", "none") != "none"

    @property
    def class_conditional(self) -> bool:
        """True when y is a class index (one-hot for the networks), so samples can be asked per class."""
        return self.conditional and self.config.condition == "class"

    @property
    def cond_dim(self) -> int:
        return self.config.cond_dim if self.conditional else 0

    def condition_vector(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """y -> the (B, cond_dim) float vector the networks see: a one-hot row per class index, or the attribute
        values as they are. None for unconditional models. Shapes are checked here (no host sync); class indices
        outside 0..K-1 are the caller's to refuse (the CLI and app do, with one line)."""
        if not self.conditional:
            return None
        name = type(self).__name__
        if y is None:
            raise ConfigError(f"{name} is conditional: it needs a {self.config.condition} condition y")
        if self.config.condition == "class":
            if y.dim() != 1 or y.dtype.is_floating_point:
                raise ConfigError(f"{name}: a class condition is one integer per item, shape (B,) "
                                  f"(got {y.dtype} of shape {tuple(y.shape)})")
            return torch.eye(self.cond_dim, device=y.device)[y]  # (B, K); indexing, not one_hot: no host sync
        if y.dim() != 2 or y.shape[1] != self.cond_dim:
            raise ConfigError(f"{name}: an attribute condition has shape (B, {self.cond_dim}) "
                              f"(got {tuple(y.shape)})")
        return y if y.is_floating_point() else y.float()  # float64 stays float64 (maths tests)

    # --- hooks with defaults -------------------------------------------------------------------
    def setup(self, data) -> None:
        """Look at the training data once before training starts (fit calls it at step 0): class-centre
        initialisation, a teacher fitted to the data. Whatever it computes must live in buffers or parameters, so
        that a saved run reloads without the data. Default: nothing."""

    def upgrade_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The weights of a run saved by an older version, brought to this version's state dict (``load_run`` calls it
        before comparing keys): a family that adds a tensor fills it in here. Default: unchanged."""
        return state

    def phases(self) -> list[Phase]:
        """Training phases, in order (fit gives each its share of the steps and a fresh optimiser): two-stage
        prior fitting, a pre-fit of the encoder, a frozen backbone. Default: one phase, all parameters, `loss`."""
        return [Phase("train")]

    @property
    def n_pixels(self) -> int:
        return math.prod(self.config.image_shape)

    # --- parts (subclasses) -------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        ...

    @abc.abstractmethod
    def prior(self, y: torch.Tensor | None = None, n: int | None = None) -> Distribution:
        ...

    @abc.abstractmethod
    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        ...

    @abc.abstractmethod
    def nll(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ...

    @abc.abstractmethod
    def kl(self, q: Distribution, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """KL(q(z|x) || p(z[|y])) per item, (B,). `z` (B, m) is the reparameterised sample the reconstruction
        used: closed-form KLs ignore it, Monte-Carlo KLs (flow priors, Student-t) evaluate log q - log p at it."""

    def kl_per_dim(self, q: Distribution, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """Per-latent-dimension KL (B, m) when it factorises; None otherwise."""
        return None

    def check_images(self, x: torch.Tensor, what: str, *, floats_only: bool = False, values: bool = True) -> None:
        """One-line DataError unless `x` is a batch of this model's images (N, C, H, W): uint8 in 0..255 or floats in
        [0, 1] (``cvae_core.data.check_images``). `values` costs one host sync: once per public call, not per step."""
        check_images(x, self.config.image_shape, what=f"{type(self).__name__}.{what}", floats_only=floats_only,
                     values=values)

    def prepare_batch(self, x: torch.Tensor) -> torch.Tensor:
        """Stored batch -> model input. Images are kept as uint8 and become floats in [0, 1] here; a family
        with other data (token ids) or another input transform (dynamic binarisation) overrides this."""
        return to_float(x) if x.dtype == torch.uint8 else x

    def mean_image(self, logits: torch.Tensor) -> torch.Tensor:
        """Decoder output -> image in [0, 1]."""
        return torch.sigmoid(logits)

    # --- shared behaviour ---------------------------------------------------------------------
    def item_terms(self, x: torch.Tensor, y: torch.Tensor | None = None,
                   extras: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The family's named terms per item, (B,) each. Here the one-sample beta-ELBO of a VAE:
        loss = rec + beta * kl, rec (= distortion D), kl (= rate R), neg_elbo (D + R, beta = 1), mse (per-pixel,
        of the decoder mean at the sampled z), and whatever the likelihood component reports (e.g. log_sigma).
        `extras` are per-item values sliced from the data set with the same batch index as x (unused here)."""
        q = self.encode(x, y)
        z = q.rsample()  # (B, m)
        logits = self.decode(z, y)
        rec, lik_extras = self.nll(x, logits)  # (B,)
        kl = self.kl(q, z, y)  # (B,)
        terms = elbo_terms(rec, kl, self.config.beta)
        terms.update(self.extra_terms(x, q, rec, y))
        if "penalty" in terms:  # a family's extra objective term (RST-VAE: lambda * LTS) joins the loss
            terms["loss"] = terms["loss"] + terms["penalty"]
        terms["mse"] = (self.mean_image(logits).detach() - x).pow(2).flatten(1).mean(1)
        terms.update({k: v.detach().expand(len(x)) for k, v in lik_extras.items()})
        return terms

    def loss(self, x: torch.Tensor, y: torch.Tensor | None = None, extras: dict[str, torch.Tensor] | None = None,
             objective: str = "loss") -> dict[str, torch.Tensor]:
        """Batch means of ``item_terms`` (weighted by ``item_weights`` when the family has any); only the term named
        `objective` (the current phase's) carries the graph, the others are for display."""
        terms = self.item_terms(x, y, extras)
        if objective not in terms:
            raise ConfigError(f"{type(self).__name__} has no term {objective!r} to minimise "
                              f"(terms: {', '.join(terms)})")
        return batch_means(terms, keep_graph=(objective,), weights=self.item_weights(x, y))

    def extra_terms(self, x: torch.Tensor, q: Distribution, rec: torch.Tensor,
                    y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """More named per-item terms (B,) beside the ELBO's, from the step's images, encoder distribution and
        reconstruction term: the objectives of a family's other training phases (a two-stage prior fit, a witness
        prefit). A term named ``penalty`` is added to ``loss`` (so loss = D + beta R + penalty). Default: none."""
        return {}

    def item_weights(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | None:
        """Per-item weights (B,) summing to 1 for the batch means of ``loss`` (class-balanced weighting), or None
        for a plain mean. Default: None."""
        return None

    def prior_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh prior noise for n samples, on the CPU: the family decides what a sample's noise is. Here one
        standard normal eps (n, m); a Student-t prior adds its chi-square mixing variable, a flow prior its base
        noise. The Train page keeps one such tensor fixed so that its previews evolve smoothly."""
        return torch.randn(n, self.config.latent_dim, generator=generator)

    @property
    def default_tau(self) -> float:
        """The sampling scale used when none is asked for: 1 for a standard-normal prior (tau is then the prior's
        own spread); Student-t families answer their theoretical tau (SPEC section 3)."""
        return 1.0

    def prior_latents(self, noise: torch.Tensor, y: torch.Tensor | None = None,
                      tau: float | None = None) -> torch.Tensor:
        """Map prior noise (from ``prior_noise``) to latents: here z = mean + tau * stddev * eps. Families whose
        prior is not location-scale (flows, Student-t with a chi-square mixing variable) override this."""
        tau = self.default_tau if tau is None else tau
        p = self.prior(y, len(noise))
        return p.mean + tau * p.stddev * noise

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, tau: float | None = None,
               eps: torch.Tensor | None = None) -> torch.Tensor:
        """n images in [0, 1], (n, C, H, W). tau scales the prior's spread around its mean (None: the family's
        ``default_tau``); pass `eps` (noise from ``prior_noise``) to decode fixed noise (the app does, so that samples
        evolve smoothly while a model trains)."""
        check_tau(tau)
        if y is not None and self.class_conditional:
            check_labels(y, self.config.num_classes, what=f"{type(self).__name__}.sample: y")
        device = next(self.parameters()).device
        noise = self.prior_noise(n) if eps is None else eps
        y = None if y is None else y.to(device)
        return self.mean_image(self.decode(self.prior_latents(noise.to(device), y, tau), y))

    def sample_classes(self, n: int, weighting: str = "equal", generator: torch.Generator | None = None
                       ) -> torch.Tensor:
        """n class labels to sample with, (n,) int64 on the CPU, drawn independently: "equal" gives every class
        probability 1/K (the mixture sampler of SPEC section 3), "frequency" the training frequencies the model saw
        in ``setup`` (``class_freq``; uniform for a model that never saw data)."""
        K = self.config.num_classes
        if weighting == "equal":
            w = torch.ones(K)
        elif weighting == "frequency":
            w = getattr(self, "class_freq", torch.ones(K)).float().cpu()
        else:
            raise ConfigError(f"weighting must be 'equal' or 'frequency' (got {weighting!r})")
        return torch.multinomial(w, n, replacement=True, generator=generator)

    def family_numbers(self) -> dict[str, float]:
        """Constants and diagnostics of the family that `evaluate --json` reports beside the metrics (Student-t:
        gamma, nu, tau; class centres: their separation). Default: none."""
        return {}

    @torch.no_grad()
    def map_overlays(self, n: int, generator: torch.Generator | None = None, y: torch.Tensor | None = None
                     ) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
        """Latent points to draw over a map of encoder means: name -> (points (N, m) on the CPU, class labels (N,)
        or None). Here: n draws from the prior, at the n conditions `y` when given (an attribute-conditional model
        needs them: the app passes the test images' own); otherwise, for class-conditional models, the classes take
        turns (n per class would crowd the map). Families with class centres add their own entries."""
        device = next(self.parameters()).device
        if y is None and self.class_conditional:
            y = torch.arange(n) % self.config.num_classes
        if self.conditional and y is None:
            return {}  # an attribute-conditional model without conditions has no prior to draw
        y = None if y is None else y[:n].to(device)
        noise = self.prior_noise(n if y is None else len(y), generator=generator).to(device)
        z = self.prior_latents(noise, y)
        labels = y.cpu() if self.class_conditional else None
        return {"prior samples": (z.float().cpu(), labels)}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean at the encoder mean, (B, C, H, W) in [0, 1], of images x (B, C, H, W): uint8 or floats in
        [0, 1] (anything else is a one-line DataError)."""
        self.check_images(x, "reconstruct")
        if y is not None and self.class_conditional:
            check_labels(y, self.config.num_classes, len(x), what=f"{type(self).__name__}.reconstruct: y")
        x = self.prepare_batch(x)
        return self.mean_image(self.decode(self.encode(x, y).mean, y))


def elbo_terms(rec: torch.Tensor, kl: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Named per-item terms from rec (B,) and kl (B,): the one place the beta-weighted ELBO objective is formed."""
    return {"loss": rec + beta * kl, "rec": rec, "kl": kl, "neg_elbo": rec + kl}


def batch_means(terms: dict[str, torch.Tensor], keep_graph: tuple[str, ...] = ("loss",),
                weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-item terms (B,) -> scalars: plain means, or sums weighted by `weights` (B,) summing to 1. The terms in
    `keep_graph` keep their graph, the others are detached, so a phase may minimise any one of them."""
    def reduce(v: torch.Tensor) -> torch.Tensor:
        return v.mean() if weights is None else v.mul(weights).sum()

    return {k: reduce(v if k in keep_graph else v.detach()) for k, v in terms.items()}
