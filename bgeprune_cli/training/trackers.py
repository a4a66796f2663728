"""`train --report-to`: the same scalars as metrics.jsonl, sent where users track runs, through accelerate's
trackers (TensorBoard, Weights & Biases, MLflow, Comet, Aim, ClearML, DVCLive, SwanLab, Trackio).

Off by default. Only the main process reports (bgeprune decides which process that is; accelerate's
process state, which its logger needs, is made there after bgeprune's process group exists).
Trackers that keep files locally (TensorBoard, Aim, MLflow's default) write under RUN/tracking/; the
others use their own configuration (`WANDB_PROJECT`, `MLFLOW_TRACKING_URI`, ...). A name accelerate
does not know exits 2 before anything loads; a known tracker whose package is missing exits 4 with its
install command. On resume a tracker continues at the step the checkpoint holds, so steps logged after
that checkpoint appear twice in it (metrics.jsonl drops them).

Example:
    bgeprune train recipes/smoke.toml --report-to tensorboard && tensorboard --logdir runs/smoke/tracking
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EnvironmentProblem, UsageError

TRACKING = "tracking"  # RUN/tracking: the local trackers' logs
# The package each tracker needs, for the install line (accelerate's names).
PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "comet_ml": "comet_ml",
            "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}


def parse_names(value: str | None) -> list[str]:
    """`--report-to tensorboard,wandb` as a checked list (exit 2 naming the choices for an unknown name)."""
    names = [n.strip().lower() for n in (value or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        raise UsageError(f"--report-to: unknown tracker {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(PACKAGES)} (comma-separated), e.g. --report-to tensorboard")
    return list(dict.fromkeys(names))


def scalars(record: dict) -> dict[str, float]:
    """A metrics.jsonl record as flat scalar names: `loss`, `terms/cosine`, `expected/layers`, `lr/0`, ..."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("step", "phase"):
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{k}": float(v) for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, list):
            out.update({f"{key}/{i}": float(v) for i, v in enumerate(value) if isinstance(v, (int, float))})
        elif isinstance(value, (bool, int, float)):
            out[key] = float(value)
    out["recovering"] = float(record.get("phase") == "recover")
    return out


def _hparams(values: dict, prefix: str = "") -> dict:
    """A recipe as flat `section.key` values of the types every tracker stores (lists as text)."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_hparams(value, name + "."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def require_trackers(names: list[str]) -> None:
    """Exit 4 with the install command when a named tracker's package is missing (before anything loads)."""
    if not names:
        return
    from accelerate.tracking import get_available_trackers

    available = {str(t) for t in get_available_trackers()}
    missing = [n for n in names if n not in available]
    if missing:
        packages = " ".join(PACKAGES[n] for n in missing)
        raise EnvironmentProblem(f"--report-to {','.join(missing)} needs {packages}, which is not installed; "
                                 f"install it with: pip install {packages} (or drop --report-to)")


class Trackers:
    """The started trackers of one run (none: every call is a no-op)."""

    def __init__(self, names: list[str], run_dir: Path, config: dict):
        self.trackers = []
        if not names:
            return
        from accelerate import PartialState
        from accelerate.tracking import LOGGER_TYPE_TO_CLASS

        require_trackers(names)
        # The trackers log through accelerate's logger, which needs its process state; made after bgeprune's
        # own process group (under torchrun it adopts that group instead of starting one).
        PartialState()
        logging_dir = Path(run_dir) / TRACKING
        run_name = Path(run_dir).name
        for name in names:
            cls = LOGGER_TYPE_TO_CLASS[name]
            tracker = cls(run_name, logging_dir) if cls.requires_logging_directory else cls(run_name)
            tracker.main_process_only = False  # this process is the main one: bgeprune only builds trackers there
            tracker.start()
            tracker.store_init_configuration(_hparams(config))
            self.trackers.append(tracker)

    def log(self, record: dict) -> None:
        values = scalars(record)
        for tracker in self.trackers:
            tracker.log(values, step=record["step"])

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
