"""Live collapse certificate: what it adds to training at the Train page's log interval. Three variants of the same
run (bs_vae conv on MNIST, batch 128): fit alone; fit with the per-tick encoder means of 500 test images and their
active units (what the Train page always does); and the same plus the live certificate (IT, LTS, GT from those
means; the teacher read from its cache, T of the 500 images computed once when the callback is built)."""

from __future__ import annotations

from cvae_core.data import load_dataset
from cvae_core.eval.certificate import LiveCertificate
from cvae_core.eval.likelihood import TickMeans
from cvae_core.registry import build_model
from cvae_core.train import TrainConfig, fit, resolve_device
from cvae_core.witness import load_or_fit_teacher

try:
    from _common import compare, table
except ImportError:  # run as a module
    from bench._common import compare, table


def main(steps: int = 100, log_every: int = 25, batch_size: int = 128, n_ticks: int = 500) -> str:
    data = load_dataset("mnist")
    device = resolve_device("auto")
    load_or_fit_teacher(data)  # cached by prepare-data; fitted here once otherwise
    x, y = data.x_test[:n_ticks], data.y_test[:n_ticks]
    cfg = TrainConfig(steps=steps, batch_size=batch_size, log_every=log_every, device=device.type)

    def run(callbacks):
        fit(build_model("bs_vae", seed=0), data, cfg, callbacks=callbacks)

    def with_certificate():
        live = LiveCertificate(data, x, background=False)
        run([TickMeans(x, None, y, [live])])

    med = compare({"fit alone": lambda: run([]), "fit + per-tick means and AU": lambda: run([TickMeans(x, None, y)]),
                   "fit + means, AU and live certificate": with_certificate}, repeats=3)
    return table(f"Live certificate, bs_vae conv, {steps} steps x batch {batch_size}, a tick every {log_every} steps "
                 f"on {n_ticks} test images, {device.type}", med, "fit + per-tick means and AU", steps * batch_size,
                 "images/s")


if __name__ == "__main__":
    print(main())
