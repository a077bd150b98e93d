"""Run folders: save and load (``folder``), the one run lister (``catalog``), the one set-up pipeline (``setup``)."""
