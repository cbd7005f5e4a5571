"""``python -m labkit``: the labkit command line (see :mod:`labkit.cli`)."""
from labkit.cli import main

raise SystemExit(main())
