"""The training data of one run as its steps consume it: shuffled resumable batches, the optional
contrastive pairs and translation pairs, and this rank's share of every step as tokenized micro-batches.

Texts come from local files (indexed, `data.train`) or a streamed Hugging Face dataset
(`[data.stream]`); both serve `local_share` the same way, so nothing downstream asks which. Every
passage is cut to what `data.max_length` tokens can use before it is tokenized. The data's
fingerprints (checked on resume) and its position (saved in checkpoints) live here too.

Example:
    bgeprune train recipes/smoke.toml      # data.train = ["builtin:probe"]: the packaged probe text
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from ..config import DataSection, TrainSection
from ..errors import DataError
from ..models.st_files import Prompts
from .data import DataIndex, open_data, with_packaged
from .distill_model import MicroBatch, TranslationBatch
from .translation_sets import materialize_all


class TextSource(Protocol):
    """What training needs of its text stream; `Batches` (indexed files) and `StreamBatches` (a streamed
    dataset) are both one, so the trainer never asks which it has."""

    fingerprint: str

    def local_share(self, micro_size: int, local: range) -> list: ...

    def cut_passages(self, max_length: int, warn: Callable[[str], None]) -> None: ...

    def summary(self) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class Batches:
    """A deterministic, resumable shuffled stream of batches over a `DataIndex`.

    Epoch e is `randperm(len(index))` seeded with `seed * 1_000_003 + e`; only the current epoch's
    permutation is held. A batch that reaches the end of an epoch continues into the next one, so
    every batch is full even when the data is smaller than a batch.
    """

    def __init__(self, index: DataIndex, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if len(index) == 0:
            raise DataError(f"{index.key}: no items to train on; add data to {index.key}")
        self.index, self.batch_size, self.seed = index, batch_size, seed
        self.epoch = self.position = 0
        self._perm: tuple[int, torch.Tensor] | None = None

    def _permutation(self) -> torch.Tensor:
        if self._perm is None or self._perm[0] != self.epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._perm = (self.epoch, torch.randperm(len(self.index), generator=generator))
        return self._perm[1]

    def take(self) -> list[tuple[int, int, int]]:
        """The next batch as (epoch, position, item) triples, without reading it; advances the stream.

        Every rank of a distributed run takes the same batch and reads only its share (`texts_of`).
        """
        out: list[tuple[int, int, int]] = []
        while len(out) < self.batch_size:
            perm = self._permutation()
            stop = min(len(perm), self.position + self.batch_size - len(out))
            items = perm[self.position:stop].tolist()
            out += [(self.epoch, self.position + k, item) for k, item in enumerate(items)]
            self.epoch, self.position = (self.epoch + 1, 0) if stop == len(perm) else (self.epoch, stop)
        return out

    def next_texts(self) -> list[str]:
        return self.texts_of(self.take())

    def cut_passages(self, max_length: int, warn: Callable[[str], None]) -> None:
        self.index.cut_passages(max_length, warn)

    def local_share(self, micro_size: int, local: range) -> list:
        """This rank's micro-batches of the next global batch: texts, or (queries, positives, negatives).

        Every rank takes the same batch and reads only its own share from disk.
        """
        entries = self.take()
        read = {"text": self.texts_of, "pairs": self.pairs_of, "translations": self.translations_of}[self.index.kind]
        return [read(entries[i * micro_size:(i + 1) * micro_size]) for i in local]

    def texts_of(self, entries: list[tuple[int, int, int]]) -> list[str]:
        return [self.index.text(item) for _, _, item in entries]

    def next_pairs(self) -> tuple[list[str], list[str], list[str]]:
        return self.pairs_of(self.take())

    def pairs_of(self, entries: list[tuple[int, int, int]]) -> tuple[list[str], list[str], list[str]]:
        """(queries, positives, negatives): one positive per record, and one negative per record that has any.

        `negatives` is not aligned with `queries` (records without `neg` add none): use it as extra
        in-batch negatives. The choices depend only on (seed, epoch, position), so a resumed stream
        picks the same passages.
        """
        queries, positives, negatives = [], [], []
        for epoch, position, item in entries:
            record = self.index.pair(item)
            rng = random.Random(f"{self.seed}:{epoch}:{position}")  # str seeds hash the same in every process
            queries.append(record["query"])
            positives.append(rng.choice(record["pos"]))
            if record["neg"]:
                negatives.append(rng.choice(record["neg"]))
        return queries, positives, negatives

    def translations_of(self, entries: list[tuple[int, int, int]]) -> tuple[list[str], list[str]]:
        """(sources, translations), aligned."""
        pairs = [self.index.translation(item) for _, _, item in entries]
        return [source for source, _ in pairs], [translation for _, translation in pairs]

    @property
    def fingerprint(self) -> str:
        return self.index.fingerprint

    def summary(self) -> dict:
        return self.index.summary()

    @property
    def epoch_progress(self) -> float:
        return self.epoch + self.position / len(self.index)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "batch_size": self.batch_size, "fingerprint": self.index.fingerprint}

    def load_state_dict(self, state: dict) -> None:
        """Continue where `state` left off, under its seed (which defines the shuffle the position is in).

        The batch size stays the caller's: a resume forced through a changed recipe uses the new one.
        """
        key = self.index.key
        if state.get("fingerprint") != self.index.fingerprint:
            raise DataError(f"{key}: data changed since the checkpoint (files added, removed, moved or edited); "
                            "restore the original data or start a new run")
        if not (0 <= state["position"] < len(self.index) and state["epoch"] >= 0 and state["batch_size"] >= 1):
            raise DataError(f"{key}: checkpoint data position {state['epoch']}:{state['position']} is invalid; "
                            "start a new run")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.seed = int(state["seed"])
        self._perm = None


def _open_texts(data: DataSection, train: TrainSection):
    """Local files (indexed) or a streamed HF dataset, as batches of `train.batch_size` texts."""
    if data.stream:
        from .data_stream import StreamBatches

        return StreamBatches(data.stream, train.batch_size, train.seed)
    sources = with_packaged(data.train)  # builtin:probe: enough for the smoke recipe, offline
    if not sources:
        raise DataError("data.train is empty: name text or JSONL files, directories or globs to distil on "
                        "(e.g. data.train = [\"corpus.txt\"]), or a [data.stream] dataset.")
    return Batches(open_data(sources, "text", "data.train"), train.batch_size, train.seed)


def _open_pairs(data: DataSection, contrastive: float) -> DataIndex | None:
    if contrastive <= 0:
        return None
    if not data.pairs:
        raise DataError("distill.contrastive > 0 needs data.pairs: FlagEmbedding-style JSONL files with "
                        "{\"query\", \"pos\", \"neg\"}; or set distill.contrastive = 0.")
    return open_data(data.pairs, "pairs", "data.pairs")


def _open_translations(data: DataSection) -> DataIndex | None:
    """data.translations and the JSONL files of data.translation_sets (written once: translation_sets.py)."""
    files = list(data.translations) + [str(path) for path in materialize_all(data)]
    if not files:
        return None
    return open_data(files, "translations", "data.translations", tuple(data.translation_fields))


def tokenize(tokenizer, texts: list[str], max_length: int, device) -> dict:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class TrainData:
    texts: TextSource  # indexed files (Batches) or a streamed dataset (StreamBatches)
    pairs: Batches | None
    pairs_index: DataIndex | None
    translations: Batches | None  # data.translations, for distill.translation
    max_length: int
    micro_size: int  # texts per forward pass
    local: range  # which of a step's micro-batches this rank computes

    @classmethod
    def open(cls, data: DataSection, train: TrainSection, contrastive: float, local_block: Callable[[int], range],
             warn: Callable[[str], None], translation: float = 0.0) -> "TrainData":
        """Open (and check) every data source; problems fail here, before any weights load."""
        texts, pairs_index = _open_texts(data, train), _open_pairs(data, contrastive)
        translations_index = _open_translations(data) if translation > 0 else None
        for source in (texts, pairs_index, translations_index):  # a 10 MB line would otherwise be tokenized whole
            if source is not None:
                source.cut_passages(data.max_length, warn)
        micro = train.micro_batch_size or train.batch_size
        pairs = Batches(pairs_index, train.batch_size, train.seed + 1) if pairs_index is not None else None
        translations = (Batches(translations_index, train.batch_size, train.seed + 2)
                        if translations_index is not None else None)
        return cls(texts, pairs, pairs_index, translations, data.max_length, micro,
                   local_block(train.batch_size // micro))

    @property
    def fingerprints(self) -> dict:
        prints = {"train": self.texts.fingerprint, "pairs": self.pairs_index.fingerprint if self.pairs_index else None}
        if self.translations is not None:  # absent, not null, without them: older checkpoints still resume
            prints["translations"] = self.translations.fingerprint
        return prints

    def summary(self) -> dict:
        summary = {"train": self.texts.summary(), "pairs": self.pairs_index.summary() if self.pairs_index else None}
        if self.translations is not None:
            summary["translations"] = self.translations.summary()
        return summary

    def next_micro_batches(self, tokenizer, device, prompts: Prompts = Prompts()) -> list[MicroBatch]:
        """This rank's share of the next step, tokenized (texts, and pairs for the contrastive term).

        Texts are passages and get the base's passage prompt; pairs get the query prompt on queries,
        as the base's users would encode them; both sides of a translation pair get the query prompt
        (a symmetric task: bench's bitext encodes them so). The prompted text is what the teacher cache keys.
        """
        texts = [prompts.passages(t) for t in self.texts.local_share(self.micro_size, self.local)]
        pairs = [None] * len(texts)
        if self.pairs is not None:
            pairs = [(prompts.queries(q), prompts.passages(p), prompts.passages(n))
                     for q, p, n in self.pairs.local_share(self.micro_size, self.local)]
        translations = [None] * len(texts)
        if self.translations is not None:
            translations = [(prompts.queries(sources), prompts.queries(targets))
                            for sources, targets in self.translations.local_share(self.micro_size, self.local)]

        def tokenized(texts: list[str]) -> dict:
            return tokenize(tokenizer, texts, self.max_length, device)

        return [MicroBatch(tokenized(t), t,
                           tuple(tokenized(x) if x else None for x in p) if p is not None else None,
                           TranslationBatch(tokenized(tr[0]), tokenized(tr[1]), tr[0]) if tr is not None else None)
                for t, p, tr in zip(texts, pairs, translations)]

    def state_dict(self) -> dict:
        """The data position, as checkpoints hold it (`data`, and `pairs` when there are pairs)."""
        state = {"data": self.texts.state_dict()}
        if self.pairs is not None:
            state["pairs"] = self.pairs.state_dict()
        if self.translations is not None:
            state["translations"] = self.translations.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.texts.load_state_dict(state["data"])
        if self.pairs is not None:
            self.pairs.load_state_dict(state["pairs"])
        if self.translations is not None:
            self.translations.load_state_dict(state["translations"])
