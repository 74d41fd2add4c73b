"""``python -m robustkit``: the same command line as ``robustkit`` (see :mod:`robustkit.cli`)."""
from robustkit.cli import main

raise SystemExit(main())
