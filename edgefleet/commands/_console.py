"""Rich consoles for the CLI: terminal width on a terminal, a wide fixed width in pipes and logs."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["make_console", "progress_bar"]


def make_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables into 80 columns when output is captured."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or "COLUMNS" in os.environ else 160
    return Console(stderr=stderr, highlight=False, width=width)


def progress_bar(
    console: Console, *, transient: bool = True, disable: bool = False, indent: str = ""
) -> Progress:
    """The one progress-bar layout the CLI uses: description, bar, n/total, elapsed."""
    return Progress(
        TextColumn(indent + "{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=transient,
        disable=disable,
    )
