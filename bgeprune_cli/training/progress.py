"""What `bgeprune train` logs and shows per step: the metrics.jsonl record and its one-line description.

The description (the text of the progress bar, or of a log line every `train.log_every` steps when
not on a terminal) carries the loss, the expected architecture against the target, and λ, so a
user sees at a glance whether the constraint is being met.

Example:
    bgeprune train recipes/smoke.toml          # progress on stderr; result table on stdout
"""

from __future__ import annotations

_SHORT = {"layers": "L", "heads": "H", "ffn": "F", "hidden": "d"}
_TERMS = {"cosine": "cos", "similarity_kl": "kl", "layerwise": "layer", "contrastive": "con", "translation": "tr",
          "matryoshka": "mat"}


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


def targets(target, dims) -> dict:
    """The architecture the recipe aims at (or its sparsity), for the description's `expected/target`."""
    if target.mode == "sparsity":
        return {"sparsity": target.sparsity}
    return {k: getattr(target, k) or getattr(dims, k) for k in ("layers", "heads", "ffn", "hidden")}


def record(step: int, result, trainer, bad_steps: int, elapsed: float) -> dict:
    """One metrics.jsonl line: losses, the Lagrangian's state, the expected architecture, learning rates."""
    return {"step": step, "phase": "prune" if trainer.fixed is None else "recover",
            "loss": result.loss, "terms": result.terms, "penalty": result.penalty, "gaps": result.gaps,
            "finite": result.finite, "expected": trainer.expected(), "lambda_1": trainer.lambdas(),
            "lr": trainer.scheduler.get_last_lr(), "bad_steps": bad_steps, "elapsed_s": round(elapsed, 3)}
