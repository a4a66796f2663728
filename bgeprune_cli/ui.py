"""Terminal output: people-facing messages and progress on stderr, results on stdout.

Progress uses rich (spinner and elapsed time on a TTY; one log line per step otherwise).

Example:
    with step("slicing tensors"):
        ...
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console()


@contextmanager
def step(message: str):
    start = time.perf_counter()
    if err.is_terminal:
        with err.status(f"{message}…"):
            yield
    else:
        err.print(f"{message}…", highlight=False)
        yield
    err.print(f"[green]✓[/] {message} [dim]({time.perf_counter() - start:.1f}s)[/]", highlight=False)


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    result = Table(title=title, title_justify="left")
    for column in columns:
        result.add_column(column)
    for row in rows:
        result.add_row(*[str(cell) for cell in row])
    return result
