"""Training text streamed from a Hugging Face `datasets` dataset, with the interface of `data.Batches`.

For corpora too big to download and index (FineWeb-Edu and the like), `StreamBatches` reads the
dataset in streaming mode: records arrive in stream order and are never loaded whole. We shuffle
with our own seeded buffer rather than `IterableDataset.shuffle`, because the latter's buffer is
lost on resume. Up to `shuffle_buffer` texts are held; each emitted text is drawn from a slot
chosen by `random.Random(f"{seed}:{epoch}")` and the slot is refilled from the stream. When the
stream ends the buffer drains, the epoch ends and the stream restarts; a batch crossing the end
continues into the next epoch, so every batch is full.

Resume is exact: `state_dict()` holds the epoch, the records consumed from the stream this epoch,
the buffer's texts, the generator state (as plain lists, so `torch.load(weights_only=True)` reads
it) and the stream's own `IterableDataset.state_dict()`, which `datasets` restores to the exact
record without re-reading what came before. Without it (another `datasets` version, or a stream
that has none) the stream is repositioned with `.skip(position)`, which re-reads those records.
A checkpoint therefore also holds up to `shuffle_buffer` texts.

Several `[[data.stream]]` sources are mixed with `datasets.interleave_datasets`: each record comes from
a source drawn by weight (seeded by train.seed), and the mix runs until every source has ended once
(the shorter ones start again meanwhile), so a small language is revisited rather than dropped. Each
source's text field is renamed to `text` first, so sources with different fields mix.

Example:
    [data.stream]
    dataset = "HuggingFaceFW/fineweb-edu"
    name = "sample-10BT"
    text_field = "text"

    then `bgeprune train recipes/my.toml` (recipes/50pct.toml mixes 40 sources, one per language).
"""

from __future__ import annotations

import errno
import hashlib
import json
import random
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..config import StreamSource
from ..errors import BgepruneError, DataError, EnvironmentProblem, environment_error, missing_module, os_error_in
from .passages import PassageCutter

if TYPE_CHECKING:
    from datasets import IterableDataset


MIX_FIELD = "text"  # every source's text field, renamed, in a mix
# OSErrors of the machine (its disk), not of the data a recipe names: exit 4, not 2.
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
OPENING_AT_ONCE = 8


def _describe(source: StreamSource | Sequence[StreamSource]) -> str:
    if not isinstance(source, StreamSource):
        if len(source) > 1:
            return f"the mix of {len(source)} [[data.stream]] datasets"
        source = source[0]
    return f"dataset '{source.dataset}' (name {source.name!r}, split {source.split!r})"


def text_field_of(sources: Sequence[StreamSource]) -> str:
    """The field that holds the text in records of `sources` as open_stream yields them."""
    return sources[0].text_field if len(sources) == 1 else MIX_FIELD


def stream_fingerprint(sources: Sequence[StreamSource], seed: int) -> str:
    """What fixes a stream's sequence: one source's fingerprint; for a mix, also the weights and the seed
    that draws between the sources."""
    if len(sources) == 1:
        return sources[0].fingerprint()
    parts = [one.fingerprint() for one in sources] + [f"{one.weight!r}" for one in sources]
    return hashlib.sha256(json.dumps(parts + [seed]).encode()).hexdigest()


def _sources(source: StreamSource | Sequence[StreamSource]) -> list[StreamSource]:
    sources = [source] if isinstance(source, StreamSource) else list(source)
    if not sources:
        raise ValueError("no stream source given")
    return sources


