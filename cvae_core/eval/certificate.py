"""The collapse certificate of a model (SPEC section 5; arXiv:2605.18224), on the evaluation side: the numbers of a
set of test images (``certificate_metrics``), the live curve during training (``LiveCertificate``) and what the
Collapse certificate page draws (``inspect``). The mathematics, the teacher and where a teacher comes from are in
``cvae_core.witness``; this module only reads encoder means and calls it."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from cvae_core.eval.likelihood import active_units, encoder_means
from cvae_core.witness import (
    CertificateConfig,
    analytic_code,
    certificate,
    check_latent,
    config_of,
    energy_bound,
    load_or_fit_teacher,
    own_witness,
    simplex_plane,
    teacher_of,
    teacher_source,
    witness_log_probs,
    witness_of,
)


def certificate_metrics(model, data, x: torch.Tensor, means: torch.Tensor, root: str | Path | None = None,
                        recorded: str | None = None) -> dict:
    """The paper's table columns that read the encoder means of images `x` (N, C, H, W): IT, LTS, GT, the analytic
    code's energy bound and E||mu(x)||^2, and ``teacher``, the identity of the teacher used (``teacher_of``: the
    model's own, the one a run recorded in `recorded`, or the data set's). A latent smaller than K - 1 gets
    ``certificate_skipped`` (one line); a recorded teacher not found here adds ``teacher_warning``."""
    cfg = config_of(model)
    m = means.shape[1]
    if m < cfg.K - 1:
        return {"certificate_skipped": f"latent_dim {m} < K - 1 = {cfg.K - 1}: the witness needs {cfg.K - 1} "
                                       "latent coordinates"}
    teacher, warning = teacher_of(model, data, recorded, root)
    t = teacher.probs(x)
    out = certificate(t, means, t.mean(0), cfg.gain, witness_of(model))  # Tbar of these images: exact on them
    out["energy"] = energy_bound(t, cfg.gain)
    out["mu_sq"] = float(means.double().pow(2).sum(1).mean())
    out["teacher"] = teacher.identity
    if warning:
        out["teacher_warning"] = warning
    return out


class LiveCertificate:
    """A training callback: IT, LTS and GT each log tick, from the encoder means the tick already has
    (``on_means``; see ``jobs.TrainingJob`` and ``metrics.TickMeans``). The teacher is read from its cache or fitted
    in a background thread, so training never waits for it; ticks before it is ready record nothing. T(x) of the
    tick's images is computed once. ``status`` says in one line what the callback is doing (for a UI)."""

    def __init__(self, data, x: torch.Tensor, config: CertificateConfig | None = None,
                 root: str | Path | None = None, background: bool = True, latent_dim: int | None = None):
        """`config`: the teacher's settings (default ``CertificateConfig()``). `latent_dim`: the model's; a latent
        smaller than K - 1 makes the callback say so at once and skip the teacher (no fit, no cache read). Without
        it, the first tick's means tell."""
        config = config or CertificateConfig()
        self.config, self.error, self.unavailable, self.teacher_id = config, None, None, None
        self._t: torch.Tensor | None = None
        self._ready = threading.Event()
        if latent_dim is not None and latent_dim < config.K - 1:
            self.unavailable, self._status = self._too_small(latent_dim), "not needed"
            self._ready.set()
            return
        source = teacher_source(data, config, root)
        self._status = f"reading the {source} teacher" if source != "fit" else (
            f"fitting the teacher (PCA {config.pca_dim}, {config.K}-component mixture) on the training images, once "
            f"per data set (about 30 s for 60k); the curve starts when it is ready")

        def prepare() -> None:
            try:
                teacher = load_or_fit_teacher(data, config, root)
                self._t, self.teacher_id = teacher.probs(x), teacher.identity
                self._status = "ready"
            except Exception as e:  # shown, never raised into the training loop
                self.error = self._status = f"the certificate's teacher failed: {type(e).__name__}: {e}"
            finally:
                self._ready.set()

        if background:
            threading.Thread(target=prepare, name="cvae-teacher", daemon=True).start()
        else:
            prepare()

    def _too_small(self, m: int) -> str:
        return f"not available: the latent has {m} coordinates and the witness needs K - 1 = {self.config.K - 1}"

    @property
    def status(self) -> str:
        return self.unavailable or self._status

    def wait(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def on_means(self, model, record: dict, means: torch.Tensor, labels) -> None:
        K = self.config.K
        if means.shape[1] < K - 1:
            self.unavailable = self._too_small(means.shape[1])
            return
        if self._t is None:
            return
        t = self._t[: len(means)]
        record.update(certificate(t, means, t.mean(0), self.config.gain, own_witness(model)))  # tick's Tbar: exact


@torch.no_grad()
def inspect(model, data, n: int = 1000, root: str | Path | None = None, recorded: str | None = None) -> dict:
    """What the page shows of one model: for the first n test images the teacher T (n, K), the witness S (n, K),
    the certificate numbers, active units, the encoder means on the simplex plane (n, 2), the teacher's argmax, and
    the plane point of the best constant code (the analytic code of Tbar, the mean of T over these images, whose
    witness is Tbar), and how often the witness's most likely component is the teacher's (``agreement``; a constant
    witness gets at most ``top_share``, the largest share of one top component), with the teacher's identity
    (``teacher_of``: the model's own, the recorded one, or the data set's) and ``teacher_warning`` ("" when none).
    Raises ConfigError (one line) for a latent smaller than K - 1."""
    cfg = config_of(model)
    check_latent(model.config.latent_dim, cfg.K)
    x = data.x_test[:n]
    cond = data.y_for(model, "test")[:n] if model.conditional else None
    means = encoder_means(model, x, cond).double()
    teacher, warning = teacher_of(model, data, recorded, root)
    t = teacher.probs(x)
    V = witness_of(model)
    log_s = witness_log_probs(means, cfg.K, cfg.gain, V)
    A = simplex_plane(cfg.K, V)
    t_bar = t.mean(0)  # of these images, so that GT > 0 is exact on them
    const = analytic_code(t_bar[None], cfg.K - 1, cfg.gain, V)  # (1, K-1)
    return {**certificate(t, means, t_bar, cfg.gain, V), "au": active_units(means.float()),
            "teacher": teacher.identity, "teacher_warning": warning,
            "t": t.numpy(), "s": log_s.exp().numpy(), "t_bar": t_bar.numpy(),
            "plane": (means[:, : cfg.K - 1] @ A.T).numpy(), "const": (const @ A.T)[0].numpy(),
            "component": t.argmax(1).numpy(), "labels": data.y_test[:n].numpy(), "K": cfg.K, "gain": cfg.gain,
            "agreement": float((log_s.argmax(1) == t.argmax(1)).double().mean()),
            "top_share": float(torch.bincount(t.argmax(1), minlength=cfg.K).max()) / len(t)}
