"""The training data of one run as its steps consume it: the text stream, the optional contrastive pairs,
and this rank's share of every step as tokenized micro-batches.

Texts come from local files (indexed, `data.train`) or a streamed Hugging Face dataset
(`[data.stream]`); both serve `local_share` the same way, so nothing downstream asks which. Every
passage is cut to what `data.max_length` tokens can use before it is tokenized. The data's
fingerprints (checked on resume) and its position (saved in checkpoints) live here too.

Example:
    bgeprune train recipes/smoke.toml      # data.train = ["builtin:probe"]: the packaged probe text
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import DataSection, TrainSection
from ..errors import DataError
from ..models.probe import PROBE_TEXT
from .data import Batches, DataIndex, TextSource, open_data
from .distill_model import MicroBatch


def _open_texts(data: DataSection, train: TrainSection):
    """Local files (indexed) or a streamed HF dataset, as batches of `train.batch_size` texts."""
    if data.stream is not None:
        from .data_stream import StreamBatches

        return StreamBatches(data.stream, train.batch_size, train.seed)
    # "builtin:probe" is the packaged probe text: enough for the smoke recipe, offline.
    sources = [str(PROBE_TEXT) if s == "builtin:probe" else s for s in data.train]
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


def tokenize(tokenizer, texts: list[str], max_length: int, device) -> dict:
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class TrainData:
    texts: TextSource  # indexed files (Batches) or a streamed dataset (StreamBatches)
    pairs: Batches | None
    pairs_index: DataIndex | None
    max_length: int
    micro_size: int  # texts per forward pass
    local: range  # which of a step's micro-batches this rank computes

    @classmethod
    def open(cls, data: DataSection, train: TrainSection, contrastive: float, local_block: Callable[[int], range],
             warn: Callable[[str], None]) -> "TrainData":
        """Open (and check) every data source; problems fail here, before any weights load."""
        texts, pairs_index = _open_texts(data, train), _open_pairs(data, contrastive)
        for source in (texts, pairs_index):  # a 10 MB line would otherwise be tokenized whole every time
            if source is not None:
                source.cut_passages(data.max_length, warn)
        micro = train.micro_batch_size or train.batch_size
        pairs = Batches(pairs_index, train.batch_size, train.seed + 1) if pairs_index is not None else None
        return cls(texts, pairs, pairs_index, data.max_length, micro, local_block(train.batch_size // micro))

    @property
    def fingerprints(self) -> dict:
        return {"train": self.texts.fingerprint, "pairs": self.pairs_index.fingerprint if self.pairs_index else None}

    def summary(self) -> dict:
        return {"train": self.texts.summary(), "pairs": self.pairs_index.summary() if self.pairs_index else None}

    def next_micro_batches(self, tokenizer, device) -> list[MicroBatch]:
        """This rank's share of the next step, tokenized (texts, and pairs for the contrastive term)."""
        texts = self.texts.local_share(self.micro_size, self.local)
        pairs = self.pairs.local_share(self.micro_size, self.local) if self.pairs is not None else [None] * len(texts)
        return [MicroBatch(tokenize(tokenizer, t, self.max_length, device), t,
                           tuple(tokenize(tokenizer, x, self.max_length, device) if x else None for x in p)
                           if p is not None else None) for t, p in zip(texts, pairs)]

    def state_dict(self) -> dict:
        """The data position, as checkpoints hold it (`data`, and `pairs` when there are pairs)."""
        state = {"data": self.texts.state_dict()}
        if self.pairs is not None:
            state["pairs"] = self.pairs.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.texts.load_state_dict(state["data"])
        if self.pairs is not None:
            self.pairs.load_state_dict(state["pairs"])