def open_stream(source: StreamSource | Sequence[StreamSource], key: str = "data.stream",
                seed: int = 0) -> IterableDataset:
    """The streaming IterableDataset, each source checked by reading its first record; several sources
    are interleaved by weight, with `seed` drawing which source each record comes from."""
    sources = _sources(source)
    if len(sources) == 1:
        return open_source(sources[0], key)
    import datasets

    with ThreadPoolExecutor(OPENING_AT_ONCE) as pool:  # opening is waiting on the hub: side by side
        opened = list(pool.map(open_source, sources, [f"{key}[{i}]" for i in range(len(sources))]))
    parts = []
    for one, part in zip(sources, opened):
        part = part.select_columns([one.text_field])
        parts.append(part if one.text_field == MIX_FIELD else part.rename_column(one.text_field, MIX_FIELD))
    total = sum(one.weight for one in sources)
    return datasets.interleave_datasets(parts, probabilities=[one.weight / total for one in sources], seed=seed,
                                        stopping_strategy="all_exhausted")


@contextmanager
def hub_errors(key: str, what: str) -> Iterator[None]:
    """`datasets`' failures to load `what` as bgeprune's errors: a missing package, an unreachable hub or a
    full, read-only or failing disk exit 4 with what to do; anything else (a wrong id, config, split or
    file) is a data error, exit 2."""
    import datasets

    try:
        yield
    except ImportError as e:  # an optional dependency of one format (zstandard, ...)
        raise EnvironmentProblem(f"{key}: reading {what} needs a package that is missing ({e}); install it") from e
    except ConnectionError as e:  # not a wrong id: the hub was unreachable and nothing is cached
        if datasets.config.HF_HUB_OFFLINE:
            raise EnvironmentProblem(f"{key}: {what} is not in this machine's hub cache and HF_HUB_OFFLINE is set; "
                                     "unset it to read from the hub, or point it at files downloaded "
                                     "beforehand: dataset = \"parquet\" (or \"json\", \"text\") with data_files "
                                     "(docs/data.md)") from e
        raise EnvironmentProblem(f"{key}: cannot reach the Hugging Face hub for {what} ({e}); check the network, "
                                 "or use a copy on this machine: the hub's cache with HF_HUB_OFFLINE=1, or files "
                                 "downloaded beforehand as dataset = \"parquet\" (or \"json\", \"text\") with "
                                 "data_files (docs/data.md)") from e
    except BgepruneError:
        raise
    except Exception as e:
        error = os_error_in(e)
        if error is not None and error.errno in MACHINE_ERRNOS:  # the cache's disk, not the recipe's data
            raise environment_error(error, f"{key}: reading {what} into datasets' cache") from e
        raise DataError(f"{key}: cannot open {what}: {e}; check the dataset id, name (config), split "
                        "and data_files") from e


def open_source(source: StreamSource, key: str = "data.stream") -> IterableDataset:
    """One source's streaming IterableDataset, checked by reading its first record."""
    try:
        import datasets
    except ImportError as exc:
        raise missing_module(exc, f"{key}: streaming data") from None
    options: dict[str, Any] = {"name": source.name, "split": source.split, "revision": source.revision,
                               "streaming": True}
    if source.data_files is not None:
        options["data_files"] = list(source.data_files)
    what = _describe(source)
    with hub_errors(key, what):
        ds = datasets.load_dataset(source.dataset, **options)
        first = next(iter(ds), None)  # many problems (missing files, bad formats) only show when reading
    if first is None:
        raise DataError(f"{key}: {what} has no records; check the split and data_files")
    if not isinstance(first, dict) or source.text_field not in first:
        fields = ", ".join(first) if isinstance(first, dict) else "none"
        raise DataError(f"{key}: {what} has no field '{source.text_field}' in its first record (its fields: "
                        f"{fields}); set text_field to one of them")
    return ds


