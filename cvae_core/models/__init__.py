"""Model families, one per file. ``cvae_core.registry`` names every model."""
