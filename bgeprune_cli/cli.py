"""The `bgeprune` command line: thin commands over `stages/`, one place mapping errors to exit codes.

Exit codes: 0 ok, 1 a check failed, 2 bad usage or recipe (or the output is locked by another
bgeprune process), 3 bad artifact or model files, 4 environment (including I/O errors: a full disk,
a read-only location), 130 interrupted (Ctrl-C or SIGTERM). Results go to stdout (`--json`: one JSON
object), messages and progress to stderr. Set BGEPRUNE_DEBUG=1 for tracebacks.

Example:
    bgeprune --help
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import typer

from . import __version__
from .errors import BgepruneError, CheckFailed, environment_error, os_error_in
from .ui import err, esc, out, styled, table

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Prune bge-m3 (or a BERT-family encoder) into a smaller drop-in Hugging Face model.\n\n"
                       "Pipeline: [bold]train[/] (or magnitude) → [bold]finalize-masks[/] → [bold]prune[/] → "
                       "[bold]export-hf[/] → [bold]verify[/] → [bold]bench[/].\n\n"
                       "Exit codes: 0 ok, 1 check failed, 2 bad usage/recipe, 3 bad artifact, 4 environment, "
                       "130 interrupted.")

JSON_OPT = typer.Option(False, "--json", help="Print one JSON object to stdout instead of tables.")
FORCE_OPT = typer.Option(False, "--force", help="Replace a non-empty output directory.")
SET_OPT = typer.Option(None, "--set", help="Override a recipe value: dotted.key=value (repeatable).")


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (what `kill`, schedulers and launchers send) unwinds like Ctrl-C: every `finally` and
    atomic write cleans up on the way out. `bgeprune train` installs its own handler on top, which
    finishes the step and checkpoints first."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _execute(work: Callable[[], dict], as_json: bool, render: Callable[[dict], None]) -> None:
    """Run a stage; print its result; map every failure to its exit code and a one-line message."""
    try:
        with _sigterm_as_interrupt():
            _quiet_libraries()
            result = work()
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; completed artifacts are intact, partial outputs were removed.")
        raise typer.Exit(130)
    except BgepruneError as exc:
        _fail(exc)
    except Exception as exc:
        error = os_error_in(exc)
        if error is None:  # a bug: say so plainly
            if os.environ.get("BGEPRUNE_DEBUG"):
                raise
            err.print(f"[red]internal error:[/] {esc(exc.__class__.__name__)}: {esc(exc)}\n"
                      "Re-run with BGEPRUNE_DEBUG=1 for the traceback, and please report it.", highlight=False)
            raise typer.Exit(1)
        _fail(environment_error(error, "reading or writing a file"), exc)
    from .training.distributed import is_secondary_process

    if is_secondary_process():  # ranks > 0 of torchrun / accelerate launch: rank 0 reports for all
        return
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        render(result)


def _fail(exc: BgepruneError, cause: BaseException | None = None) -> None:
    if os.environ.get("BGEPRUNE_DEBUG"):
        raise cause or exc
    err.print(f"[red]error:[/] {esc(exc)}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        print(f"bgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                              help="Print the version and exit.")) -> None:
    """Global options."""


def _load(recipe: Path, sets: Optional[list[str]]):
    from .models.loading import recipe_base_dims
    from .config import load_recipe

    return load_recipe(recipe, sets or [], base_dims=recipe_base_dims)


@app.command()
def check(recipe: Path = typer.Argument(..., help="TOML recipe."), sets: Optional[list[str]] = SET_OPT,
          as_json: bool = JSON_OPT) -> None:
    """Validate a recipe (schema and feasibility against the base's config.json) without loading weights.

    [bold]Example[/]: bgeprune check recipes/50pct.toml --set target.layers=20
    """
    def work() -> dict:
        loaded = _load(recipe, sets)
        return {"recipe": str(recipe), "sha256": loaded.sha256, "run_dir": str(loaded.run_dir()),
                "resolved": loaded.resolved}

    def render(r: dict) -> None:
        target = {k: v for k, v in r["resolved"]["target"].items() if v is not None}
        out.print("[green]✓[/] " + esc(f"{r['recipe']} is valid: base {r['resolved']['base']['model']}, target "
                                      f"{target}, run dir {r['run_dir']}"), highlight=False)

    _execute(work, as_json, render)


@app.command()
def magnitude(recipe: Path = typer.Argument(..., help="TOML recipe (targeted mode)."),
              run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Default: recipe's run.dir or runs/<recipe>."),
              sets: Optional[list[str]] = SET_OPT, force: bool = FORCE_OPT, as_json: bool = JSON_OPT) -> None:
    """Score units by weight magnitude (no training) into RUN/train, for finalize-masks.

    A training-free baseline; `bgeprune train` learns better masks.

    [bold]Example[/]: bgeprune magnitude recipes/smoke.toml
    """
    def work() -> dict:
        from .stages import magnitude as stage

        return stage.run(_load(recipe, sets), run_dir, force)

    _execute(work, as_json, lambda r: out.print("[green]✓[/] " + esc(f"scored {', '.join(r['masks'])} → "
                                                                       f"{r['artifact']}"), highlight=False))


@app.command()
def train(recipe: Path = typer.Argument(..., help="TOML recipe."),
          run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Default: recipe's run.dir or runs/<recipe>."),
          resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint."),
          device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda if "
                                               "available; bf16 autocast on CUDA)."),
          sets: Optional[list[str]] = SET_OPT,
          force: bool = typer.Option(False, "--force", help="Start over in a run dir that has checkpoints, or "
                                     "resume although the recipe or data changed."),
          teacher_cache: Optional[Path] = typer.Option(
              None, "--teacher-cache", help="Folder that keeps the teacher's outputs per text, so later epochs "
              "and later runs skip its forward pass (keyed by teacher files, max length and precision)."),
          gradient_checkpointing: bool = typer.Option(
              False, "--gradient-checkpointing", help="Recompute layer activations in the backward pass: "
              "less activation memory for long sequences, one more student forward per step; same results."),
          as_json: bool = JSON_OPT) -> None:
    """Learn L0 masks toward the recipe's target while distilling from the unpruned base → RUN/train.

    Checkpoints every train.checkpoint_every steps; Ctrl-C (or SIGTERM) saves one and exits 130;
    --resume continues exactly where it stopped. Under torchrun or accelerate launch it trains with
    one process per GPU, and a checkpoint resumes under any number of processes.

    [bold]Examples[/]:
      bgeprune train recipes/smoke.toml && bgeprune finalize-masks runs/smoke/train
      torchrun --nproc_per_node 8 -m bgeprune_cli train recipes/50pct-8gpu.toml --teacher-cache /data/tcache
    """
    def work() -> dict:
        from .stages import train as stage

        return stage.run(_load(recipe, sets), run_dir, resume=resume, force=force, device=device,
                         teacher_cache=teacher_cache, gradient_checkpointing=gradient_checkpointing)

    _execute(work, as_json, _render_train)


def _render_train(r: dict) -> None:
    expected, final = r["expected"], r["final_sizes"]
    rows = [[k, f"{expected[k]:.2f}", final[k], r["base_dims"][k]] for k in ("layers", "heads", "ffn", "hidden")]
    rows.append(["encoder params", f"{expected['encoder_params']:,.0f}", f"{r['encoder_params']:,}", ""])
    out.print(table(f"Trained {r['steps']} steps ({r['prune_steps']} pruning, {r['recovery_steps']} recovery) "
                    f"in {r['train_seconds']:.0f}s on {r['device']}",
                    ["", "expected (end of pruning)", "finalized", "base"], rows))
    if r["bad_steps"]:
        out.print(f"[yellow]{r['bad_steps']} steps skipped for a non-finite loss[/]")
    out.print(esc(f"→ {r['artifact']}\n  next: bgeprune finalize-masks {r['artifact']}"), highlight=False)


def _render_masks(r: dict) -> None:
    rows = [[e["index"], "kept" if e["kept"] else styled("[red]dropped[/]"), ",".join(map(str, e.get("heads", []))) or "-",
             e.get("ffn_kept", "-")] for e in r["layers"]]
    out.print(table("Finalized masks", ["layer", "status", "kept heads", "FFN kept"], rows))
    sizes, base = r["sizes"], r["base_sizes"]
    out.print(table("Architecture", ["", "base", "kept"],
                    [[k, base[k], sizes[k]] for k in ("layers", "heads", "ffn", "hidden")]
                    + [["encoder params", f"{r['base_encoder_params']:,}",
                        f"{r['encoder_params']:,} ({r['encoder_params'] / r['base_encoder_params']:.1%})"]]))
    out.print(f"→ {esc(r['artifact'])}" + ("" if r["stock_shape"] else
              "  [yellow](not a stock shape: export with --format padded)[/]"), highlight=False)


@app.command("finalize-masks")
def finalize_masks(train_run: Path = typer.Argument(..., help="A train-run artifact (RUN/train) or its run dir."),
                   output: Optional[Path] = typer.Option(None, "--out", "-o", help="Default: RUN/masks."),
                   force: bool = FORCE_OPT, as_json: bool = JSON_OPT) -> None:
    """Turn gate scores into binary keep-masks that hit the recipe's target exactly.

    [bold]Example[/]: bgeprune finalize-masks runs/smoke/train
    """
    def work() -> dict:
        from .stages import finalize_masks as stage

        return stage.run(train_run, output, force)

    _execute(work, as_json, _render_masks)


@app.command()
def prune(masks: Path = typer.Argument(..., help="A masks artifact (RUN/masks) or its run dir."),
          output: Optional[Path] = typer.Option(None, "--out", "-o", help="Default: RUN/pruned."),
          atol: float = typer.Option(1e-4, help="Largest allowed |pruned - masked| on the probe batch."),
          force: bool = FORCE_OPT, as_json: bool = JSON_OPT) -> None:
    """Physically remove the pruned parameters (HF tensor names; checked against the masked model).

    [bold]Example[/]: bgeprune prune runs/smoke/masks
    """
    def work() -> dict:
        from .stages import prune as stage

        return stage.run(masks, output, force, atol)

    def render(r: dict) -> None:
        out.print(table("Pruned model", ["", "value"], [
            ["sizes", r["layout_sizes"]], ["stock shape", r["stock_shape"]],
            ["encoder params", f"{r['encoder_params']:,} of {r['base_encoder_params']:,} ({r['encoder_ratio']:.1%})"],
            ["max |pruned - masked|", f"{max(r['parity_max_abs_diff'].values()):.2e}"], ["artifact", r["artifact"]]]))

    _execute(work, as_json, render)


@app.command("export-hf")
def export_hf(source: Path = typer.Argument(..., help="A pruned-model artifact (RUN/pruned) or its run dir."),
              output: Path = typer.Argument(..., help="Model directory to write."),
              fmt: Optional[str] = typer.Option(None, "--format", help="stock (default from recipe) or padded."),
              name: Optional[str] = typer.Option(None, help="Title of the model card."),
              force: bool = FORCE_OPT, as_json: bool = JSON_OPT) -> None:
    """Write a drop-in HF model directory (AutoModel, SentenceTransformer) with no random weights.

    [bold]Example[/]: bgeprune export-hf runs/smoke out/smoke
    """
    def work() -> dict:
        from .errors import UsageError
        from .stages import export_hf as stage

        if fmt not in (None, "stock", "padded"):
            raise UsageError(f"--format must be 'stock' or 'padded', not {fmt!r}")
        return stage.run(source, output, fmt, force, name)

    _execute(work, as_json, lambda r: out.print(
        "[green]✓[/] " + esc(f"exported {r['sizes']} ({r['format']}) → {r['artifact']}\n"
                             f"  next: bgeprune verify {r['artifact']}"), highlight=False))


@app.command()
def verify(model: Path = typer.Argument(..., help="Exported model directory."),
           run: Optional[Path] = typer.Option(None, "--run", help="Run dir (or masks artifact) the export came "
                                              "from; default: the one lineage.json names, if it exists."),
           compare: Optional[str] = typer.Option(None, "--compare", help="Reference model (HF id, path, builtin:NAME)."),
           atol: float = typer.Option(1e-5, help="Largest allowed |export - masked| on the probe batch."),
           probe: Optional[Path] = typer.Option(None, help="Text file (one passage a line) for --compare."),
           report: Optional[Path] = typer.Option(None, help="Also write a verify-report artifact here."),
           force: bool = FORCE_OPT, as_json: bool = JSON_OPT) -> None:
    """Prove an export: strict loading, finite weights, provenance, parity with the masked model.

    [bold]Example[/]: bgeprune verify out/smoke --compare builtin:tiny-xlm-roberta
    """
    def work() -> dict:
        from .stages import verify as stage

        result = stage.run(model, run, compare, atol, probe, report, force)
        if not result["ok"]:
            _render_verify(result)
            failed = [c["name"] for c in result["checks"] if c["status"] == "fail"]
            if as_json:
                print(json.dumps(result, indent=2, sort_keys=True, default=str))
            raise CheckFailed(f"{model} failed verification: {', '.join(failed)}")
        return result

    _execute(work, as_json, _render_verify)


def _render_verify(r: dict) -> None:
    style = {"pass": styled("[green]pass[/]"), "fail": styled("[red]FAIL[/]"), "skip": styled("[dim]skip[/]"),
             "info": styled("[cyan]info[/]")}
    err.print(table(f"verify {r['model']}", ["check", "status", "details"],
                    [[c["name"], style[c["status"]], c["message"]] for c in r["checks"]]))
    if r["ok"]:
        out.print(f"[green]✓[/] {esc(r['model'])} verified", highlight=False)


def _int_list(text: Optional[str], flag: str) -> Optional[list[int]]:
    from .errors import UsageError

    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated integers like 1,32, not {text!r}") from None


@app.command()
def bench(model: str = typer.Argument(..., help="Export dir, run dir / RUN/pruned, HF model dir or id, builtin:NAME."),
          compare: Optional[str] = typer.Option(None, "--compare", help="The base to compare with (same kinds)."),
          output: Optional[Path] = typer.Option(None, "--out", "-o", help="bench-report dir; default runs/bench/NAME."),
          beir: Optional[list[Path]] = typer.Option(None, "--beir", help="BEIR dir: corpus.jsonl, queries.jsonl, "
                                                    "qrels.tsv (repeatable)."),
          bitext: Optional[list[Path]] = typer.Option(None, "--bitext", help="JSONL of {\"en\", \"xx\"} pairs, or a dir "
                                                      "of them (repeatable)."),
          batch_sizes: Optional[str] = typer.Option(None, help="Speed grid, e.g. 1,32 (default: 1,32 on CPU; "
                                                    "1,32,128 on GPU)."),
          seq_lengths: Optional[str] = typer.Option(None, help="Speed grid, e.g. 128,512 (default: 32,128 on CPU; "
                                                    "128,512 on GPU)."),
          warmup: int = typer.Option(2, help="Untimed passes per model and grid point."),
          repeats: int = typer.Option(10, help="Timed passes per model and grid point (interleaved)."),
          device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 (default: cuda if available)."),
          dtype: Optional[str] = typer.Option(None, help="float32, float16, bfloat16 (default: float32 on CPU, "
                                              "float16 on GPU)."),
          attn: Optional[str] = typer.Option(None, help="Attention implementation: sdpa, eager (default: "
                                             "transformers' choice)."),
          max_length: int = typer.Option(512, help="Truncation for quality encoding (capped by each model's "
                                         "max_seq_length)."),
          speed: bool = typer.Option(True, "--speed/--no-speed", help="Time the speed grid."),
          memory: bool = typer.Option(True, "--memory/--no-memory", help="Measure peak memory (fresh process each)."),
          mteb: Optional[str] = typer.Option(None, help="MTEB task names, comma-separated (needs `mteb` and the hub)."),
          force: bool = FORCE_OPT, as_json: bool = JSON_OPT) -> None:
    """Speed, memory, size and quality of MODEL side by side with --compare, in one run → a bench-report.

    Writes report.json (numbers, environment, command) and report.png (quality vs throughput,
    layers kept). The headline is batch 32 × 128 tokens: speedup, FLOPs speedup, and their
    ratio (speedup efficiency).

    [bold]Example[/]: bgeprune bench out/minilm-50pct --compare builtin:all-minilm-l6-v2 --beir ../shared/data/pydocs
    """
    def work() -> dict:
        from .stages import bench as stage

        options = stage.BenchOptions(beir=beir or [], bitext=bitext or [],
                                     batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
                                     seq_lengths=_int_list(seq_lengths, "--seq-lengths"), warmup=warmup,
                                     repeats=repeats, device=device, dtype=dtype, attn=attn, max_length=max_length,
                                     speed=speed, memory=memory,
                                     mteb=[t.strip() for t in (mteb or "").split(",") if t.strip()])
        return stage.run(model, compare, output, force, options)

    def render(r: dict) -> None:
        from .bench.render import render_bench

        render_bench(r)

    _execute(work, as_json, render)


def main() -> None:
    app(prog_name="bgeprune")


if __name__ == "__main__":
    sys.exit(main())
