"""cvae_core: the model core of the interactive VAE lab, usable from a notebook or ``python -m cvae_core``. It never
imports streamlit. The names below are its public API; each has a runnable Example in its docstring (run by
``make test``). More: ``jobs.TrainingJob`` (training in a thread), ``evaluation.full_evaluation`` (everything
``evaluate --json`` reports), ``certificate`` / ``witness`` (the collapse certificate).

Example:
    >>> import cvae_core as cv
    >>> data = cv.load_dataset("mnist").subset(512, 200)
    >>> model = cv.build_model("bs_vae", seed=0, latent_dim=8)
    >>> cv.fit(model, data, cv.TrainConfig(steps=5, batch_size=64, device="cpu")).status
    'finished'
    >>> metrics = cv.evaluate(model, data.x_test)
    >>> metrics["n_test"], len(metrics["kl_per_dim"])
    (200, 8)
"""

from cvae_core.data import load_dataset
from cvae_core.eval.likelihood import evaluate
from cvae_core.registry import MODELS, build_model
from cvae_core.runs.folder import load_run, save_run
from cvae_core.train import TrainConfig, fit

__version__ = "0.1.0"
__all__ = ["MODELS", "TrainConfig", "build_model", "evaluate", "fit", "load_dataset", "load_run", "save_run"]
