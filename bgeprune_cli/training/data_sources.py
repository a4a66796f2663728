"""Whether each data source a recipe names can be read from this machine, before anything loads.

`bgeprune check` runs this: every local entry of `data.train`, `data.pairs` and `vocab.corpus` must
name files here, every `[data.stream]` source must open and give its first record, and every
`[[data.translation_sets]]` entry is downloaded and written as train will read it. A missing
path is named with the `--set` that replaces it; a hub dataset that cannot be reached says so, with
how to point at a local copy. Hub sources are opened side by side (it is all waiting on the network),
and once the hub has proved unreachable the rest are not retried one by one.

Example:
    bgeprune check recipes/50pct.toml      # 40 streamed sources, each opened and read once
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from ..config import Recipe, StreamSource
from ..errors import BgepruneError, DataError, EnvironmentProblem
from .data import SUFFIXES, TRANSLATION_SUFFIXES, expand_sources, with_packaged
from .data_stream import OPENING_AT_ONCE


@dataclass(frozen=True)
class SourceStatus:
    key: str  # data.train, data.pairs, data.translations, vocab.corpus, data.stream[3]
    source: str  # the path or pattern, or the dataset with its config
    ok: bool
    detail: str  # what was found, or what is wrong and what to do
    exit_code: int = 0  # of the problem: 2 for data the user must fix, 4 for an unreachable hub

    def as_dict(self) -> dict:
        return asdict(self)


def _local(key: str, patterns: list[str], suffixes: tuple[str, ...] = SUFFIXES) -> list[SourceStatus]:
    rows = []
    for pattern, path in zip(patterns, with_packaged(patterns)):
        try:
            files = expand_sources([path], key, suffixes)
        except DataError as exc:
            problem = "; ".join(getattr(exc, "problems", None) or [str(exc)])
            rows.append(SourceStatus(key, pattern, False, problem.removeprefix(f"{key}: '{pattern}' "),
                                     DataError.exit_code))
            continue
        size = sum(f.stat().st_size for f in files)
        rows.append(SourceStatus(key, pattern, True, f"{len(files):,} file{'s' * (len(files) != 1)}, "
                                                     f"{size / 1e6:,.1f} MB"))
    return rows


def _describe(source: StreamSource) -> str:
    config = f" {source.name}" if source.name else ""
    count = len(source.data_files or [])
    files = f", {count} data_files entr{'ies' if count != 1 else 'y'}" if count else ""
    return f"{source.dataset}{config} [{source.split}]{files}"


def _open(args: tuple[str, StreamSource]) -> SourceStatus:
    from .data_stream import open_source

    key, source = args
    try:
        open_source(source, key)
    except BgepruneError as exc:
        return SourceStatus(key, _describe(source), False, str(exc).removeprefix(f"{key}: "), exc.exit_code)
    field = f"'{source.text_field}'"
    weight = f", weight {source.weight:g}" if source.weight != 1.0 else ""
    return SourceStatus(key, _describe(source), True, f"opened; first record has {field}{weight}")


def _streams(sources: list[StreamSource]) -> list[SourceStatus]:
    keyed = [(f"data.stream[{i}]" if len(sources) > 1 else "data.stream", s) for i, s in enumerate(sources)]
    # One source first: when the hub is unreachable, it alone pays the retries and the rest are not tried.
    first = _open(keyed[0])
    if not first.ok and first.exit_code == EnvironmentProblem.exit_code:
        skipped = [SourceStatus(k, _describe(s), False, f"not tried: {keyed[0][0]} could not reach its source",
                                EnvironmentProblem.exit_code) for k, s in keyed[1:]]
        return [first, *skipped]
    with ThreadPoolExecutor(OPENING_AT_ONCE) as pool:
        return [first, *pool.map(_open, keyed[1:])]


def _translation_sets(recipe: Recipe) -> list[SourceStatus]:
    """Each [[data.translation_sets]] entry downloaded and written once (what train then reads), with its pairs."""
    from .translation_sets import describe, materialize, set_keys

    rows, fields = [], tuple(recipe.data.translation_fields)
    for key, source in set_keys(recipe.data):
        if rows and not rows[0].ok and rows[0].exit_code == EnvironmentProblem.exit_code:
            rows.append(SourceStatus(key, describe(source), False, f"not tried: {rows[0].key} could not reach its "
                                     "source", EnvironmentProblem.exit_code))
            continue
        try:
            path, count = materialize(source, key, fields)
        except BgepruneError as exc:
            rows.append(SourceStatus(key, describe(source), False, str(exc).removeprefix(f"{key}: "), exc.exit_code))
            continue
        rows.append(SourceStatus(key, describe(source), True, f"{count:,} pairs in {path}"))
    return rows


def data_sources(recipe: Recipe) -> list[SourceStatus]:
    """The status of every data source the recipe names, in recipe order."""
    rows = _local("data.train", recipe.data.train) + _local("data.pairs", recipe.data.pairs)
    if recipe.distill.translation > 0:
        rows += _local("data.translations", recipe.data.translations, TRANSLATION_SUFFIXES)
        rows += _translation_sets(recipe)
    if recipe.data.stream:
        rows += _streams(recipe.data.stream)
    if recipe.vocab is not None:
        rows += _local("vocab.corpus", recipe.vocab.corpus)
    return rows


def raise_unreachable(rows: list[SourceStatus]) -> None:
    """One error listing every source that cannot be read: exit 2 when any is the user's to fix (a missing
    path, a bad field), else 4 (the network)."""
    bad = [row for row in rows if not row.ok]
    if not bad:
        return
    lines = "\n  ".join(f"{row.key}: {row.source}: {row.detail}" for row in bad)
    message = (f"{len(bad)} of the recipe's {len(rows)} data sources cannot be read here:\n  {lines}\n"
               "What to bring and how to name it: docs/data.md.")
    if any(row.exit_code != EnvironmentProblem.exit_code for row in bad):
        raise DataError(message)
    raise EnvironmentProblem(message)
