"""The `bgeprune` command line: thin commands over `stages/`, one place mapping errors to exit codes.

Each command parses its options (defined once below as typed aliases, choices validated by Typer),
calls `stages.X.run(...)` and renders the result (render.py): the result on stdout (`--json`: one
JSON object), tables, progress and messages on stderr. Exit codes: 0 ok, 1 a check failed, 2 bad
usage or recipe (or the output is locked by another bgeprune process), 3 bad artifact or model
files, 4 environment (including I/O errors: a full disk, a read-only location), 130 interrupted
(Ctrl-C or SIGTERM). Set BGEPRUNE_DEBUG=1 for tracebacks.

A file of commands: each is its options, its help with an example, and three lines of body, so it
runs past 300 lines; splitting it would only scatter the command line.

Example:
    bgeprune --help
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from . import __version__, render
from .errors import BgepruneError, CheckFailed, UsageError, environment_error, missing_module, os_error_in
from .ui import err, esc

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Prune bge-m3 (or a BERT-family encoder) into a smaller drop-in Hugging Face model.\n\n"
                       "Pipeline: [bold]train[/] (or magnitude) → [bold]finalize-masks[/] → [bold]prune[/] → "
                       "[bold]export-hf[/] → [bold]verify[/] → [bold]bench[/] → [bold]card[/] → [bold]push[/].\n\n"
                       "Exit codes: 0 ok, 1 check failed, 2 bad usage/recipe, 3 bad artifact, 4 environment, "
                       "130 interrupted.")


def _choice(flag: str, choices: tuple[str, ...], pattern: str | None = None):
    """A callback that Typer runs on the option's value: one of `choices` (or matching `pattern`), else exit 2."""
    def check(value):
        if value is None or value in choices or (pattern and re.fullmatch(pattern, value)):
            return value
        allowed = " or ".join(f"'{c}'" for c in choices) + (" (or cuda:N)" if pattern else "")
        raise typer.BadParameter(f"{flag} must be {allowed}, not {value!r}")
    return check


# Options shared by several commands, defined once.
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout instead of tables.")]
Force = Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory.")]
Sets = Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe value: dotted.key=value "
                                                                 "(repeatable).")]
RunDir = Annotated[Optional[Path], typer.Option("--run-dir", help="Default: recipe's run.dir or runs/<recipe>.")]
Recipe = Annotated[Path, typer.Argument(help="TOML recipe.")]
Device = Annotated[Optional[str], typer.Option(
    "--device", metavar="[cpu|cuda|cuda:N]", callback=_choice("--device", ("cpu", "cuda"), r"cuda:\d+"),
    help="Default: cuda if torch sees a GPU, else cpu.")]
Compare = Annotated[Optional[str], typer.Option("--compare", help="Reference model (HF id, path, builtin:NAME).")]


MasksOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="Default: RUN/masks.")]
PrunedOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="Default: RUN/pruned.")]
ReportOut = Annotated[Optional[Path], typer.Option("--out", "-o", help="bench-report dir; default runs/bench/NAME.")]


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


OUT_OF_MEMORY = ("error: out of memory: this machine's RAM could not hold the work. Lower train.batch_size (or set "
                 "train.micro_batch_size), data.max_length or bench's --batch-sizes, or use a machine with more "
                 "memory.\n")


def _execute(work: Callable[[], dict], as_json: bool, render: Callable[[dict], None]) -> None:
    """Run a stage; print its result; map every failure to its exit code and a one-line message (with
    --json, also one `{"error", "exit"}` object on stdout, so a script always gets JSON)."""
    try:
        with _sigterm_as_interrupt():
            _quiet_libraries()
            result = work()
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]; completed artifacts are intact, partial outputs were removed.")
        _json_error(as_json, "interrupted", 130)
        raise typer.Exit(130)
    except BgepruneError as exc:
        _fail(exc, as_json)
    except ImportError as exc:  # a runtime dependency that the install did not bring
        _fail(missing_module(exc, "this command"), as_json, exc)
    except MemoryError:  # before anything that allocates: the message is a constant, printed plainly
        sys.stderr.write(OUT_OF_MEMORY)
        _json_error(as_json, OUT_OF_MEMORY.removeprefix("error: ").strip(), 4)
        raise typer.Exit(4)
    except Exception as exc:
        error = os_error_in(exc)
        if error is None:  # a bug: say so plainly
            if os.environ.get("BGEPRUNE_DEBUG"):
                raise
            err.print(f"[red]internal error:[/] {esc(exc.__class__.__name__)}: {esc(exc)}\n"
                      "Re-run with BGEPRUNE_DEBUG=1 for the traceback, and please report it.", highlight=False)
            _json_error(as_json, f"internal error: {exc.__class__.__name__}: {exc}", 1)
            raise typer.Exit(1)
        _fail(environment_error(error, "reading or writing a file"), as_json, exc)
    from .training.distributed import is_secondary_process

    if is_secondary_process():  # ranks > 0 of torchrun / accelerate launch: rank 0 reports for all
        return
    if as_json:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        render(result)


