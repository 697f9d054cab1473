"""``python -m gateway ...``: the same as the ``lambdagate`` command."""

from gateway.cli import main

raise SystemExit(main())
