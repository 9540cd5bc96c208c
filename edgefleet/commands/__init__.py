"""Subcommand groups of the ``edgefleet`` CLI, one module each, imported lazily."""
