"""``full_evaluation``: everything ``evaluate --json`` reports for a model and its data set, the one entry of the
evaluation layer (likelihood terms from ``metrics``, the collapse certificate, the sample or attribute metrics)."""

from __future__ import annotations

from cvae_core.eval.attributes import attribute_metrics
from cvae_core.eval.certificate import certificate_metrics
from cvae_core.eval.likelihood import evaluate
from cvae_core.eval.samples import generative_metrics
from cvae_core.models.base import LatentModel


def full_evaluation(model: LatentModel, data, *, n_test: int | None = None, is_samples: int = 0, seed: int = 0,
                    sample_metrics: bool = True, n_per_class: int = 1000, n_samples: int = 10_000,
                    fid: str | None = None, fid_samples: int = 1000, certificate: bool = True, progress=None,
                    teacher: str | None = None) -> dict:
    """Everything `evaluate --json` reports for a model and its data set (a ``Dataset``): ``evaluate`` on the
    first `n_test` test images, with the training images for ``neg_elbo_train_sigma``, plus the sample-quality
    metrics of ``sample_metrics.generative_metrics`` (per-class precision/recall/F1 and mode coverage for
    conditional models, class frequencies for unconditional ones, classifier-FID, and Inception FID with
    ``fid="inception"``); for models conditioned on morpho-mnist attributes, ``attributes.attribute_metrics``
    instead (attribute accuracy over every combination, digit accuracy, classifier-FID on the ink). With
    `certificate`, the collapse certificate of the test encoder means (``certificate.certificate_metrics``: IT, LTS,
    GT, energy, mu_sq and the teacher's identity: the model's own teacher, else the one identified by `teacher` (a
    run's recorded ``teacher``), else the data set's shipped or cached one). `progress(fraction, text)` is called
    during the slow parts."""
    device = next(model.parameters()).device
    x, y = data.x_test[:n_test], data.y_for(model, "test")[:n_test]
    extras = {k: v[:n_test] for k, v in data.extras_test.items()}
    if progress:
        progress(0.0, "evaluating likelihood terms on the test set")
    means: list = []
    out = evaluate(model, x, y, is_samples=is_samples, seed=seed, extras=extras, train_x=data.x_train,
                   train_y=data.y_for(model, "train"), means_out=means)
    if certificate:
        if progress:
            progress(0.05, "the collapse certificate of the test encoder means")
        out.update(certificate_metrics(model, data, x, means[0], recorded=teacher))
    attribute_model = model.conditional and not model.class_conditional
    if attribute_model and sample_metrics and data.name.startswith("morpho-mnist"):
        sub = None if progress is None else (lambda f, t: progress(0.1 + 0.9 * f, t))
        out.update(attribute_metrics(model, data, seed=seed, progress=sub, train_sigma_value=out.get("train_sigma")))
    if attribute_model and fid:  # samples need conditions; the Inception path asks for classes
        out["inception_fid_skipped"] = "not computed for attribute-conditional models (classifier-FID is)"
    elif not attribute_model and (sample_metrics or fid):
        sub = None if progress is None else (lambda f, t: progress(0.1 + 0.9 * f, t))
        out.update(generative_metrics(model, x, y, n_per_class=n_per_class if sample_metrics else 0,
                                      n_samples=n_samples if sample_metrics else 0, seed=seed, fid=fid,
                                      fid_samples=fid_samples, progress=sub, device=device))
    if progress:
        progress(1.0, "done")
    return out
