"""`vocab_map.json`: a trimmed model's token ids mapped back to its base's (new id -> old id).

bge-m3's sparse output is a weight per token *id*, so a sparse index built with the base holds the
base's ids. Mapping a trimmed model's lexical weights through this file makes its queries match that
index (`M3Encoder.to_base_ids`). The file is written by `export-hf` from the kept-id list that
`finalize-masks` recorded (docs/design.md, Masks: the vocab axis).

Example:
    from bgeprune_cli.models.tokenizers.vocab_map import VocabMap
    vmap = VocabMap.read("out/m3-trimmed")          # None for an untrimmed model
    vmap.to_base_ids({5: 0.3})                      # {base id of new id 5: 0.3}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ...errors import ArtifactError
from ...filenames import VOCAB_MAP

FORMAT = "bgeprune-vocab-map"


@dataclass(frozen=True)
class VocabMap:
    new_to_old: list[int]  # ascending: the trimmed model's id i is the base's id new_to_old[i]
    base_size: int  # the base's vocabulary (embedding rows)

    @classmethod
    def read(cls, directory: str | Path) -> "VocabMap | None":
        path = Path(directory) / VOCAB_MAP
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            vmap = cls(list(data["new_to_old"]), int(data["base_vocab_size"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path} is corrupt ({exc.__class__.__name__}: {exc}); export again with "
                                f"'bgeprune export-hf'.") from None
        ids = vmap.new_to_old
        if not all(isinstance(i, int) for i in ids) or ids != sorted(set(ids)) or \
                (ids and not 0 <= ids[0] <= ids[-1] < vmap.base_size):
            raise ArtifactError(f"{path}: new_to_old must be ascending distinct ids below base_vocab_size; "
                                f"export again with 'bgeprune export-hf'.")
        return vmap

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": 1, "base_vocab_size": self.base_size, "vocab_size": len(self.new_to_old),
                "new_to_old": self.new_to_old}

    def write(self, directory: Path) -> None:
        (Path(directory) / VOCAB_MAP).write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")

    @cached_property
    def old_to_new(self) -> dict[int, int]:
        return {old: new for new, old in enumerate(self.new_to_old)}

    def to_base_ids(self, lexical):
        """Lexical weights keyed by the base's ids: one `{id: weight}` dict, or a list of them."""
        if isinstance(lexical, dict):
            return {self.new_to_old[int(i)]: w for i, w in lexical.items()}
        return [self.to_base_ids(row) for row in lexical]

    def ids_to_base(self, ids: torch.Tensor) -> torch.Tensor:
        """The trimmed model's token ids (any shape) as the base's ids, in the same dtype."""
        return torch.tensor(self.new_to_old, dtype=torch.long)[ids.long()].to(ids.dtype)

    def to_new_ids(self, ids: torch.Tensor, unk: int) -> torch.Tensor:
        """Base ids as the trimmed model's ids; an id it dropped becomes the trimmed `unk`.

        Only for id-level parity checks: a trimmed *tokenizer* re-segments such text instead.
        """
        table = torch.full((self.base_size,), unk, dtype=torch.long)
        table[torch.tensor(self.new_to_old)] = torch.arange(len(self.new_to_old))
        return table[ids]
