"""`bgeprune train`: learn L0 masks toward the recipe's target while distilling from the unpruned base.

Top to bottom: check data and the run directory (before any weights load), load teacher and
student, then `train.steps` of the pruning phase (gates sampled, Lagrangian on) and
`train.recovery_steps` with the masks fixed by the finalize rule. Checkpoints every
`train.checkpoint_every` steps; `--resume` continues bit for bit; Ctrl-C checkpoints and exits 130;
non-finite losses are skipped and counted, and more than `train.max_bad_steps` abort the run.
Writes a `train-run` artifact (RUN/train): gates.safetensors (log_alpha), student.safetensors,
lagrangian.safetensors, metrics.jsonl, and for bge-m3 bases m3_heads.safetensors (the student's
sparse and ColBERT heads, trained and distilled with it).

Under `torchrun` / `accelerate launch` the same command trains with one process per GPU
(distributed.py): rank 0 alone writes checkpoints, metrics and the artifact and shows progress;
every rank reads the checkpoint on --resume, whatever the world size that wrote it.

Example:
    bgeprune train recipes/smoke.toml && bgeprune finalize-masks runs/smoke/train
    torchrun --nproc_per_node 8 -m bgeprune_cli train recipes/50pct-8gpu.toml --teacher-cache /data/teacher
"""

from __future__ import annotations

import json
import shlex
import signal
import threading
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..filenames import CONFIG, GATES, LAGRANGIAN, MANIFEST, METRICS, RECOVERY_MASKS, STUDENT
from ..training import checkpoints, run_dir as train_run_dir
from ..models import m3
from ..artifacts import ensure_writable, write_artifact
from ..models.loading import load_model, load_tokenizer
from ..config import LoadedRecipe, targeted_masks
from ..training.data import Batches, DataIndex, open_data
from ..training.distill_model import MicroBatch, enable_checkpointing
from ..training.distributed import Dist
from ..errors import BgepruneError, DataError, EnvironmentProblem, UsageError
from ..pruning.masks import Layout
from ..pruning.sources import RunContext
from ..models.probe import PROBE_TEXT
from ..training.progress import TrainProgress
from ..training.trainer import Trainer



class TrainingDiverged(BgepruneError):
    """Too many non-finite losses: the run stops, its last good checkpoint intact."""

    exit_code = 1


def _device(requested: str | None) -> torch.device:
    if requested is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise EnvironmentProblem(f"--device {requested}: no CUDA GPU is visible to torch here; use --device cpu.")
    try:
        return torch.device(requested)
    except RuntimeError:
        raise UsageError(f"--device {requested!r} is not a torch device (cpu, cuda, cuda:1, ...).") from None


def _open_train_data(recipe):
    """The training text's batch stream: local files (indexed) or a streamed HF dataset."""
    if recipe.data.stream is not None:
        from ..training.data_stream import StreamBatches, StreamSource

        return StreamBatches(StreamSource(**recipe.data.stream.model_dump()), recipe.train.batch_size,
                             recipe.train.seed)
    return Batches(_index_train_files(recipe), recipe.train.batch_size, recipe.train.seed)


def _index_train_files(recipe) -> DataIndex:
    # "builtin:probe" is the packaged probe text: enough for the smoke recipe, offline.
    sources = [str(PROBE_TEXT) if s == "builtin:probe" else s for s in recipe.data.train]
    if not sources:
        raise DataError("data.train is empty: name text or JSONL files, directories or globs to distil on "
                        "(e.g. data.train = [\"corpus.txt\"]), or a [data.stream] dataset.")
    return open_data(sources, "text", "data.train")


def _open_pairs(recipe) -> DataIndex | None:
    if recipe.distill.contrastive <= 0:
        return None
    if not recipe.data.pairs:
        raise DataError("distill.contrastive > 0 needs data.pairs: FlagEmbedding-style JSONL files with "
                        "{\"query\", \"pos\", \"neg\"}; or set distill.contrastive = 0.")
    return open_data(recipe.data.pairs, "pairs", "data.pairs")


