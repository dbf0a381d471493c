"""Subcommands of the ``avatarlink`` CLI, one module each (see :mod:`avatarlink.cli`)."""
