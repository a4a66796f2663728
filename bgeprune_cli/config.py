"""Recipes: pydantic schemas (extra="forbid"), TOML loading with line numbers, `--set` overrides.

A recipe error lists every problem at once as `file:line: dotted.key: message`, before any
model weights load (only the base model's config.json is read, to check the target is feasible).

The schema, the TOML line map that gives every error its `file:line`, `--set`, and the cross-field
and feasibility checks are one contract, kept in one file (about 400 lines) so a change to a
section and to the checks that read it is made in one place.

Example:
    bgeprune check recipes/50pct.toml --set target.layers=20
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_serializer

from .errors import RecipeError
from .recipe_hints import nearest_key, type_hint


class _Section(BaseModel):
    # strict: `--set train.steps=true` is an error, not 1 step; no inf or nan anywhere in a recipe
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BaseSection(_Section):
    model: str = Field(description="HF hub id, local model directory, or builtin:NAME")
    revision: str | None = None


class TargetSection(_Section):
    """Targeted mode names the architecture to reach; sparsity mode one global fraction to remove."""

    mode: Literal["targeted", "sparsity"] = "targeted"
    layers: int | None = None
    heads: int | None = None
    ffn: int | None = None
    hidden: int | None = None
    sparsity: float | None = None
    masks: list[Literal["layer", "heads", "ffn", "hidden"]] | None = None


class RunSection(_Section):
    dir: str | None = Field(None, description="run directory; default runs/<recipe file stem>")


class StreamSource(_Section):
    """A Hugging Face `datasets` dataset read in streaming mode: one `[data.stream]` table, or several
    `[[data.stream]]` tables mixed by `weight` (docs/data.md).

    `StreamSource("json", data_files=[...])` also works in code (the dataset is the one positional field).
    """

    dataset: str = Field(description='hub id ("HuggingFaceFW/fineweb-edu") or a builder ("json", "parquet")')
    name: str | None = Field(None, description="the dataset's config")
    split: str = "train"
    text_field: str = "text"
    data_files: list[str] | None = None
    revision: str | None = None
    shuffle_buffer: int = Field(10_000, ge=1, description="texts held for shuffling (also kept in checkpoints); "
                                "a mix of sources holds the largest value given")
    weight: float = Field(1.0, gt=0, description="this source's share of a [[data.stream]] mix "
                          "(weights are normalised over the sources)")

    def __init__(self, dataset: str | None = None, /, **data):
        super().__init__(**({"dataset": dataset} if dataset is not None else {}), **data)

    def fingerprint(self) -> str:
        """sha256 over the fields; for a builder (a name without "/") also each local file's size and mtime.

        A hub id's data_files are paths inside the repository, so they are not looked up on disk;
        its `revision` is what pins the content there.
        """
        fields = self.model_dump(exclude={"weight"} if self.weight == 1.0 else None)  # as before weights existed
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
        hash_local_files(digest, self.dataset, self.data_files)
        return digest.hexdigest()


def hash_local_files(digest, dataset: str, data_files: list[str] | None) -> None:
    """For a builder (a dataset name without "/"), add each local data file's path, size and modification
    time to `digest`, globs expanded, so an edited file is a changed source. A hub id's data_files are
    paths inside its repository, which its revision pins; they are not looked up on disk."""
    if "/" in dataset:
        return
    for entry in data_files or []:
        for path in sorted(glob.glob(entry, recursive=True)) or [entry]:
            if os.path.isfile(path):
                stat = os.stat(path)
                digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())


class TranslationSet(_Section):
    """Translation pairs from a Hugging Face dataset, for distill.translation (`[[data.translation_sets]]`).

    Downloaded once by `datasets` (its cache) and written as a JSONL file under $BGEPRUNE_CACHE/translations,
    then read like data.translations (training/translation_sets.py). The defaults fit sentence-transformers'
    parallel-sentences datasets: `{ dataset = "sentence-transformers/parallel-sentences-tatoeba", name = "en-de" }`.
    """

    dataset: str = Field(description='hub id, or a builder ("json", "parquet", "csv") with data_files')
    name: str | None = Field(None, description="the dataset's config (a language pair: \"en-de\")")
    split: str = "train"
    revision: str | None = None
    data_files: list[str] | None = None
    source_field: str = Field("english", description="the column the teacher embeds")
    translation_field: str = Field("non_english", description="its translation's column")
    limit: int | None = Field(None, ge=1, description="at most this many pairs (the first ones), for a balanced mix")


class DataSection(_Section):
    train: list[str] = Field(default_factory=list, description="text/JSONL files, directories or globs")
    stream: list[StreamSource] = Field(default_factory=list, description="stream from HF datasets instead of "
                                       "data.train: one [data.stream] table or several [[data.stream]] tables")
    pairs: list[str] = Field(default_factory=list, description='{"query","pos","neg"} JSONL files')
    translations: list[str] = Field(default_factory=list, description="translation pairs for distill.translation: "
                                    "JSONL files with the two fields of translation_fields, or TSV files "
                                    "(source<TAB>translation, as parallel corpora ship); files, directories or globs")
    translation_fields: list[str] = Field(["en", "xx"], description="the JSONL fields of a translation pair: "
                                                "the source (the teacher embeds it) and its translation")
    translation_sets: list[TranslationSet] = Field(default_factory=list, description="translation pairs from "
                                                   "Hugging Face datasets (beside data.translations)")
    max_length: int = Field(128, ge=8, le=1_000_000, description="tokens per text; at most the base's position "
                            "limit (checked against its config.json)")

    @field_validator("translation_fields")
    @classmethod
    def _two_fields(cls, value: list[str]) -> list[str]:
        if len(value) != 2 or not all(name.strip() for name in value) or value[0] == value[1]:
            raise ValueError(f"needs two different non-empty field names (source, translation), got {list(value)}")
        return value

    @field_validator("stream", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [] if value is None else [value] if isinstance(value, (dict, StreamSource)) else value

    @model_serializer(mode="wrap")
    def _without_unset(self, handler):
        """translation_sets is left out when empty, so a recipe without it resolves and hashes as before."""
        dumped = handler(self)
        if not dumped.get("translation_sets"):
            dumped.pop("translation_sets", None)
        return dumped

    @field_serializer("stream")
    def _as_written(self, stream: list[StreamSource]):
        """One source is stored as the table it is written as (its weight, meaningless alone, left out), so
        a single-source recipe resolves and hashes as before mixes existed; none as null."""
        if len(stream) == 1:
            return stream[0].model_dump(exclude={"weight"})
        return [s.model_dump() for s in stream] or None


class TrainSection(_Section):
    steps: int = Field(1000, ge=1, le=100_000_000)
    recovery_steps: int = Field(0, ge=0, le=100_000_000)
    batch_size: int = Field(32, ge=2, le=1_000_000, description="texts per optimizer step, over all processes")
    micro_batch_size: int | None = Field(None, ge=2, le=1_000_000,
                                         description="texts per forward pass, the group in-batch "
                                         "losses compare within; a divisor of batch_size (default: batch_size)")
    # Bounded above: past these a run only ruins its weights on the first step.
    lr_weights: float = Field(2e-5, gt=0, le=1.0)
    lr_gates: float = Field(0.05, gt=0, le=100.0)
    lr_lambda: float = Field(0.01, gt=0, le=100.0)
    target_warmup_steps: int = Field(200, ge=0)
    gate_init: float = 3.0
    # 2.0: measured better than uniform gates on retrieval and bitext (docs/results.md, Quality levers)
    importance_init: float = Field(2.0, ge=0, description="spread the initial log_alpha by training-free importance "
                                   "(magnitude, block influence): units rank as their scores from gate_init - x to "
                                   "gate_init + x; 0 starts every gate at gate_init")
    # True: as good as training the table on MiniLM and multilingual-e5-small, and 1.48x faster steps on
    # the latter, whose table is 82% of its parameters (docs/results.md, Quality levers and Training overhead)
    freeze_embeddings: bool = Field(True, description="keep the word-embedding table at the base's values: no "
                                    "gradient and no optimizer update for it (most of a multilingual model's "
                                    "parameters); false trains it with the rest")
    seed: int = 0
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_bad_steps: int = Field(20, ge=0)
    log_every: int = Field(10, ge=1)


class DistillSection(_Section):
    cosine: float = Field(1.0, ge=0)
    tokens: float = Field(0.0, ge=0, description="per-token cosine between student and teacher last hidden states "
                          "(when hidden is kept)")
    similarity_kl: float = Field(1.0, ge=0)
    temperature: float = Field(0.05, gt=0)
    layerwise: float = Field(0.0, ge=0)
    contrastive: float = Field(0.0, ge=0)
    # Multilingual knowledge distillation: unlabelled text teaches each language's geometry apart; pairs
    # tie a sentence to its translation, which is what cross-lingual retrieval needs.
    translation: float = Field(1.0, ge=0, description="pull the student's embeddings of a source and of its "
                               "translation to the teacher's embedding of the source (cosine when the output "
                               "width is kept, and an in-batch cross-lingual similarity KL at any width); used "
                               "only when data.translations or data.translation_sets is set")
    # bge-m3 heads (used only when the base has colbert_linear.pt / sparse_linear.pt)
    sparse: float = Field(1.0, ge=0, description="MSE on per-token sparse weights")
    colbert: float = Field(1.0, ge=0, description="KL over in-batch ColBERT late-interaction scores")
    # Matryoshka output: the first k dims of the dense vector are an embedding on their own, so a user
    # picks the index width at load time (truncate_dim) from one stock model.
    matryoshka_dims: list[int] | None = Field(None, description="nested output widths to train, widest first "
                                              "(e.g. [384, 192, 96]): the in-batch similarity KL (and the "
                                              "translation term) on each L2-normalised prefix of the dense "
                                              "vector against the teacher's full-width similarities; each at "
                                              "most the student's output width")
    matryoshka_weights: list[float] | None = Field(None, description="one weight per matryoshka_dims entry, "
                                                   "relative to the full width's terms (default 1 each)")

    def matryoshka_prefixes(self, width: int) -> list[tuple[int, float]]:
        """(k, weight) of every trained width below the full `width`; the full width is the existing terms."""
        dims = self.matryoshka_dims or []
        weights = self.matryoshka_weights or [1.0] * len(dims)
        return [(k, w) for k, w in zip(dims, weights) if k < width and w > 0]

    @model_serializer(mode="wrap")
    def _as_written(self, handler):
        """The Matryoshka keys are left out when unset, so a recipe without them resolves and hashes as before."""
        dumped = handler(self)
        for key in ("matryoshka_dims", "matryoshka_weights"):
            if dumped.get(key) is None:
                dumped.pop(key, None)
        return dumped


class VocabSection(_Section):
    """Vocabulary trimming: keep the token embeddings that a corpus of the user's own text produces.

    The base's special and added tokens are always kept; docs/design.md, Masks (the vocab axis).
    """

    corpus: list[str] = Field(default_factory=list, description="text/JSONL files, directories or globs (as "
                              "data.train)")
    stream_texts: int | None = Field(None, ge=1, le=10_000_000, description="instead of corpus files: the first "
                                     "this many texts of the recipe's data.stream, in stream order")
    min_count: int = Field(1, ge=1, description="keep a token the corpus produces at least this often")
    max_tokens: int | None = Field(None, ge=1, description="at most this many tokens in all: specials and keep "
                                   "first, then the corpus's most frequent (ties to the lower id)")
    keep: list[str] = Field(default_factory=list, description="extra tokens to keep, spelled as the vocabulary "
                            "spells them ('▁word' for SentencePiece, '##ing' for WordPiece)")
    characters: bool = Field(True, description="also keep the single-character token of every character in the "
                             "corpus, so a word the corpus lacks falls back to characters rather than <unk>")

    @model_serializer(mode="wrap")
    def _as_written(self, handler):
        """stream_texts is left out when unset, so a files-only [vocab] resolves and hashes as before it existed."""
        dumped = handler(self)
        if dumped.get("stream_texts") is None:
            dumped.pop("stream_texts", None)
        return dumped


class ExportSection(_Section):
    format: Literal["stock", "padded"] = "stock"
    name: str | None = Field(None, description="title of the exported model card")


class Recipe(_Section):
    base: BaseSection
    target: TargetSection = Field(default_factory=TargetSection)  # may be left out when [vocab] trims alone
    run: RunSection = Field(default_factory=RunSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    export: ExportSection = Field(default_factory=ExportSection)
    vocab: VocabSection | None = None


@dataclass(frozen=True)
class BaseDims:
    """The base model's architecture, as read from its config.json."""

    layers: int
    heads: int
    ffn: int
    hidden: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, cfg: dict) -> "BaseDims":
        return cls(cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["hidden_size"])


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path
    resolved: dict  # the validated recipe with defaults filled and local paths made absolute
    sha256: str
    overrides: tuple[str, ...] = ()  # the --set values it was loaded with (to print a command that repeats it)

    @property
    def name(self) -> str:
        return self.path.stem

    def run_dir(self) -> Path:
        return Path(self.recipe.run.dir) if self.recipe.run.dir else Path("runs") / self.name

    def where(self, dotted: str) -> str:
        """`file:line` (or `--set`) of a recipe key, for problems found after loading (e.g. vocab.keep)."""
        overridden = {item.partition("=")[0].strip() for item in self.overrides}
        try:
            lines = key_lines(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            lines = {}
        return _where(str(self.path), lines, overridden, dotted)


# ---------------------------------------------------------------- line numbers

_TABLE = re.compile(r"^\[\[?\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r"^((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _norm_key(key: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def key_lines(text: str) -> dict[str, int]:
    """Map each dotted key and table of a TOML text to the line that defines it."""
    lines: dict[str, int] = {}
    tables = [""]  # the names a key line is recorded under: `[[x]]` keys also as x.N.key (pydantic's loc)
    arrays: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if match := _TABLE.match(stripped):
            table = _norm_key(match.group(1))
            tables = [table]
            if stripped.startswith("[["):
                index = arrays[table] = arrays.get(table, -1) + 1
                tables.append(f"{table}.{index}")
            for name in tables:
                lines.setdefault(name, number)
        elif match := _KEY.match(stripped):
            key = _norm_key(match.group(1))
            for table in tables:
                lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


def _where(file: str, lines: dict[str, int], overridden: set[str], dotted: str) -> str:
    """`file:line` for a dotted key, falling back to its nearest defined parent."""
    parts = dotted.split(".")
    while parts:
        key = ".".join(parts)
        if key in overridden:
            return "--set"
        if key in lines:
            return f"{file}:{lines[key]}"
        parts.pop()
    return f"{file}:1"


# ---------------------------------------------------------------- overrides


def apply_overrides(data: dict, sets: list[str]) -> set[str]:
    """Apply `dotted.key=value` overrides in place (value parsed as TOML, else taken as a string)."""
    touched: set[str] = set()
    problems = []
    for item in sets:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set: {item!r}: expected dotted.key=value")
            continue
        if "\n" in raw or "\r" in raw:
            problems.append(f"--set: {key}: the value holds a line break; give one TOML value on one line")
            continue
        try:  # on one line, `v = RAW` holds exactly one value or fails to parse
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # an unquoted string: builtin:tiny-bert, a path
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.setdefault(part, {}), dict):
                problems.append(f"--set: {key}: {part!r} is a value, not a table")
                break
            node = node[part]
        else:
            node[parts[-1]] = value
            touched.add(key)
    if problems:
        raise RecipeError(problems)
    return touched


# ---------------------------------------------------------------- semantic checks


def _mode_problems(target: TargetSection, vocab_only_ok: bool = False) -> list[tuple[str, str]]:
    """Cross-field rules that do not need the base model. With `vocab_only_ok` (a [vocab] section) an
    empty targeted [target] is a recipe that only trims the vocabulary."""
    problems = []
    sizes = {"layers": target.layers, "heads": target.heads, "ffn": target.ffn, "hidden": target.hidden}
    if target.mode == "targeted":
        if target.sparsity is not None:
            problems.append(("target.sparsity", "only used with mode = \"sparsity\"; targeted mode names sizes"))
        if target.masks is not None:
            problems.append(("target.masks",
                             "only used with mode = \"sparsity\"; targeted mode derives masks from sizes"))
        if all(v is None for v in sizes.values()) and not vocab_only_ok:
            problems.append(("target", "targeted mode needs at least one of layers, heads, ffn, hidden "
                             "(or a [vocab] section, to trim only the vocabulary)"))
        for key, value in sizes.items():
            if value is not None and value < 1:
                what = "a model with zero layers is no encoder" if key == "layers" else "keep at least one"
                problems.append((f"target.{key}", f"must be at least 1 ({what}); got {value}"))
    else:
        if target.sparsity is None or not 0 < target.sparsity < 1:
            problems.append(("target.sparsity", f"sparsity mode needs 0 < sparsity < 1; got {target.sparsity}"))
        for key, value in sizes.items():
            if value is not None:
                problems.append((f"target.{key}", "only used with mode = \"targeted\"; sparsity mode learns sizes"))
    return problems


def _train_problems(recipe: Recipe) -> list[tuple[str, str]]:
    train, problems = recipe.train, []
    micro = train.micro_batch_size
    if micro is not None and train.batch_size % micro:
        problems.append(("train.micro_batch_size", f"{micro} does not divide train.batch_size = {train.batch_size}; "
                         f"a step is a whole number of micro-batches"))
    if recipe.data.stream and recipe.data.train:
        problems.append(("data.stream", "set either data.train (local files) or data.stream (HF datasets), not both"))
    return problems


def _matryoshka_problems(distill: DistillSection) -> list[tuple[str, str]]:
    """The widths' own rules; whether they fit the student's width needs the base (feasibility_problems)."""
    dims, weights = distill.matryoshka_dims, distill.matryoshka_weights
    if dims is None:
        return [("distill.matryoshka_weights", "set without distill.matryoshka_dims; name the widths they weigh "
                 "(e.g. matryoshka_dims = [384, 192, 96])")] if weights is not None else []
    problems = []
    if not dims:
        problems.append(("distill.matryoshka_dims", "name at least one width (e.g. [384, 192, 96]), or remove the "
                         "key to train the full width only"))
    if any(k < 1 for k in dims):
        problems.append(("distill.matryoshka_dims", f"every width must be at least 1; got {dims}"))
    if any(a <= b for a, b in zip(dims, dims[1:])):
        problems.append(("distill.matryoshka_dims", f"list the widths widest first, each once; got {dims} "
                         f"(try {sorted(set(dims), reverse=True)})"))
    if weights is not None:
        if len(weights) != len(dims):
            problems.append(("distill.matryoshka_weights", f"{len(weights)} weight(s) for {len(dims)} width(s); "
                             f"give one per entry of matryoshka_dims"))
        if any(w < 0 for w in weights):
            problems.append(("distill.matryoshka_weights", f"weights must be at least 0; got {weights}"))
    return problems


def matryoshka_width_problems(recipe: Recipe, dims: BaseDims) -> list[tuple[str, str]]:
    """Trained widths must fit the student's dense vector, and that vector's dims must be known now."""
    widths, target = recipe.distill.matryoshka_dims, recipe.target
    if not widths:
        return []
    hidden_pruned = (target.mode == "targeted" and target.hidden is not None and target.hidden < dims.hidden) or (
        target.mode == "sparsity" and "hidden" in (target.masks or []))
    if hidden_pruned:
        # Which dims a pruned width keeps is decided by the masks, so a prefix of it is not known while
        # the gates are sampled; keeping hidden also keeps the full width index-compatible with the base.
        return [("distill.matryoshka_dims", "cannot be trained while hidden is pruned (the prefix of a pruned "
                 "width is not known until the masks are final); keep target.hidden at the base's "
                 f"{dims.hidden}, or drop matryoshka_dims")]
    width = dims.hidden
    if any(k > width for k in widths):
        return [("distill.matryoshka_dims", f"{[k for k in widths if k > width]} wider than the student's "
                 f"{width}-dim output; use widths up to {width}")]
    if recipe.distill.matryoshka_weights and widths[0] == width and recipe.distill.matryoshka_weights[0] != 1.0:
        return [("distill.matryoshka_weights", f"the full width ({width}) keeps the existing terms at their own "
                 "weights (distill.similarity_kl, distill.cosine, ...); give it weight 1.0")]
    return []


def _vocab_problems(recipe: Recipe) -> list[tuple[str, str]]:
    vocab, problems = recipe.vocab, []
    if vocab is not None and bool(vocab.corpus) == (vocab.stream_texts is not None):
        problems.append(("vocab.corpus", "name the trimming corpus once: files of your languages in vocab.corpus, or "
                         "vocab.stream_texts = N to count the first N texts of data.stream"
                         + ("" if vocab.corpus else " (docs/data.md)")))
    if vocab is not None and vocab.stream_texts is not None and not recipe.data.stream:
        problems.append(("vocab.stream_texts", "counts texts of data.stream, and the recipe has no [data.stream]; "
                         "add one, or name corpus files in vocab.corpus"))
    return problems


def _nearest_stock_shapes(dims: BaseDims, heads: int, hidden: int) -> str:
    """Stock configs compute head size as hidden/heads, so valid pairs are (h, head_dim*h)."""
    wanted = {heads, max(1, min(dims.heads, round(hidden / dims.head_dim)))}
    pairs = sorted({(h, h * dims.head_dim) for w in wanted for h in (w - 1, w, w + 1) if 1 <= h <= dims.heads})
    return ", ".join(f"heads={h} with hidden={d}" for h, d in pairs)


def feasibility_problems(target: TargetSection, dims: BaseDims, vocab_only_ok: bool = False) -> list[tuple[str, str]]:
    """Targets that this base cannot reach, or that no stock config can describe. With `vocab_only_ok`
    (the recipe has a [vocab] section) a target equal to the base is a vocabulary-only recipe."""
    if target.mode != "targeted":
        if target.masks == []:
            return [("target.masks", "name at least one of layer, heads, ffn, hidden")]
        return []
    problems = []
    limits = {"layers": dims.layers, "heads": dims.heads, "ffn": dims.ffn, "hidden": dims.hidden}
    for key, limit in limits.items():
        value = getattr(target, key)
        if value is not None and value > limit:
            problems.append((f"target.{key}", f"{value} is more than the base model has ({limit})"))
    heads = target.heads or dims.heads
    hidden = target.hidden or dims.hidden
    if not problems and heads * dims.head_dim != hidden:
        key = "target.hidden" if target.hidden is not None else "target.heads"
        problems.append((key, (
            f"heads={heads} with hidden={hidden} is not a stock shape: the model computes head size as "
            f"hidden/heads, so keep both or prune them together with hidden = {dims.head_dim}*heads. "
            f"Nearest valid: {_nearest_stock_shapes(dims, heads, hidden)}")))
    if not problems and all(getattr(target, k) in (None, limits[k]) for k in limits) and not vocab_only_ok:
        problems.append(("target", "every target equals the base model; nothing would be pruned (add a [vocab] "
                         "section to trim only the vocabulary)"))
    return problems


def targeted_masks(target: TargetSection, dims: BaseDims) -> list[str]:
    """Which masks a recipe learns: those whose target is below the base (or the listed ones)."""
    if target.mode == "sparsity":
        return list(target.masks or ["layer", "heads", "ffn"])
    sizes = {"layer": (target.layers, dims.layers), "heads": (target.heads, dims.heads),
             "ffn": (target.ffn, dims.ffn), "hidden": (target.hidden, dims.hidden)}
    return [m for m, (want, have) in sizes.items() if want is not None and want < have]


# ---------------------------------------------------------------- loading


def _resolve_local(value: str, base_dir: Path) -> str:
    """Make recipe-relative local paths absolute; leave hub ids and builtin names alone."""
    if value.startswith("builtin:"):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = (base_dir / path).resolve()
    if value.startswith(".") or candidate.exists():
        return str(candidate)
    return value


def load_recipe(path: str | Path, sets: list[str] | None = None, base_dims=None,
                base_max_tokens=None) -> LoadedRecipe:
    """Parse, override, validate and (given `base_dims(recipe) -> BaseDims`) check feasibility; given
    `base_max_tokens(recipe) -> int`, also that data.max_length fits the base's positions.

    Both read only the base model's config.json, so this fails before any weights load.

    Raises RecipeError listing every problem found.
    """
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([f"{file}: no such recipe file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError([f"{file}: cannot read recipe: {exc}"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = getattr(exc, "lineno", None) or _line_from_message(str(exc))
        raise RecipeError([f"{file}:{line}: toml: {exc}"]) from None
    lines = key_lines(text)
    overridden = apply_overrides(data, sets or [])

    def fmt(key: str, message: str) -> str:
        return f"{_where(file, lines, overridden, key)}: {key}: {message}"

    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                near = nearest_key(Recipe, err["loc"])
                message = f"unknown key; did you mean {near}?" if near else \
                    "unknown key (check the spelling; see recipes/ for the schema)"
            else:
                via_set = _where(file, lines, overridden, key) == "--set"
                message = err["msg"] + (type_hint(Recipe, err["loc"], via_set) if err["type"].endswith("_type") else "")
            problems.append(fmt(key, message))
        raise RecipeError(problems) from None

    vocab = recipe.vocab is not None
    problems = [fmt(k, m) for k, m in _mode_problems(recipe.target, vocab) + _train_problems(recipe)
                + _vocab_problems(recipe) + _matryoshka_problems(recipe.distill)]
    if problems:
        raise RecipeError(problems)

    resolved = recipe.model_dump(mode="json")
    resolved["base"]["model"] = _resolve_local(recipe.base.model, path.parent)
    resolved["data"]["train"] = [_resolve_local(p, path.parent) for p in recipe.data.train]
    resolved["data"]["pairs"] = [_resolve_local(p, path.parent) for p in recipe.data.pairs]
    resolved["data"]["translations"] = [_resolve_local(p, path.parent) for p in recipe.data.translations]
    if recipe.vocab is not None:
        resolved["vocab"]["corpus"] = [_resolve_local(p, path.parent) for p in recipe.vocab.corpus]
    streams = resolved["data"]["stream"]
    for source, stored in zip(recipe.data.stream, [streams] if isinstance(streams, dict) else streams or []):
        if source.data_files:
            stored["data_files"] = [_resolve_local(p, path.parent) for p in source.data_files]
    for source, stored in zip(recipe.data.translation_sets, resolved["data"].get("translation_sets", [])):
        if source.data_files:
            stored["data_files"] = [_resolve_local(p, path.parent) for p in source.data_files]
    recipe = Recipe.model_validate(resolved)
    if base_dims is not None:
        dims = base_dims(recipe)
        problems = [fmt(k, m) for k, m in feasibility_problems(recipe.target, dims, vocab)
                    + matryoshka_width_problems(recipe, dims)]
        if problems:
            raise RecipeError(problems)
    if base_max_tokens is not None and recipe.data.max_length > (limit := base_max_tokens(recipe)):
        raise RecipeError([fmt("data.max_length", f"{recipe.data.max_length} is more than the base takes ({limit} "
                               f"tokens, its position embeddings); set data.max_length to at most {limit}")])
    return LoadedRecipe(recipe, path, resolved, recipe_sha256(resolved), tuple(sets or ()))


def _line_from_message(message: str) -> int:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else 1


def recipe_sha256(resolved: dict) -> str:
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def recipe_from_resolved(resolved: dict[str, Any]) -> Recipe:
    """A recipe stored in an artifact manifest (already validated and path-resolved)."""
    return Recipe.model_validate(resolved)
