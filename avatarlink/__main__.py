"""``python -m avatarlink`` runs the command line."""

from avatarlink.cli import main

raise SystemExit(main())
