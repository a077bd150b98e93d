"""The sequence CVAE (SPEC section 6): the small LM (``lm``), the model, its training, metrics, run folders and CLI."""
