"""cvae_core: the model core of the interactive VAE lab. Never imports streamlit.

Entry points: ``registry.MODELS`` / ``build_model``, ``data.load_dataset``, ``train.fit``, ``metrics.evaluate``,
``checkpoint.save_run`` / ``load_run``, ``jobs.TrainingJob``; the CLI is ``python -m cvae_core``.
"""

__version__ = "0.1.0"
