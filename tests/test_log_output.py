"""The CLI in a log file (Slurm, nohup, CI): progress lines with elapsed time, rate and ETA, nothing wrapped
at 80 columns, and no table cell cut to an ellipsis."""

from __future__ import annotations

import io
import re

from rich.console import Console

from bgeprune_cli import ui


def test_progress_log_lines_carry_elapsed_rate_and_eta(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(ui, "err", ui._Console(file=buffer))
    times = iter([100.0, 110.0, 120.0])
    monkeypatch.setattr(ui.time, "perf_counter", lambda: next(times))
    with ui.Progress("train", 40, log_every=10, start=10) as progress:  # resumed at 10
        progress.update(20, "loss 0.5")
        progress.update(30, "loss 0.4")
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "resuming at train 10 of 40"
    # 10 steps in 10 s: 1.00 it/s, 20 left -> 0:20; then 20 in 20 s, 10 left -> 0:10.
    assert lines[1] == "train 20/40 · 0:10 elapsed · 1.00 it/s · ETA 0:20 · loss 0.5"
    assert lines[2] == "train 30/40 · 0:20 elapsed · 1.00 it/s · ETA 0:10 · loss 0.4"


def test_a_loop_of_few_slow_items_logs_at_least_once_a_minute(monkeypatch):
    buffer = io.StringIO()
    monkeypatch.setattr(ui, "err", ui._Console(file=buffer))
    times = iter([0.0, 30.0, 61.0, 90.0, 125.0])
    monkeypatch.setattr(ui.time, "perf_counter", lambda: next(times))
    with ui.Progress("speed", 4, log_every=10) as progress:  # log_every alone would print only the last
        for _ in range(4):
            progress.advance("batch 1 × 8192")
    lines = buffer.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == ["speed 2/4", "speed 4/4"]
    assert lines[0] == "speed 2/4 · 1:01 elapsed · 30.50 s/it · ETA 1:01 · batch 1 × 8192"


def test_slow_loops_read_seconds_per_step_and_hours(monkeypatch):
    progress = ui.Progress("train", 2000, enabled=False)
    progress._started = 0.0
    assert ui.clock(3723) == "1:02:03" and ui.clock(59.6) == "1:00"
    monkeypatch.setattr(ui.time, "perf_counter", lambda: 85.0)
    assert progress._timing(10) == "1:25 elapsed · 8.50 s/it · ETA 4:41:55"  # 1990 steps × 8.5 s


def test_a_log_file_gets_whole_lines_and_whole_tables(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    buffer = io.StringIO()
    console = ui._Console(file=buffer)
    message = "a long message " * 20
    console.print(message)
    console.print(ui.table("Speed", ["batch×len", "sentences/s"], [["32×128", "1727.912345"], ["1×8", "3.5"]]))
    text = buffer.getvalue()
    assert message.strip() in text  # one line, not wrapped at 80
    assert "1727.912345" in text and "…" not in text


def test_a_narrow_terminal_folds_numbers_instead_of_cutting_them():
    buffer = io.StringIO()
    narrow = Console(file=buffer, width=24, force_terminal=True, color_system=None)
    narrow.print(ui.table("Speed", ["batch×len", "sentences/s", "ratio"], [["32×128", "1727.912345", "2.0412"]]))
    text = buffer.getvalue()
    assert "…" not in text
    assert "".join(re.findall(r"[0-9.]", text)).count("1727") == 1  # the digits are all there, folded
