"""Terminal output: people-facing messages and progress on stderr, results on stdout.

Progress uses rich (a bar with ETA on a TTY; otherwise one log line every few steps with elapsed time,
rate and ETA). Off a terminal (Slurm, nohup, CI) nothing wraps at 80 columns: lines are as long as
their text and tables as wide as their cells; a table cell never ends in an ellipsis (a number too wide
for a terminal wraps inside its cell instead). Rich reads
`[...]` as markup, so text that comes from users or files (paths, recipe keys like `[data.stream]`,
error messages) goes through `esc`; table cells are escaped unless they are `styled(...)`.

Example:
    with step("slicing tensors"):
        ...
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table
from rich.text import Text

LOG_WIDTH = 10_000  # off a terminal: wide enough that no log line or table is ever wrapped by width


class _Console(Console):
    """A console that wraps only for a terminal (or a COLUMNS the user set); a log file gets whole lines."""

    @property
    def size(self) -> ConsoleDimensions:
        size = Console.size.fget(self)
        if self.is_terminal or self._width is not None or os.environ.get("COLUMNS", "").isdigit():
            return size
        return ConsoleDimensions(LOG_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


err = _Console(stderr=True)
out = _Console()


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
        result.add_column(Text(column), overflow="fold")  # a cut number would be a wrong number
    for row in rows:
        result.add_row(*[cell if isinstance(cell, Text) else Text(str(cell)) for cell in row])
    return result


LOG_INTERVAL_S = 60.0  # off a terminal, a progress line at least this often


class Progress:
    """A bar with ETA on a terminal, else a log line every `log_every` steps, at least once a minute, and at
    the end; nothing if disabled.

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
        self._started, self._start_count = time.perf_counter(), start
        self._last_line = self._started  # when the last log line was printed (off a terminal)
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
            return
        now = time.perf_counter()
        # Every log_every items, at the end, and at least once a minute: a loop of a few slow items
        # (bench's speed grid at 8,192 tokens) still says it is alive and when it will end.
        if done % self.log_every == 0 or done == self.total or now - self._last_line >= LOG_INTERVAL_S:
            self._last_line = now
            line = f"{esc(self.log_label)} {done}/{self.total} · {self._timing(done, now)}"
            err.print(line + (f" · {text}" if text else ""), highlight=False)

    def _timing(self, done: int, now: float | None = None) -> str:
        """Elapsed, rate and ETA for a log line; the rate counts only this process's items (not a resumed start)."""
        elapsed = (time.perf_counter() if now is None else now) - self._started
        count = done - self._start_count
        if count <= 0 or elapsed <= 0:
            return f"{clock(elapsed)} elapsed"
        rate = count / elapsed
        speed = f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"
        return f"{clock(elapsed)} elapsed · {speed} · ETA {clock(max(0, self.total - done) / rate)}"


def clock(seconds: float) -> str:
    """4:05, or 1:02:03 past an hour."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