def _prepare_run_dir(run_dir: Path, out: Path, resume: bool, force: bool, dist: Dist):
    """The checkpoint to resume from (or None), after refusing to clobber an earlier run by accident.

    Every rank checks (they see the same files, so they refuse alike). With --force, rank 0 sets the
    old run aside (train_run_dir), to be deleted once the new run has committed a checkpoint.
    """
    existing = checkpoints.latest(run_dir)
    if resume:
        if existing is None:
            raise UsageError(f"--resume: {run_dir} has no complete checkpoint to resume from; "
                             f"drop --resume to start a new run.")
        if (out / MANIFEST).is_file() and not force:
            raise UsageError(f"--resume: {out} already holds the finished run; nothing to resume "
                             f"(--force retrains from the checkpoint).")
        return existing
    if (existing is not None or (out / MANIFEST).is_file()) and not force:
        what = f"checkpoints up to step {existing.step}" if existing else "a finished train-run"
        raise UsageError(f"{run_dir} already has {what}; pass --resume to continue it, --force to start over, "
                         f"or --run-dir for a new directory.")
    ensure_writable(out, force)
    dist.barrier()  # nobody may still be reading what rank 0 is about to move
    if dist.is_main:
        train_run_dir.set_aside(run_dir)
    dist.barrier()
    return None


def _check_resume(ckpt, recipe: LoadedRecipe, fingerprints: dict, force: bool) -> None:
    info = ckpt.artifact.info
    changed = []
    if ckpt.artifact.manifest["recipe_sha256"] != recipe.sha256:
        changed.append("the recipe (or a --set override)")
    if info.get("data") != fingerprints:
        changed.append("the training data")
    if changed and not force:
        raise UsageError(f"cannot resume {ckpt.artifact.path}: {' and '.join(changed)} changed since it was "
                         f"written, so the run would not be the one it started as. Restore them, or pass "
                         f"--force to continue anyway.")


def _warn(message: str) -> None:
    from ..ui import err, esc

    err.print(f"[yellow]warning:[/] {esc(message)}", highlight=False, soft_wrap=True)


def _tokenize(tokenizer, texts: list[str], max_length: int, device) -> dict:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


