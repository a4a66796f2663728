"""`bgeprune train`: learn L0 masks toward the recipe's target while distilling from the unpruned base.

The run reads as its phases, top to bottom:
  1. setup   the data and the run directory (checked before any weights load), then the teacher,
             the student and the trainer
  2. resume  with --resume: weights, gates, λ, optimizers, RNG and data position from the newest
             complete checkpoint, so the run continues bit for bit
  3. loop    `train.steps` of the pruning phase (gates sampled, Lagrangian on), then
             `train.recovery_steps` with the masks fixed by the finalize rule (with --masks: only
             the recovery steps, with those masks; training/fixed_masks.py); a checkpoint every
             `train.checkpoint_every` steps; Ctrl-C or SIGTERM checkpoints and exits 130;
             non-finite steps are skipped and counted, and more than `train.max_bad_steps` stop it
  4. write   the `train-run` artifact (RUN/train): gates, student, λ, metrics.jsonl, and for bge-m3
             bases the student's sparse and ColBERT heads

Under `torchrun` / `accelerate launch` the same command trains with one process per GPU
(training/distributed.py): rank 0 alone writes checkpoints, metrics and the artifact and shows
progress; every rank reads the checkpoint on --resume, whatever the world size that wrote it.

Example:
    bgeprune train recipes/smoke.toml && bgeprune finalize-masks runs/smoke/train
    bgeprune train recipes/smoke.toml --masks runs/smoke/masks --run-dir runs/smoke-recovered
    torchrun --nproc_per_node 8 -m bgeprune_cli train recipes/50pct-8gpu.toml --teacher-cache /data/teacher
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from ..artifacts import write_artifact
from ..command_line import command_line
from ..config import BaseDims, LoadedRecipe, targeted_masks
from ..device import resolve_device as _device
from ..errors import BgepruneError, UsageError
from ..filenames import GATES, LAGRANGIAN, M3_HEADS, METRICS, RECOVERY_MASKS, STUDENT
from ..models.loading import base_config, load_model, load_tokenizer
from ..models.probe import probe_batches, probe_texts
from ..models.recipe_base import RecipeBase
from ..models.st_files import Prompts
from ..pruning.importance import importance_scores
from ..pruning.masks import Layout
from ..training import checkpoints, interrupt, progress
from ..training import run_dir as train_run_dir
from ..training.batches import TrainData
from ..training.convergence import pruning_gap_warning
from ..training.distill_model import enable_checkpointing
from ..training.distributed import Dist
from ..training.fixed_masks import API, FixedMasks, from_tensors, read_fixed_masks
from ..training.teacher_cache import open_run_cache
from ..training.trackers import Trackers, require_trackers
from ..training.trainer import Trainer, TrainModels
from ..training.vocab_corpus import preflight
from ..ui import Progress, err, esc

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ..training.teacher_cache import TeacherCache


class TrainingDiverged(BgepruneError):
    """Too many non-finite losses: the run stops, its last good checkpoint intact."""

    exit_code = 1


@dataclass
class TrainOptions:
    """The command-line options of one run (the recipe says everything else)."""

    resume: bool = False
    force: bool = False
    fixed_masks: dict[str, torch.Tensor] | None = None  # Python API: recover only, with these masks
    masks: Path | None = None  # --masks: recover only, with this masks artifact's masks
    teacher_cache: Path | None = None
    gradient_checkpointing: bool = False
    resume_hint: str = ""  # the exact command that continues this run
    report_to: list[str] = field(default_factory=list)  # --report-to: accelerate trackers (training/trackers.py)


# Session attributes a checkpoint carries (state key -> attribute), beside the trainer, the data position
# and the random generators; written and read back from this one list.
SESSION_STATE = {"bad_steps": "bad_steps", "elapsed_s": "elapsed"}


@dataclass
class Session:
    """Everything one run holds, phase after phase."""

    recipe: LoadedRecipe
    run_dir: Path
    dist: Dist
    options: TrainOptions
    data: TrainData
    tokenizer: PreTrainedTokenizerBase
    trainer: Trainer
    cache: TeacherCache | None
    prompts: Prompts  # the base's query and passage prompts, applied to the training texts
    fixed: FixedMasks | None  # recovery only, with these masks
    step: int = 0
    bad_steps: int = 0
    elapsed: float = 0.0


def run(recipe: LoadedRecipe, *, run_dir: Path | None = None, resume: bool = False, force: bool = False,
        device: str | None = None, fixed_masks: dict[str, torch.Tensor] | None = None, masks: Path | None = None,
        teacher_cache: Path | None = None, gradient_checkpointing: bool = False,
        report_to: list[str] | None = None) -> dict:
    """Train; `masks` (a masks artifact) or `fixed_masks` (tensors) skip the pruning phase and only
    recover, with those masks, for train.recovery_steps; `report_to` names accelerate trackers."""
    if fixed_masks is not None and masks is not None:
        raise UsageError("give the masks once: a masks artifact or tensors, not both.")
    run_dir = Path(run_dir or recipe.run_dir())
    require_trackers(list(report_to or []))
    dist = Dist(_device(device))
    options = TrainOptions(resume, force, fixed_masks, masks, teacher_cache, gradient_checkpointing,
                           resume_command(recipe, run_dir, device, teacher_cache, gradient_checkpointing, dist.world,
                                          masks, report_to), list(report_to or []))
    try:
        with train_run_dir.locked(run_dir, dist):
            try:
                session = _setup(recipe, run_dir, dist, options)
                _loop(session)
                result = _write(session)
                # Every rank waits until rank 0 has written the artifact, so the process group is torn
                # down by all ranks together (a rank leaving early aborted in gloo's teardown under load).
                dist.barrier()
                return result
            except BaseException:
                if dist.is_main:  # a --force run that never committed a checkpoint gives the old run back
                    train_run_dir.restore(run_dir)
                raise
    finally:
        dist.close()


def resume_command(recipe: LoadedRecipe, run_dir: Path, device: str | None, teacher_cache: Path | None,
                   gradient_checkpointing: bool, world: int, masks: Path | None = None,
                   report_to: list[str] | None = None) -> str:
    """The exact command that continues this run: same recipe, overrides and run directory, plus --resume."""
    launcher = ["torchrun", "--nproc_per_node", str(world), "-m", "bgeprune_cli"] if world > 1 else ["bgeprune"]
    return command_line([*launcher, "train", recipe.path], [
        ("--set", list(recipe.overrides)), ("--run-dir", run_dir), ("--resume", True), ("--masks", masks),
        ("--device", device), ("--teacher-cache", teacher_cache), ("--gradient-checkpointing", gradient_checkpointing),
        ("--report-to", ",".join(report_to) if report_to else None)])


# ---------------------------------------------------------------- 1. setup (and 2. resume)


def _setup(recipe: LoadedRecipe, run_dir: Path, dist: Dist, options: TrainOptions) -> Session:
    r = recipe.recipe
    dims = BaseDims.from_config(base_config(r.base.model, r.base.revision))  # config.json only
    if not targeted_masks(r.target, dims):
        raise UsageError(f"nothing to train: {recipe.path} only trims the vocabulary (a [vocab] section and no "
                         f"smaller [target]). Run 'bgeprune magnitude {recipe.path}' instead (no training, seconds), "
                         f"then finalize-masks, prune and export-hf as usual.")
    fixed = _fixed_masks(options, r, dims, run_dir)
    # Data and run directory first: a missing file or a run that would be clobbered fails before weights load.
    data = TrainData.open(r.data, r.train, r.distill.contrastive, dist.local_block,
                          _warn if dist.is_main else lambda message: None, r.distill.translation)
    checkpoint = train_run_dir.prepare(run_dir, options.resume, options.force, dist)
    if checkpoint is not None:
        train_run_dir.check_resume(checkpoint, recipe.sha256, data.fingerprints, options.force)
        _check_resumed_masks(checkpoint, fixed)
    prune_steps = 0 if fixed is not None else r.train.steps
    total = prune_steps + r.train.recovery_steps
    if total == 0:
        raise UsageError("nothing to train: recovery with fixed masks (--masks) runs train.recovery_steps, and the "
                         "recipe sets 0; --set train.recovery_steps=N.")

    ctx = RecipeBase(r)
    preflight(r, ctx.base_dir, ctx.base_config, recipe.where)  # [vocab]: bad keep tokens or corpus fail now
    torch.manual_seed(r.train.seed)
    teacher = load_model(ctx.base_dir).to(dist.device).requires_grad_(False)
    # The student starts as the base and runs without dropout: distillation asks it to reproduce the
    # teacher's outputs exactly, and dropout noise only blurs that target.
    student = load_model(ctx.base_dir).to(dist.device)
    if options.gradient_checkpointing:
        enable_checkpointing(student)
    cache = (open_run_cache(options.teacher_cache, ctx, r, dist.device, dist.rank, _cache_warning)
             if options.teacher_cache is not None else None)
    models = TrainModels(student, teacher, ctx.base_heads, ctx.adapter, ctx.dims, ctx.pooling)
    trainer = Trainer(models, r.train, r.distill, r.target, targeted_masks(r.target, ctx.dims), prune_steps, total,
                      dist, cache)
    tokenizer = load_tokenizer(ctx.base_dir)
    if fixed is not None:
        trainer.fix_masks(fixed.masks)
    elif r.train.importance_init > 0 and checkpoint is None:  # a resumed run reads its gates back instead
        batches = [{k: v.to(dist.device) for k, v in b.items()}
                   for b in probe_batches(tokenizer, probe_texts(), r.data.max_length)]
        trainer.init_gates(importance_scores(student, ctx.adapter, ctx.dims, trainer.types, batches),
                           r.train.gate_init, r.train.importance_init)
    session = Session(recipe, run_dir, dist, options, data, tokenizer, trainer, cache, ctx.prompts, fixed)
    if checkpoint is not None:
        _resume(session, checkpoint)
    return session


def _fixed_masks(options: TrainOptions, r, dims: BaseDims, run_dir: Path) -> FixedMasks | None:
    """The masks of a recovery-only run, checked against the recipe before any weights load."""
    if options.masks is not None:
        return read_fixed_masks(options.masks, r, dims, run_dir)
    if options.fixed_masks is not None:
        return from_tensors(options.fixed_masks, r, dims)
    return None


def _check_resumed_masks(checkpoint: checkpoints.Checkpoint, fixed: FixedMasks | None) -> None:
    """A recovery-only run resumes with the same masks, and an L0 run without any."""
    recorded = checkpoint.artifact.info.get("fixed_masks")  # {"source", "sha256"} or None
    if (recorded or {}).get("sha256") == (fixed.fingerprint if fixed else None):
        return
    if recorded is None:
        raise UsageError(f"cannot resume {checkpoint.artifact.path} with --masks: it is an L0 run (no fixed masks); "
                         f"drop --masks to continue it, or start a recovery-only run in a new --run-dir.")
    again = f"--masks {recorded['source']}" if recorded["source"] != API else "the same fixed masks"
    raise UsageError(f"cannot resume {checkpoint.artifact.path}: it recovers with fixed masks from "
                     f"{recorded['source']}, {'and these differ' if fixed else 'and none were given'}; resume "
                     f"with {again}, or start over with --force.")


def _cache_warning(message: str) -> None:
    err.print(f"[yellow]teacher cache:[/] {esc(message)}", highlight=False)


def _resume(session: Session, checkpoint: checkpoints.Checkpoint) -> None:
    """Continue exactly where the checkpoint left off."""
    state, trainer = checkpoint.state(), session.trainer
    trainer.load({name: checkpoint.tensors(name) for name in checkpoints.TENSOR_FILES}, state["trainer"])
    session.data.load_state_dict(state)
    checkpoints.restore_rng(state["rng"], trainer.generator)
    session.step = checkpoint.step
    for key, attribute in SESSION_STATE.items():
        setattr(session, attribute, state[key])
    if session.dist.is_main:
        train_run_dir.truncate_metrics(session.run_dir, session.step)
    if session.step >= trainer.prune_steps and trainer.fixed is None:
        trainer.start_recovery()


# ---------------------------------------------------------------- 3. loop


def _loop(session: Session) -> None:
    s, trainer, train = session, session.trainer, session.recipe.recipe.train
    total = trainer.total_steps
    bar = Progress("train", total, train.log_every, start=s.step, enabled=s.dist.is_main, transient=False,
                   log_label="step")
    targets = progress.targets(session.recipe.recipe.target, trainer.dims)
    s.run_dir.mkdir(parents=True, exist_ok=True)
    metrics = (s.run_dir / METRICS).open("a", encoding="utf-8") if s.dist.is_main else None
    trackers = None
    try:
        trackers = Trackers(s.options.report_to if s.dist.is_main else [], s.run_dir, session.recipe.resolved)
        with interrupt.StopRequest() as stop, bar:
            while s.step < total:
                if s.step == trainer.prune_steps and trainer.fixed is None:
                    trainer.start_recovery()
                started = time.perf_counter()
                result = trainer.step(s.step, s.data.next_micro_batches(s.tokenizer, s.dist.device, s.prompts),
                                      stop.requested)
                s.step += 1
                s.elapsed += time.perf_counter() - started
                if not result.finite:
                    s.bad_steps += 1
                    if s.bad_steps > train.max_bad_steps:
                        _diverged(s)
                line = progress.record(s.step, result, trainer, s.bad_steps, s.elapsed)
                if metrics is not None and (s.step % train.log_every == 0 or s.step == total or not result.finite):
                    metrics.write(json.dumps(line, sort_keys=True) + "\n")
                    metrics.flush()
                    trackers.log(line)
                bar.update(s.step, progress.describe(line, targets), markup=True)
                saved = s.step % train.checkpoint_every == 0 or s.step == total
                if saved:
                    last_saved = _checkpoint(s)
                if result.interrupt:  # agreed by all ranks in the step's all-reduce
                    path = last_saved if saved else _checkpoint(s)
                    bar.stop()
                    if s.dist.is_main:
                        where = f"checkpoint {esc(path)}" if path else "no checkpoint yet"
                        err.print(f"[yellow]interrupted at step {s.step}[/]; {where}. Continue with:\n"
                                  f"  {esc(s.options.resume_hint)}", highlight=False, soft_wrap=True)
                    raise KeyboardInterrupt
    finally:
        if trackers is not None:
            trackers.close()
        if metrics is not None:
            metrics.close()
        if s.cache is not None:
            s.cache.close()


def _checkpoint(s: Session) -> Path | None:
    """Write a checkpoint (rank 0, after checking every rank holds the same model); all ranks wait for it.

    Weights that are no longer finite are not checkpointed: rotation would delete the good checkpoints
    for them, and a resume from one could only fail. The last good one is returned instead."""
    trainer = s.trainer
    s.dist.check_in_sync(trainer.sync_tensors)
    if s.cache is not None:
        s.cache.flush()
    tensors = trainer.tensors()
    if not all(bool(torch.isfinite(t).all()) for group in tensors.values() for t in group.values()
               if t.is_floating_point()):
        last = checkpoints.latest(s.run_dir)
        if s.dist.is_main:
            _warn(f"step {s.step}: the weights are not finite, so no checkpoint is written; "
                  + (f"the last good one is {last.artifact.path}" if last else "none was written before"))
        return last.artifact.path if last else None
    path = checkpoints.checkpoint_dir(s.run_dir) / f"step-{s.step:08d}"
    if s.dist.is_main:
        state = {"trainer": trainer.state(), **s.data.state_dict(), "rng": checkpoints.rng_state(trainer.generator),
                 **{key: getattr(s, attribute) for key, attribute in SESSION_STATE.items()}}
        r = s.recipe
        path = checkpoints.save(s.run_dir, s.step, tensors, state,
                                {"data": s.data.fingerprints, "world_size": s.dist.world,
                                 "fixed_masks": _masks_record(s.fixed)}, r.resolved, r.sha256,
                                r.recipe.train.keep_checkpoints)
        train_run_dir.drop_set_aside(s.run_dir)  # the new run has a checkpoint: the old one can go
    s.dist.barrier()  # a rank that stops next must not exit before the checkpoint is committed
    return path


def _masks_record(fixed: FixedMasks | None) -> dict | None:
    return {"source": fixed.source, "sha256": fixed.fingerprint} if fixed else None


def _diverged(s: Session) -> None:
    last = checkpoints.latest(s.run_dir)
    where = f"the last good checkpoint is {last.artifact.path}" if last else "no checkpoint was written yet"
    limit = s.recipe.recipe.train.max_bad_steps
    raise TrainingDiverged(f"{s.bad_steps} steps had a non-finite loss (limit train.max_bad_steps = {limit}); "
                           f"stopped at step {s.step}, {where}. Lower train.lr_weights or train.lr_gates, check the "
                           f"data, then --resume or start over.")


def _warn(message: str) -> None:
    err.print(f"[yellow]warning:[/] {esc(message)}", highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- 4. write


def _teacher_usage(s: Session) -> dict:
    """Teacher forward passes and cache hits, summed over ranks."""
    cache = s.cache
    numbers = torch.tensor([s.trainer.teacher.forwards, cache.hits if cache else 0, cache.misses if cache else 0],
                           dtype=torch.float64)
    forwards, hits, misses = (int(v) for v in s.dist.reduce(numbers, "sum").tolist())
    usage = {"teacher_forwards": forwards}
    if cache is not None:
        usage["teacher_cache"] = {"path": str(cache.path), "hits": hits, "misses": misses}
    return usage


def _write(s: Session) -> dict:
    out = s.run_dir / train_run_dir.TRAIN
    usage = _teacher_usage(s)  # a collective: every rank takes part
    if not s.dist.is_main:
        return {"artifact": str(out), "kind": "train-run", "rank": s.dist.rank}
    trainer, recipe = s.trainer, s.recipe
    final = trainer.fixed if trainer.fixed is not None else trainer.masks.finalized(recipe.recipe.target)
    layout = Layout.from_masks(final, trainer.dims)
    # The pruning phase's end is what the Lagrangian aimed at; in recovery the masks are binary.
    expected = trainer.pruned_expected or trainer.expected()
    info = {"method": "l0" if trainer.prune_steps else "fixed-masks", "gate_kind": "log_alpha",
            "masks": trainer.types, "base_dims": asdict(trainer.dims), "steps": s.step,
            "prune_steps": trainer.prune_steps, "recovery_steps": s.step - trainer.prune_steps,
            "bad_steps": s.bad_steps, "train_seconds": round(s.elapsed, 1), "device": str(s.dist.device),
            "expected": expected, "final_sizes": layout.sizes(), "encoder_params": layout.encoder_params(),
            "lambda_1": trainer.lambdas(), "data": s.data.fingerprints, "m3_heads": trainer.student_heads is not None,
            "data_summary": s.data.summary(), "world_size": s.dist.world, "micro_batch_size": s.data.micro_size,
            "micro_batches_per_rank": len(s.data.local), "gradient_checkpointing": s.options.gradient_checkpointing,
            "fixed_masks": _masks_record(s.fixed), **usage}
    info["warning"] = pruning_gap_warning(info)
    tensors = trainer.tensors()
    lagrangian = {k: v for k, v in tensors["extras"].items() if k.startswith("lagrangian.")}
    with write_artifact(out, "train-run", force=True, recipe=recipe.resolved, recipe_sha256=recipe.sha256,
                        info=info) as tmp:
        for name, file in (("gates", GATES), ("student", STUDENT)):
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors[name].items()}, str(tmp / file))
        save_file({k: v.detach().cpu().contiguous() for k, v in lagrangian.items()}, str(tmp / LAGRANGIAN))
        if trainer.student_heads is not None:  # in the dtype of the base's head files, as the export writes them
            save_file(trainer.student_heads.tensors(), str(tmp / M3_HEADS))
        if trainer.fixed is not None:  # finalize-masks checks that it reproduces these exactly
            save_file({k: v.to(torch.bool).cpu().contiguous() for k, v in trainer.fixed.items()},
                      str(tmp / RECOVERY_MASKS))
        if (s.run_dir / METRICS).is_file():
            (tmp / METRICS).write_bytes((s.run_dir / METRICS).read_bytes())
    return {"artifact": str(out), "kind": "train-run", **info}
