"""What `bgeprune train` shows while it runs: a rich progress bar with ETA on a terminal, else log lines.

The bar's text carries the loss, the expected architecture against the target, and λ, so a user
sees at a glance whether the constraint is being met.

Example:
    bgeprune train recipes/smoke.toml          # progress on stderr; result table on stdout
"""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..ui import err

_SHORT = {"layers": "L", "heads": "H", "ffn": "F", "hidden": "d"}
_TERMS = {"cosine": "cos", "similarity_kl": "kl", "layerwise": "layer", "contrastive": "con"}


def describe(record: dict, targets: dict) -> str:
    """`prune · loss 0.123 (cos 0.010 kl 0.113) · L 5.1/5 H 10.2/10 … · λ₁ …` (expected/target)."""
    expected = record["expected"]
    arch = f"params {expected['encoder_fraction']:.1%}"
    if "sparsity" in targets:
        arch += f"/{1 - targets['sparsity']:.1%}"
    else:
        arch = " ".join(f"{_SHORT[k]} {expected[k]:.1f}/{v}" for k, v in targets.items()) + f" ({arch})"
    lam = " ".join(f"{k} {v:+.2f}" for k, v in record["lambda_1"].items())
    bad = f" · [red]{record['bad_steps']} bad[/]" if record["bad_steps"] else ""
    terms = " ".join(f"{_TERMS.get(k, k)} {v:.3f}" for k, v in record["terms"].items())
    return (f"{record['phase']} · loss {record['loss']:.4f} ({terms}) · {arch}" + (f" · λ₁ {lam}" if lam else "")
            + bad)


class TrainProgress:
    def __init__(self, total: int, start: int, targets: dict, log_every: int, enabled: bool = True):
        """`enabled=False` (every rank but 0 of a distributed run) shows nothing."""
        self.total, self.targets, self.log_every, self.enabled = total, targets, log_every, enabled
        self._bar = None
        if not enabled:
            return
        if err.is_terminal:
            self._bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.description}"),
                                 console=err, transient=False)
            self._task = self._bar.add_task("", total=total, completed=start)
        elif start:
            err.print(f"resuming at step {start} of {total}", highlight=False)

    def __enter__(self):
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    def update(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        text = describe(record, self.targets)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, description=text)
        elif step % self.log_every == 0 or step == self.total:
            err.print(f"step {step}/{self.total} · {text}", highlight=False)
