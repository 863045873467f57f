"""`python -m fashion_ensemble`: the CLI."""

from fashion_ensemble.cli import main

raise SystemExit(main())