def _json_error(as_json: bool, message: str, code: int) -> None:
    if as_json:
        print(json.dumps({"error": message, "exit": code}, sort_keys=True), flush=True)


def _fail(exc: BgepruneError, as_json: bool = False, cause: BaseException | None = None) -> None:
    if os.environ.get("BGEPRUNE_DEBUG"):
        raise cause or exc
    err.print(f"[red]error:[/] {esc(exc)}", highlight=False, soft_wrap=True)
    _json_error(as_json and not getattr(exc, "json_printed", False), str(exc), exc.exit_code)
    raise typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        print(f"bgeprune {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                       help="Print the version and exit.")] = False) -> None:
    """Global options."""


def _load(recipe: Path, sets: Optional[list[str]]):
    from .config import load_recipe
    from .models.loading import recipe_base_dims, recipe_max_tokens

    return load_recipe(recipe, sets or [], base_dims=recipe_base_dims, base_max_tokens=recipe_max_tokens)


@app.command()
def check(recipe: Recipe, sets: Sets = None, as_json: Json = False) -> None:
    """Validate a recipe (schema and feasibility against the base's config.json) without loading weights.

    With a \\[vocab] section, a dry run of vocabulary trimming: the corpus is tokenized and the tokens
    kept and the parameter count are reported.

    [bold]Example[/]: bgeprune check recipes/50pct.toml --set target.layers=20
    """
    def work() -> dict:
        from .stages import check as stage

        return stage.run(_load(recipe, sets))

    _execute(work, as_json, render.check)


@app.command()
def magnitude(recipe: Annotated[Path, typer.Argument(help="TOML recipe (targeted mode).")], run_dir: RunDir = None,
              sets: Sets = None, force: Force = False, as_json: Json = False) -> None:
    """Score units by weight magnitude (no training) into RUN/train, for finalize-masks.

    A training-free baseline; `bgeprune train` learns better masks.

    [bold]Example[/]: bgeprune magnitude recipes/smoke.toml
    """
    def work() -> dict:
        from .stages import magnitude as stage

        return stage.run(_load(recipe, sets), run_dir=run_dir, force=force)

    _execute(work, as_json, render.magnitude)


@app.command()
def train(recipe: Recipe, run_dir: RunDir = None,
          resume: Annotated[bool, typer.Option("--resume",
                                               help="Continue from the newest complete checkpoint.")] = False,
          device: Device = None, sets: Sets = None,
          force: Annotated[bool, typer.Option("--force", help="Start over in a run dir that has checkpoints (the old "
                                              "run is kept until the new one has a checkpoint), or resume although "
                                              "the recipe or data changed.")] = False,
          teacher_cache: Annotated[Optional[Path], typer.Option(
              "--teacher-cache", help="Folder that keeps the teacher's outputs per text, so later epochs and later "
              "runs skip its forward pass (keyed by teacher files, max length and precision).")] = None,
          gradient_checkpointing: Annotated[bool, typer.Option(
              "--gradient-checkpointing", help="Recompute layer activations in the backward pass: less activation "
              "memory for long sequences, one more student forward per step; same results.")] = False,
          masks: Annotated[Optional[Path], typer.Option(
              "--masks", help="Recovery only: skip the L0 search and distil for train.recovery_steps with this masks "
              "artifact's masks (finalize-masks after 'bgeprune magnitude', or another run). They must be what the "
              "recipe's target section finalizes to. Use a new --run-dir.")] = None,
          report_to: Annotated[Optional[str], typer.Option(
              "--report-to", help="Also send metrics.jsonl's scalars to these accelerate trackers, comma-separated: "
              "tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio (local logs in "
              "RUN/tracking).")] = None,
          as_json: Json = False) -> None:
    """Learn L0 masks toward the recipe's target while distilling from the unpruned base → RUN/train.

    Checkpoints every train.checkpoint_every steps; Ctrl-C (or SIGTERM) saves one and exits 130;
    --resume continues exactly where it stopped. Under torchrun or accelerate launch it trains with
    one process per GPU (bf16 autocast on CUDA), and a checkpoint resumes under any number of processes.
    With --masks it only recovers: the weights distil under masks chosen elsewhere (e.g. by
    'bgeprune magnitude' + finalize-masks), the stronger choice for a small step budget.

    [bold]Examples[/]:
      bgeprune train recipes/smoke.toml && bgeprune finalize-masks runs/smoke/train
      bgeprune train recipes/smoke.toml --masks runs/smoke/masks --run-dir runs/smoke-recovered
      torchrun --nproc_per_node 8 -m bgeprune_cli train recipes/50pct-8gpu.toml --teacher-cache /data/tcache
      bgeprune train recipes/smoke.toml --report-to tensorboard && tensorboard --logdir runs/smoke/tracking
    """
    def work() -> dict:
        from .stages import train as stage
        from .training.trackers import parse_names

        trackers = parse_names(report_to)  # an unknown name exits 2 before the recipe's base loads
        return stage.run(_load(recipe, sets), run_dir=run_dir, resume=resume, force=force, device=device, masks=masks,
                         teacher_cache=teacher_cache, gradient_checkpointing=gradient_checkpointing,
                         report_to=trackers)

    _execute(work, as_json, render.train)


@app.command("finalize-masks")
def finalize_masks(train_run: Annotated[Path, typer.Argument(help="A train-run artifact (RUN/train) or its run dir.")],
                   output: MasksOut = None, force: Force = False, as_json: Json = False) -> None:
    """Turn gate scores into binary keep-masks that hit the recipe's target exactly.

    [bold]Example[/]: bgeprune finalize-masks runs/smoke/train
    """
    def work() -> dict:
        from .stages import finalize_masks as stage

        return stage.run(train_run, out=output, force=force)

    _execute(work, as_json, render.masks)


@app.command()
def prune(masks: Annotated[Path, typer.Argument(help="A masks artifact (RUN/masks) or its run dir.")],
          output: PrunedOut = None,
          atol: Annotated[float, typer.Option(help="Largest allowed |pruned - masked| on the probe batch.")] = 1e-4,
          force: Force = False, as_json: Json = False) -> None:
    """Physically remove the pruned parameters (HF tensor names; checked against the masked model).

    [bold]Example[/]: bgeprune prune runs/smoke/masks
    """
    def work() -> dict:
        from .stages import prune as stage

        return stage.run(masks, out=output, force=force, atol=atol)

    _execute(work, as_json, render.prune)


@app.command("export-hf")
def export_hf(source: Annotated[Path, typer.Argument(help="A pruned-model artifact (RUN/pruned) or its run dir.")],
              output: Annotated[Path, typer.Argument(help="Model directory to write.")],
              fmt: Annotated[Optional[str], typer.Option(
                  "--format", metavar="[stock|padded]", callback=_choice("--format", ("stock", "padded")),
                  help="stock (default from recipe) or padded.")] = None,
              name: Annotated[Optional[str], typer.Option(help="Title of the model card.")] = None,
              onnx: Annotated[bool, typer.Option("--onnx", help="Also write onnx/: fp32 and int8 ONNX graphs (needs "
                                                 "pip install -e '.\\[onnx]').")] = False,
              local_paths: Annotated[bool, typer.Option("--local-paths", help="Record absolute local paths in "
                                                        "lineage.json, manifest.json and the card (default: none, "
                                                        "so the directory can be published).")] = False,
              dtype: Annotated[Optional[str], typer.Option(
                  "--dtype", metavar="[float32|float16|bfloat16]", callback=_choice(
                      "--dtype", ("float32", "float16", "bfloat16")),
                  help="Store the weights in this dtype (default: as the base stores them); verify then proves "
                       "the export at that dtype's tolerance.")] = None,
              force: Force = False, as_json: Json = False) -> None:
    """Write a drop-in HF model directory (AutoModel, SentenceTransformer) with no random weights.

    [bold]Examples[/]:
      bgeprune export-hf runs/smoke out/smoke --onnx
      bgeprune export-hf runs/50pct out/bge-m3-50pct-fp16 --dtype float16
    """
    def work() -> dict:
        from .stages import export_hf as stage

        return stage.run(source, output, fmt=fmt, force=force, name=name, onnx=onnx, local_paths=local_paths,
                         dtype=dtype)

    _execute(work, as_json, render.export_hf)


@app.command("export-onnx")
def export_onnx(model: Annotated[Path, typer.Argument(help="An export (the output of bgeprune export-hf).")],
                int8: Annotated[bool, typer.Option("--int8/--no-int8", help="Also write the int8 graph "
                                                   "(model_qint8_avx512_vnni.onnx).")] = True,
                force: Annotated[bool, typer.Option("--force", help="Replace an existing onnx/.")] = False,
                as_json: Json = False) -> None:
    """Add onnx/ (fp32 and int8 ONNX graphs, bge-m3's three outputs included) to an export; updates its manifest.

    Needs pip install -e '.\\[onnx]'. The graphs are traced from the export's own files; onnx/ is
    written whole or not at all.

    [bold]Example[/]: bgeprune export-onnx out/smoke-m3 && bgeprune verify out/smoke-m3
    """
    def work() -> dict:
        from .stages import export_onnx as stage

        return stage.run(model, force=force, int8=int8)

    _execute(work, as_json, render.export_onnx)


@app.command()
def verify(model: Annotated[Path, typer.Argument(help="Exported model directory.")],
           run: Annotated[Optional[Path], typer.Option("--run", help="Run dir (or masks artifact) the export came "
                                                       "from; default: the one lineage.json names, if it "
                                                       "exists.")] = None,
           compare: Compare = None,
           atol: Annotated[Optional[float], typer.Option(
               help="Largest allowed |export - masked| on the probe batch (default: 1e-5; for weights export-hf "
                    "rounded with --dtype, that dtype's tolerance, with a lowest cosine too).")] = None,
           probe: Annotated[Optional[Path], typer.Option(help="Text file (one passage a line) for --compare.")] = None,
           report: Annotated[Optional[Path], typer.Option(help="Also write a verify-report artifact here.")] = None,
           int8_min_spearman: Annotated[float, typer.Option(
               help="Fail when the int8 ONNX graph's Spearman agreement with the fp32 graph is under this in any "
                    "mode (docs/results.md, ONNX: how the default was chosen).")] = 0.9,
           force: Force = False, as_json: Json = False) -> None:
    """Prove an export: strict loading, finite weights, provenance, parity with the masked model.

    [bold]Example[/]: bgeprune verify out/smoke --compare builtin:tiny-xlm-roberta
    """
    def work() -> dict:
        from .stages import verify as stage

        result = stage.run(model, run_dir=run, compare=compare, atol=atol, probe=probe, report=report, force=force,
                           int8_min_spearman=int8_min_spearman)
        if not result["ok"]:
            render.verify(result)
            failed = [c["name"] for c in result["checks"] if c["status"] == "fail"]
            error = CheckFailed(f"{model} failed verification: {', '.join(failed)}")
            if as_json:  # the report is the one JSON object, carrying the error
                print(json.dumps({**result, "error": str(error), "exit": error.exit_code}, indent=2, sort_keys=True,
                                 default=str))
                error.json_printed = True
            raise error
        return result

    _execute(work, as_json, render.verify)


@app.command()
def card(model: Annotated[Path, typer.Argument(help="An export (the output of bgeprune export-hf).")],
         bench_report: Annotated[Optional[Path], typer.Option("--bench", help="A bench-report of this export "
                                                              "(the -o of bgeprune bench).")] = None,
         verify_report: Annotated[Optional[Path], typer.Option("--verify", help="A verify-report of this export "
                                                               "(the --report of bgeprune verify).")] = None,
         as_json: Json = False) -> None:
    """Put what verify and bench measured into the export's model card (and its model-index).

    Each report must have measured this export; the card's Measured section is rebuilt from the reports
    given, and manifest.json is rewritten so README.md's hash stays checked.

    [bold]Example[/]:
      bgeprune verify out/minilm-50pct --report runs/verify/minilm
      bgeprune bench out/minilm-50pct --compare builtin:all-minilm-l6-v2 --beir ../shared/data/pydocs \\
        -o runs/bench/minilm
      bgeprune card out/minilm-50pct --verify runs/verify/minilm --bench runs/bench/minilm
    """
    def work() -> dict:
        from .stages import card as stage

        return stage.run(model, bench=bench_report, verify=verify_report)

    _execute(work, as_json, render.card)


@app.command()
def push(model: Annotated[Path, typer.Argument(help="An export (the output of bgeprune export-hf).")],
         repo_id: Annotated[str, typer.Argument(help="Hub model repo: NAMESPACE/NAME (or NAME, in the token's own "
                                                "namespace); created if it does not exist.")],
         private: Annotated[bool, typer.Option("--private", help="Make the repo private when push creates it (an "
                                               "existing repo keeps its visibility).")] = False,
         revision: Annotated[Optional[str], typer.Option("--revision", help="Branch to commit to, created from main "
                                                         "if it does not exist; or refs/pr/N, to add to an open pull "
                                                         "request. Default: main.")] = None,
         create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request against main instead of "
                                                 "committing to it.")] = False,
         commit_message: Annotated[Optional[str], typer.Option("--commit-message", help="The commit's title.")] = None,
         token: Annotated[Optional[str], typer.Option("--token", help="A Hub token with write access. Default: "
                                                      "HF_TOKEN, else the one 'hf auth login' saved (both keep it "
                                                      "out of the process list, which --token is not).")] = None,
         as_json: Json = False) -> None:
    """Upload an export to the Hugging Face Hub, only if it passes verify's static checks.

    Nothing is uploaded from a directory that is not an export, that was exported with --local-paths,
    that fails a static check (files, manifest hashes, finite weights, config vs tensor shapes,
    identity placeholders, serving fields, bge-m3 head files) or holds files its manifest does not
    list. The whole directory goes up (onnx/, head files, lineage.json, manifest.json, the card);
    the result is the commit's URL, or the pull request's. Run the same command again to resume an
    interrupted upload.

    [bold]Examples[/]:
      bgeprune verify out/bge-m3-50pct && bgeprune push out/bge-m3-50pct your-name/bge-m3-50pct --private
      bgeprune push out/bge-m3-50pct your-name/bge-m3-50pct --create-pr --commit-message "Prune to 50%"
    """
    def work() -> dict:
        from .stages import push as stage

        return stage.run(model, repo_id=repo_id, private=private, revision=revision, create_pr=create_pr,
                         commit_message=commit_message, token=token)

    _execute(work, as_json, render.push)