class _InterruptFlag:
    """First Ctrl-C (or SIGTERM, as schedulers and launchers send) asks for a checkpoint at the next
    step boundary; a second one stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def run(recipe: LoadedRecipe, run_dir: Path | None = None, *, resume: bool = False, force: bool = False,
        device: str | None = None, fixed_masks: dict[str, torch.Tensor] | None = None,
        teacher_cache: Path | None = None, gradient_checkpointing: bool = False) -> dict:
    """Train; `fixed_masks` (Python API) skips the pruning phase and only recovers with those masks."""
    r = recipe.recipe
    run_dir = Path(run_dir or recipe.run_dir())
    out = run_dir / train_run_dir.TRAIN
    dist = Dist(_device(device))
    resume_hint = resume_command(recipe, run_dir, device, teacher_cache, gradient_checkpointing, dist.world)
    try:
        with train_run_dir.locked(run_dir, dist):
            try:
                return _run(recipe, r, run_dir, out, dist, resume, force, fixed_masks, teacher_cache,
                            gradient_checkpointing, resume_hint)
            except BaseException:
                if dist.is_main:  # a --force run that never committed a checkpoint gives the old run back
                    train_run_dir.restore(run_dir)
                raise
    finally:
        dist.close()


def resume_command(recipe: LoadedRecipe, run_dir: Path, device: str | None, teacher_cache: Path | None,
                   gradient_checkpointing: bool, world: int) -> str:
    """The exact command that continues this run: same recipe, overrides and run directory, plus --resume."""
    words = (["torchrun", "--nproc_per_node", str(world), "-m", "bgeprune_cli"] if world > 1 else ["bgeprune"])
    words += ["train", str(recipe.path), *[w for item in recipe.overrides for w in ("--set", item)],
              "--run-dir", str(run_dir), "--resume"]
    words += ["--device", device] if device else []
    words += ["--teacher-cache", str(teacher_cache)] if teacher_cache else []
    words += ["--gradient-checkpointing"] if gradient_checkpointing else []
    return shlex.join(words)


def _run(recipe, r, run_dir, out, dist, resume, force, fixed_masks, teacher_cache, gradient_checkpointing,
         resume_hint: str) -> dict:
    dev = dist.device
    ctx = RunContext(r)
    dims = ctx.dims
    types = targeted_masks(r.target, dims)
    batches = _open_train_data(r)
    pairs_data = _open_pairs(r)
    for source in (batches, pairs_data):  # a 10 MB line would otherwise be tokenized whole every time
        if source is not None:
            source.cut_passages(r.data.max_length, _warn if dist.is_main else lambda message: None)
    fingerprints = {"train": batches.fingerprint, "pairs": pairs_data.fingerprint if pairs_data else None}
    micro_size = r.train.micro_batch_size or r.train.batch_size
    local = dist.local_block(r.train.batch_size // micro_size)
    ckpt = _prepare_run_dir(run_dir, out, resume, force, dist)
    if ckpt is not None:
        _check_resume(ckpt, recipe, fingerprints, force)
    prune_steps = 0 if fixed_masks is not None else r.train.steps
    total = prune_steps + r.train.recovery_steps
    if total == 0:
        raise UsageError("nothing to train: fixed masks need train.recovery_steps > 0.")

    torch.manual_seed(r.train.seed)
    teacher = load_model(ctx.base_dir).to(dev).requires_grad_(False)
    # The student starts as the base and runs without dropout: distillation asks it to reproduce the
    # teacher's outputs exactly, and dropout noise only blurs that target.
    student = load_model(ctx.base_dir).to(dev)
    if gradient_checkpointing:
        enable_checkpointing(student)
    tokenizer = load_tokenizer(ctx.base_dir)
    cache = open_teacher_cache(teacher_cache, ctx, r, dev, dist) if teacher_cache is not None else None
    trainer = Trainer(r, student, teacher, ctx.adapter, dims, ctx.pooling, types, prune_steps, total, dev,
                      heads=ctx.base_heads, dist=dist, cache=cache)
    pair_batches = Batches(pairs_data, r.train.batch_size, r.train.seed + 1) if pairs_data else None
    step, bad_steps, elapsed = 0, 0, 0.0
    if fixed_masks is not None:
        trainer.fix_masks(fixed_masks)
    if ckpt is not None:
        state = ckpt.state()
        trainer.load({name: ckpt.tensors(name) for name in checkpoints.TENSOR_FILES}, state["trainer"])
        batches.load_state_dict(state["data"])
        if pair_batches is not None:
            pair_batches.load_state_dict(state["pairs"])
        checkpoints.restore_rng(state["rng"], trainer.generator)
        step, bad_steps, elapsed = ckpt.step, state["bad_steps"], state["elapsed_s"]
        if dist.is_main:
            _truncate_metrics(run_dir / METRICS, step)
        if step >= prune_steps and trainer.fixed is None:
            trainer.start_recovery()

    def save_checkpoint() -> Path:
        # Every rank must hold the same model; checked before rank 0 alone writes it for all of them.
        dist.check_in_sync(trainer.sync_tensors)
        if cache is not None:
            cache.flush()
        path = checkpoints.checkpoint_dir(run_dir) / f"step-{step:08d}"
        if dist.is_main:
            state = {"trainer": trainer.state(), "data": batches.state_dict(), "rng": checkpoints.rng_state(
                trainer.generator), "bad_steps": bad_steps, "elapsed_s": elapsed}
            if pair_batches is not None:
                state["pairs"] = pair_batches.state_dict()
            path = checkpoints.save(run_dir, step, trainer.tensors(), state,
                                    {"data": fingerprints, "world_size": dist.world},
                                    recipe.resolved, recipe.sha256, r.train.keep_checkpoints)
            train_run_dir.drop_set_aside(run_dir)  # the new run has a checkpoint: the old one can go
        dist.barrier()  # a rank that stops next must not exit before the checkpoint is committed
        return path

    def next_micro_batches() -> list[MicroBatch]:
        texts = _local_share(batches, micro_size, local)
        pairs = _local_share(pair_batches, micro_size, local) if pair_batches is not None else [None] * len(texts)
        return [MicroBatch(_tokenize(tokenizer, t, r.data.max_length, dev), t,
                           tuple(_tokenize(tokenizer, x, r.data.max_length, dev) if x else None for x in p)
                           if p is not None else None) for t, p in zip(texts, pairs)]

    progress = TrainProgress(total, start=step, targets=_targets(r, dims), log_every=r.train.log_every,
                             enabled=dist.is_main)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = (run_dir / METRICS).open("a", encoding="utf-8") if dist.is_main else None
    try:
        with _InterruptFlag() as interrupt, progress:
            while step < total:
                if step == prune_steps and trainer.fixed is None:
                    trainer.start_recovery()
                started = time.perf_counter()
                result = trainer.step(step, next_micro_batches(), interrupt.requested)
                step += 1
                elapsed += time.perf_counter() - started
                if not result.finite:
                    bad_steps += 1
                    if bad_steps > r.train.max_bad_steps:
                        last = checkpoints.latest(run_dir)
                        where = f"the last good checkpoint is {last.artifact.path}" if last else "no checkpoint was written yet"
                        raise TrainingDiverged(
                            f"{bad_steps} steps had a non-finite loss (limit train.max_bad_steps = "
                            f"{r.train.max_bad_steps}); stopped at step {step}, {where}. Lower train.lr_weights "
                            f"or train.lr_gates, check the data, then --resume or start over.")
                record = _record(step, result, trainer, bad_steps, elapsed)
                if metrics is not None and (step % r.train.log_every == 0 or step == total or not result.finite):
                    metrics.write(json.dumps(record, sort_keys=True) + "\n")
                    metrics.flush()
                progress.update(step, record)
                saved = step % r.train.checkpoint_every == 0 or step == total
                if saved:
                    last_saved = save_checkpoint()
                if result.interrupt:  # agreed by all ranks in the step's all-reduce
                    path = last_saved if saved else save_checkpoint()
                    progress.stop()
                    if dist.is_main:
                        from ..ui import err, esc

                        err.print(f"[yellow]interrupted at step {step}[/]; checkpoint {esc(path)}. Continue with:\n"
                                  f"  {esc(resume_hint)}", highlight=False, soft_wrap=True)
                    raise KeyboardInterrupt
    finally:
        if metrics is not None:
            metrics.close()
        if cache is not None:
            cache.close()
    usage = _teacher_usage(trainer, cache, dist)
    if not dist.is_main:
        return {"artifact": str(out), "kind": "train-run", "rank": dist.rank}
    return _write_run(out, recipe, trainer, types, dims, batches.summary(), pairs_data, fingerprints, run_dir, step,
                      bad_steps, elapsed, dev, {"world_size": dist.world, "micro_batch_size": micro_size,
                                                "micro_batches_per_rank": len(local),
                                                "gradient_checkpointing": gradient_checkpointing, **usage})


def open_teacher_cache(root: Path, ctx: RunContext, r, dev: torch.device, dist: Dist):
    """The cache folder for exactly this teacher, tokenizer, max length, precision and set of outputs."""
    from ..training.teacher_cache import TeacherCache, file_fingerprint
    from ..ui import err, esc

    if r.distill.layerwise > 0:
        raise UsageError("--teacher-cache cannot hold the per-layer teacher states that distill.layerwise needs; "
                         "set distill.layerwise = 0 or drop --teacher-cache.")
    heads = ctx.base_heads is not None
    fields = ["embedding"] + ["sparse"] * (heads and r.distill.sparse > 0) \
        + ["colbert"] * (heads and r.distill.colbert > 0)
    # Weights, config, tokenizer, heads and pooling files: any change to the teacher changes the key.
    files = sorted(p for p in ctx.base_dir.iterdir() if p.is_file() and p.suffix in _TEACHER_SUFFIXES)
    files += [p for p in [ctx.base_dir / "1_Pooling" / CONFIG] if p.is_file()]
    key = {"format": 1, "teacher_files": file_fingerprint(files), "max_length": r.data.max_length,
           "fields": fields, "pooling": repr(ctx.pooling),
           "precision": "bf16-autocast" if dev.type == "cuda" else "fp32"}
    return TeacherCache(Path(root).expanduser(), key, writer=f"rank{dist.rank}",
                        warn=lambda message: err.print(f"[yellow]teacher cache:[/] {esc(message)}", highlight=False))


_TEACHER_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model", ".txt")


def _local_share(batches, micro_size: int, local: range) -> list:
    """This rank's micro-batches of the next global batch (texts, or (queries, positives, negatives)).

    Indexed files are read only for this rank's share; a stream is read whole by every rank (it has
    no random access) and each keeps its share.
    """
    indexed = isinstance(batches, Batches)
    items = batches.take() if indexed else batches.next_texts()
    chunks = [items[i * micro_size:(i + 1) * micro_size] for i in local]
    if not indexed:
        return chunks
    read = batches.texts_of if batches.index.kind == "text" else batches.pairs_of
    return [read(chunk) for chunk in chunks]


def _teacher_usage(trainer: Trainer, cache, dist: Dist) -> dict:
    """Teacher forward passes and cache hits, summed over ranks."""
    numbers = torch.tensor([trainer.teacher.forwards, cache.hits if cache else 0, cache.misses if cache else 0],
                           dtype=torch.float64)
    forwards, hits, misses = (int(v) for v in dist.reduce(numbers, "sum").tolist())
    usage = {"teacher_forwards": forwards}
    if cache is not None:
        usage["teacher_cache"] = {"path": str(cache.path), "hits": hits, "misses": misses}
    return usage


def _targets(r, dims) -> dict:
    if r.target.mode == "sparsity":
        return {"sparsity": r.target.sparsity}
    return {k: getattr(r.target, k) or getattr(dims, k) for k in ("layers", "heads", "ffn", "hidden")}


def _record(step: int, result, trainer: Trainer, bad_steps: int, elapsed: float) -> dict:
    return {"step": step, "phase": "prune" if trainer.fixed is None else "recover",
            "loss": result.loss, "terms": result.terms, "penalty": result.penalty, "gaps": result.gaps,
            "finite": result.finite, "expected": trainer.expected(), "lambda_1": trainer.lambdas(),
            "lr": trainer.scheduler.get_last_lr(), "bad_steps": bad_steps, "elapsed_s": round(elapsed, 3)}


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from, so metrics.jsonl reads as one run."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(kept), encoding="utf-8")


def _write_run(out, recipe, trainer, types, dims, data_summary, pairs_data, fingerprints, run_dir, step, bad_steps,
               elapsed, dev, execution: dict) -> dict:
    final = trainer.fixed if trainer.fixed is not None else trainer.masks.finalized(recipe.recipe.target)
    layout = Layout.from_masks(final, dims)
    # The pruning phase's end is what the Lagrangian aimed at; in recovery the masks are binary.
    expected = trainer.pruned_expected or trainer.expected()
    info = {"method": "l0" if trainer.prune_steps else "fixed-masks", "gate_kind": "log_alpha", "masks": types,
            "base_dims": asdict(dims), "steps": step, "prune_steps": trainer.prune_steps,
            "recovery_steps": step - trainer.prune_steps, "bad_steps": bad_steps, "train_seconds": round(elapsed, 1),
            "device": str(dev), "expected": expected, "final_sizes": layout.sizes(),
            "encoder_params": layout.encoder_params(), "lambda_1": trainer.lambdas(), "data": fingerprints,
            "m3_heads": trainer.student_heads is not None,
            "data_summary": {"train": data_summary, "pairs": pairs_data.summary() if pairs_data else None},
            **execution}
    tensors = trainer.tensors()
    lagrangian = {k: v for k, v in tensors["extras"].items() if k.startswith("lagrangian.")}
    with write_artifact(out, "train-run", force=True, recipe=recipe.resolved, recipe_sha256=recipe.sha256,
                        info=info) as tmp:
        for name, file in (("gates", GATES), ("student", STUDENT)):
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors[name].items()}, str(tmp / file))
        save_file({k: v.detach().cpu().contiguous() for k, v in lagrangian.items()}, str(tmp / LAGRANGIAN))
        if trainer.student_heads is not None:  # in the dtype of the base's head files, as the export writes them
            save_file(trainer.student_heads.tensors(), str(tmp / m3.HEADS_FILE))
        if trainer.fixed is not None:  # finalize-masks checks that it reproduces these exactly
            save_file({k: v.to(torch.bool).cpu().contiguous() for k, v in trainer.fixed.items()},
                      str(tmp / RECOVERY_MASKS))
        if (run_dir / METRICS).is_file():
            (tmp / METRICS).write_bytes((run_dir / METRICS).read_bytes())
    return {"artifact": str(out), "kind": "train-run", **info}
