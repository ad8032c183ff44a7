"""`python -m atpd.cli ...`: the same as the `atpd` console script."""

from atpd.cli.entry import main

raise SystemExit(main())