def _plain(value: Any) -> bool:
    """True for what `torch.load(weights_only=True)` reads back as-is."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


class StreamBatches:
    """A deterministic, exactly resumable shuffled stream of text batches from a streaming dataset."""

    def __init__(self, source: StreamSource | Sequence[StreamSource], batch_size: int, seed: int = 0,
                 key: str = "data.stream"):
        sources = _sources(source)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if any(one.shuffle_buffer < 1 for one in sources):
            raise ValueError(f"{key}.shuffle_buffer must be at least 1")
        self.sources, self.batch_size, self.seed, self.key = sources, batch_size, seed, key
        self.what = _describe(sources)
        self.text_field = text_field_of(sources)
        self.shuffle_buffer = max(one.shuffle_buffer for one in sources)
        self.fingerprint = stream_fingerprint(sources, seed)
        self._base = open_stream(sources, key, seed)
        import datasets  # open_stream succeeded, so it imports

        self._version = datasets.__version__
        self._total = self._known_total()
        self.skipped = 0  # records without usable text, over the whole run
        self.cutter: PassageCutter | None = None  # set by `cut_passages`
        self._start_epoch(0)

    def _known_total(self) -> int | None:
        if len(self.sources) > 1:  # a mix ends when its longest source has ended once: no size to show
            return None
        source = self.sources[0]
        # The hub's split sizes describe the whole split, not a data_files subset of it.
        splits = None if source.data_files else getattr(self._base.info, "splits", None)
        info = splits.get(source.split) if splits else None
        return getattr(info, "num_examples", None) or None

    def _start_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0
        self._rng = random.Random(f"{self.seed}:{epoch}")  # str seeds hash the same in every process
        self._buffer: list[str] = []
        self._exhausted = False  # the stream has ended this epoch; the buffer is draining
        self._stream = self._base  # never has a resume state loaded, so every epoch starts at record 0
        self._iter = None
        self._exact = True  # False after a .skip() resume: its stream state has another shape
        self._resume_state: dict | None = None  # loaded, and still current until the next record is read

    def _pull(self) -> str | None:
        """The next usable text from the stream, or None at its end; counts every record consumed."""
        while True:
            if self._iter is None:
                self._iter = iter(self._stream)
            try:
                record = next(self._iter)
            except StopIteration:
                self._exhausted, self._iter = True, None
                return None
            except Exception as e:
                raise DataError(f"{self.key}: reading {self.what} failed after record {self.position} "
                                f"of epoch {self.epoch}: {e}; check the connection and data, then resume") from e
            self.position += 1
            self._resume_state = None
            text = record.get(self.text_field) if isinstance(record, dict) else None
            if isinstance(text, str) and text.strip():
                if self.cutter is not None:
                    epoch, position = self.epoch, self.position
                    text = self.cutter(text, lambda: f"{self.key}: {self.what}, record {position} of "
                                                     f"epoch {epoch}")
                return text
            self.skipped += 1

    def _next_text(self) -> str:
        # A pass that starts at record 0 with an empty buffer and yields nothing proves there is no text.
        full_pass = self.position == 0 and not self._buffer and not self._exhausted
        while True:
            while not self._exhausted and len(self._buffer) < self.shuffle_buffer:
                text = self._pull()
                if text is not None:
                    self._buffer.append(text)
            if self._buffer:
                slot = self._rng.randrange(len(self._buffer))
                text = self._buffer[slot]
                refill = None if self._exhausted else self._pull()
                if refill is not None:
                    self._buffer[slot] = refill
                else:  # draining: move the last text into the slot, so the buffer stays a dense list
                    self._buffer[slot] = self._buffer[-1]
                    self._buffer.pop()
                    if not self._buffer:  # the epoch's last text: count the epoch done now, as Batches does
                        self._start_epoch(self.epoch + 1)
                return text
            if full_pass:
                raise DataError(f"{self.key}: {self.what} has no usable text: none of its {self.position} "
                                f"records has a non-empty string in '{self.text_field}'; check text_field")
            self._start_epoch(self.epoch + 1)
            full_pass = True

    def next_texts(self) -> list[str]:
        return [self._next_text() for _ in range(self.batch_size)]

    def local_share(self, micro_size: int, local: range) -> list[list[str]]:
        """This rank's micro-batches of the next global batch. A stream has no random access, so every
        rank reads the whole batch and keeps its share."""
        texts = self.next_texts()
        return [texts[i * micro_size:(i + 1) * micro_size] for i in local]

    def cut_passages(self, max_length: int, warn) -> None:
        """From now on every text read is cut for `max_length` tokens (data.passage_limit)."""
        self.cutter = PassageCutter(max_length, warn)

    @property
    def epoch_progress(self) -> float:
        """epoch + the fraction read, when the split's size is known; just the epoch when it is not."""
        return self.epoch + (min(self.position / self._total, 1.0) if self._total else 0.0)

    def summary(self) -> dict:
        if len(self.sources) == 1:
            source = self.sources[0]
            return {"dataset": source.dataset, "name": source.name, "split": source.split, "streaming": True}
        return {"datasets": [{"dataset": s.dataset, "name": s.name, "split": s.split, "weight": s.weight}
                             for s in self.sources], "streaming": True}

    def _stream_state(self) -> dict | None:
        if self._exhausted or self.position == 0:
            return None  # nothing to reposition: the stream is finished or not started
        if self._resume_state is not None:
            return self._resume_state
        state = self._stream.state_dict() if self._exact and hasattr(self._stream, "state_dict") else None
        return state if _plain(state) else None

    def state_dict(self) -> dict:
        version, internal, gauss = self._rng.getstate()
        return {"epoch": self.epoch, "position": self.position, "buffer": list(self._buffer),
                "exhausted": self._exhausted, "skipped": self.skipped,
                "rng": [version, list(internal), gauss], "seed": self.seed, "batch_size": self.batch_size,
                "fingerprint": self.fingerprint, "stream_state": self._stream_state(),
                "datasets_version": self._version}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` left off, under its seed; the batch size stays the caller's (as in Batches)."""
        seed_then = state.get("seed")  # a mix's fingerprint includes the seed its draws were made with
        if state.get("fingerprint") != (stream_fingerprint(self.sources, seed_then) if isinstance(seed_then, int)
                                        else self.fingerprint):
            raise DataError(f"{self.key}: the stream source changed since the checkpoint (dataset, config, split, "
                            "field, files or shuffle_buffer); restore the original data or start a new run")
        buffer = state.get("buffer")
        try:
            epoch, position, skipped = int(state["epoch"]), int(state["position"]), int(state["skipped"])
            seed, exhausted = int(state["seed"]), bool(state["exhausted"])
            version, internal, gauss = state["rng"]
            rng = random.Random()
            rng.setstate((int(version), tuple(int(x) for x in internal), gauss))
            valid = (epoch >= 0 and position >= 0 and isinstance(buffer, list)
                     and all(isinstance(t, str) for t in buffer) and len(buffer) <= self.shuffle_buffer)
        except (KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise DataError(f"{self.key}: the checkpoint's data position is invalid or incomplete; start a new run")
        if seed != self.seed and len(self.sources) > 1:  # the mix draws as the checkpointed run did
            self._base = open_stream(self.sources, self.key, seed)
            self.fingerprint = stream_fingerprint(self.sources, seed)
        self.seed = seed
        self._start_epoch(epoch)
        self.position, self.skipped, self._rng = position, skipped, rng
        self._buffer, self._exhausted = list(buffer), exhausted
        if self._exhausted or position == 0:
            return
        stream_state = state.get("stream_state")
        if stream_state and state.get("datasets_version") == self._version and hasattr(self._base, "load_state_dict"):
            # A fresh copy takes the resume state: `datasets` reapplies it on every new iteration,
            # so the base stream must stay clean for the following epochs.
            self._stream = open_stream(self.sources, self.key, self.seed)
            self._stream.load_state_dict(stream_state)
            self._resume_state = stream_state
        else:  # exact too, but re-reads `position` records
            self._stream, self._exact = self._base.skip(position), False
