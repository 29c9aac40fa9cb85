"""``python -m verification``: see :mod:`verification.cli` for the commands and exit codes."""

from verification.cli import main

raise SystemExit(main())
