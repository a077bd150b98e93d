"""``python -m cvae_core``: the command line lives in ``cvae_core.cli``."""

from cvae_core.cli import main

raise SystemExit(main())
