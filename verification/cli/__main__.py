"""``python -m verification.cli``: the same command line as ``python -m verification``."""

from verification.cli import main

raise SystemExit(main())