def _int_list(text: Optional[str], flag: str) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag} takes comma-separated integers like 1,32, not {text!r}") from None


@app.command()
def bench(model: Annotated[str, typer.Argument(help="Export dir, run dir / RUN/pruned, HF model dir or id, "
                                                    "builtin:NAME.")],
          compare: Annotated[Optional[str], typer.Option("--compare", help="The base to compare with (same "
                                                         "kinds).")] = None,
          output: ReportOut = None,
          beir: Annotated[Optional[list[Path]], typer.Option("--beir", help="BEIR dir: corpus.jsonl, queries.jsonl, "
                                                             "qrels.tsv (repeatable).")] = None,
          bitext: Annotated[Optional[list[Path]], typer.Option("--bitext", help="JSONL of {\"en\", \"xx\"} pairs, "
                                                               "or a dir of them (repeatable).")] = None,
          batch_sizes: Annotated[Optional[str], typer.Option(help="Speed grid, e.g. 1,32 (default: 1,32 on CPU; "
                                                             "1,32,128 on GPU).")] = None,
          seq_lengths: Annotated[Optional[str], typer.Option(help="Speed grid, e.g. 128,512 (default: 32,128 on "
                                                             "CPU; 128,512 on GPU).")] = None,
          warmup: Annotated[int, typer.Option(help="Untimed passes per model and grid point.")] = 2,
          repeats: Annotated[int, typer.Option(help="Timed passes per model and grid point (interleaved).")] = 10,
          device: Device = None,
          dtype: Annotated[Optional[str], typer.Option(  # checked by the stage, for the CLI and the API alike
              metavar="[float32|float16|bfloat16]", help="Default: float32 on CPU, float16 on GPU.")] = None,
          attn: Annotated[Optional[str], typer.Option(
              metavar="[sdpa|eager]", callback=_choice("--attn", ("sdpa", "eager")),
              help="Attention implementation (default: transformers' choice).")] = None,
          max_length: Annotated[int, typer.Option(help="Truncation for quality encoding (capped by each model's "
                                                  "max_seq_length).")] = 512,
          speed: Annotated[bool, typer.Option("--speed/--no-speed", help="Time the speed grid.")] = True,
          memory: Annotated[bool, typer.Option("--memory/--no-memory", help="Measure peak memory (fresh process "
                                               "each).")] = True,
          mteb: Annotated[Optional[str], typer.Option(help="MTEB task names, comma-separated (needs `mteb` and the "
                                                      "hub).")] = None,
          backend: Annotated[str, typer.Option(
              "--backend", metavar="[torch|onnx|onnx-int8,...]",
              help="MODEL's backends, comma-separated; the first is the headline's. onnx/onnx-int8 run the "
                   "export's onnx/ graphs (needs pip install -e '.\\[onnx]', CPU).")] = "torch",
          compare_backend: Annotated[Optional[str], typer.Option(
              "--compare-backend", metavar="[torch|onnx|onnx-int8,...]",
              help="The base's backends (default: the same as --backend); a base without onnx/ is traced at "
                   "bench time.")] = None,
          dims: Annotated[Optional[str], typer.Option(
              "--dims", help="Also score dense quality at these output widths, e.g. 256,128: every model's "
                             "vectors cut to their first k dims and normalised (truncate_dim), the base's "
                             "too.")] = None,
          force: Force = False, as_json: Json = False) -> None:
    """Speed, memory, size and quality of MODEL side by side with --compare, in one run → a bench-report.

    Writes report.json (numbers, environment, command) and report.png (quality vs throughput,
    layers kept). The headline is batch 32 × 128 tokens: speedup, FLOPs speedup, and their
    ratio (speedup efficiency).

    [bold]Examples[/]:
      bgeprune bench out/minilm-50pct --compare builtin:all-minilm-l6-v2 --beir ../shared/data/pydocs
      bgeprune bench out/minilm-50pct --backend onnx-int8,onnx,torch --compare builtin:all-minilm-l6-v2 \\
        --compare-backend torch,onnx-int8
      bgeprune bench out/me5-matryoshka --compare me5-small --bitext ../shared/data/bitext_dev --dims 192,96
    """
    def work() -> dict:
        from .bench.backends import parse_backends
        from .stages import bench as stage

        options = stage.BenchOptions(beir=beir or [], bitext=bitext or [],
                                     batch_sizes=_int_list(batch_sizes, "--batch-sizes"),
                                     seq_lengths=_int_list(seq_lengths, "--seq-lengths"), warmup=warmup,
                                     repeats=repeats, device=device, dtype=dtype, attn=attn, max_length=max_length,
                                     speed=speed, memory=memory,
                                     mteb=[t.strip() for t in (mteb or "").split(",") if t.strip()],
                                     backends=parse_backends(backend, "--backend"),
                                     compare_backends=parse_backends(compare_backend, "--compare-backend"),
                                     dims=_int_list(dims, "--dims") or [])
        return stage.run(model, compare=compare, out=output, force=force, options=options)

    def show(r: dict) -> None:
        from .bench.render import render_bench

        render_bench(r)

    _execute(work, as_json, show)


def main() -> None:
    app(prog_name="bgeprune")


if __name__ == "__main__":
    sys.exit(main())
