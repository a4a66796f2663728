"""Terminal output: people-facing messages and progress on stderr, results on stdout.

Progress uses rich (spinner and elapsed time on a TTY; one log line per step otherwise). Rich reads
`[...]` as markup, so text that comes from users or files (paths, recipe keys like `[data.stream]`,
error messages) goes through `esc`; table cells are escaped unless they are `styled(...)`.

Example:
    with step("slicing tensors"):
        ...
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

err = Console(stderr=True)
out = Console()


def esc(value) -> str:
    """`value` as text that rich prints literally (brackets in paths and keys survive)."""
    return escape(str(value))


def styled(markup: str) -> Text:
    """A table cell that is meant as rich markup (every other cell is printed literally)."""
    return Text.from_markup(markup)


@contextmanager
def step(message: str):
    """`message` is plain text (escaped here); a spinner on a TTY, a line otherwise, then ✓ and the time."""
    message = esc(message)
    start = time.perf_counter()
    if err.is_terminal:
        with err.status(f"{message}…"):
            yield
    else:
        err.print(f"{message}…", highlight=False)
        yield
    err.print(f"[green]✓[/] {message} [dim]({time.perf_counter() - start:.1f}s)[/]", highlight=False)


def table(title: str, columns: list[str], rows: list[list]) -> Table:
    """A table whose title, headers and cells print literally (cells made with `styled` keep their markup)."""
    result = Table(title=Text(title), title_justify="left")
    for column in columns:
        result.add_column(Text(column))
    for row in rows:
        result.add_row(*[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row])
    return result


class Progress:
    """A bar with ETA on a terminal, else a log line every `log_every` steps and at the end; nothing if disabled.

    One class for every long loop (training steps, the speed grid, quality encoding). Log lines read
    `{log_label} {done}/{total} · {description}`. Descriptions are plain text unless `markup=True`
    (bgeprune's own formatting, never user text).
    """

    def __init__(self, label: str, total: int, log_every: int = 10, *, start: int = 0, enabled: bool = True,
                 transient: bool = True, log_label: str | None = None):
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.label, self.total, self.log_every, self.done = label, total, max(1, log_every), start
        self.log_label, self.enabled = log_label or label, enabled
        self._bar = None
        if enabled and err.is_terminal:
            self._bar = RichProgress(TextColumn(f"[bold]{esc(label)}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                     TextColumn("{task.description}"), console=err, transient=transient)
            self._task = self._bar.add_task("", total=total, completed=start)
        elif enabled and start:
            err.print(f"resuming at {esc(self.log_label)} {start} of {total}", highlight=False)

    def __enter__(self) -> "Progress":
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, description: str = "", markup: bool = False) -> None:
        self.update(self.done + 1, description, markup)

    def update(self, done: int, description: str = "", markup: bool = False) -> None:
        if not self.enabled:
            return
        self.done = done
        text = description if markup else esc(description)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=text)
        elif done % self.log_every == 0 or done == self.total:
            err.print(f"{esc(self.log_label)} {done}/{self.total}" + (f" · {text}" if text else ""), highlight=False)
