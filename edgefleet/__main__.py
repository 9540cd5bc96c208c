"""``python -m edgefleet`` runs the CLI."""

from edgefleet.cli import main

main()
