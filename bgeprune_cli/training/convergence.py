"""Did the gates reach the target by the end of the pruning phase? If not, say so and what to change.

finalize-masks always hits the target exactly (it keeps the top-scoring units), so a run whose gates
barely moved still finalizes and exits 0; its masks then rank units by where they started, not by what
training learned. `train` and `finalize-masks` both print this warning, from the numbers the train-run
artifact records (the expected architecture at the end of pruning, and the finalized one).

Example:
    bgeprune finalize-masks runs/smoke/train      # prints the warning when the run recorded a large gap
"""

from __future__ import annotations

FAR = 1.25  # expected encoder parameters more than 25% above (or below 1/1.25 of) the finalized ones
AXES = ("layers", "heads", "ffn", "hidden")


def pruning_gap_warning(info: dict) -> str | None:
    """A warning for a train-run's `info` whose pruning phase ended far from the finalized size, else None."""
    if info.get("method") != "l0" or not info.get("prune_steps"):
        return None  # recovery from given masks: no gates were searched
    expected, final = info["expected"].get("encoder_params"), info.get("encoder_params")
    if not expected or not final or 1 / FAR <= expected / final <= FAR:
        return None
    gaps = {axis: info["expected"][axis] / info["final_sizes"][axis] for axis in AXES
            if info["final_sizes"].get(axis) and axis in info["expected"]}
    axis = max(gaps, key=lambda a: abs(gaps[a] - 1)) if gaps else None
    where = (f"; furthest: {axis} {info['expected'][axis]:.1f} expected against {info['final_sizes'][axis]}"
             if axis else "")
    return (f"the gates ended the pruning phase far from the target: {expected:,.0f} expected encoder parameters "
            f"against {final:,} finalized ({expected / final:.2f}×){where}. The finalized masks then come from "
            f"gates that barely moved, not from what training learned. Give the search more steps "
            f"(train.steps) or a shorter ramp (train.target_warmup_steps), or raise train.lr_lambda and "
            f"train.lr_gates; or, with no budget for a search, use 'bgeprune magnitude' and "
            f"'bgeprune train --masks' (recovery only).")
