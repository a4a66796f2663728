"""bge-m3's two extra heads and its three retrieval modes, exactly as FlagEmbedding defines them.

bge-m3 ships `colbert_linear.pt` and `sparse_linear.pt` beside the encoder. FlagEmbedding's
`BGEM3FlagModel` loads both with `torch.load(..., weights_only=True)` and, if *either* is missing,
silently makes random ones (logged at INFO). So bgeprune treats the pair as part of the model:
loaded safely and validated here, trained with the student, sliced by the hidden mask and written
back as plain state dicts.

    dense    normalize(h[:, 0])                               score: dot product
    sparse   relu(sparse_linear(h)) per token; special tokens  score: sum of w_q * w_p over shared
             dropped, max per token id                         token ids (lexical matching)
    colbert  normalize(colbert_linear(h[:, 1:]) * mask)        score: mean over query tokens of the
                                                               max dot product with passage tokens

With hidden pruning the heads read only the kept dims, and ColBERT's output (hidden-sized in
bge-m3) keeps the same dims, so the exported head is hidden' x hidden' as FlagEmbedding and vLLM
build it from config.hidden_size. The masked model zeroes those output dims; the pruned one drops
them; normalised vectors and every score are the same.

Example:
    python -c "from bgeprune_cli.models.m3 import load_heads; print(load_heads('out/smoke-m3'))"
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArtifactError
from ..filenames import COLBERT_HEAD, HEAD_FILES, M3_HEADS, SPARSE_HEAD

# The head files under the names callers use (defined once, in filenames.py).
COLBERT_FILE, SPARSE_FILE, HEAD_FILES, HEADS_FILE = COLBERT_HEAD, SPARSE_HEAD, HEAD_FILES, M3_HEADS
RANDOM_HEADS_WARNING = ("FlagEmbedding's BGEM3FlagModel would silently create random sparse and ColBERT heads "
                        "(it logs this only at INFO level), so sparse and ColBERT scores would be noise")


class M3Heads(nn.Module):
    """`colbert_linear` and `sparse_linear` under FlagEmbedding's names; computes in float32."""

    def __init__(self, hidden: int, colbert_dim: int, file_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.colbert_linear = nn.Linear(hidden, colbert_dim)
        self.sparse_linear = nn.Linear(hidden, 1)
        self.file_dtype = file_dtype  # what the base's .pt files hold; exports keep it

    @property
    def hidden(self) -> int:
        return self.sparse_linear.in_features

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], file_dtype: torch.dtype | None = None) -> "M3Heads":
        weight = tensors["colbert_linear.weight"]
        heads = cls(weight.shape[1], weight.shape[0], file_dtype or weight.dtype)
        heads.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
        return heads

    def tensors(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Flat `colbert_linear.weight`-style tensors (for safetensors), in `dtype` (default: file dtype)."""
        return {k: v.detach().to(dtype or self.file_dtype).cpu().contiguous() for k, v in self.state_dict().items()}

    def sparse_logits(self, states: torch.Tensor) -> torch.Tensor:
        """Per-token sparse weights before the ReLU [B, L] (what distillation trains)."""
        return self.sparse_linear(states.float()).squeeze(-1)

    def token_weights(self, states: torch.Tensor) -> torch.Tensor:
        """Per-token sparse weights [B, L]."""
        return torch.relu(self.sparse_logits(states))

    def colbert_vectors(self, states: torch.Tensor, attention_mask: torch.Tensor,
                        hidden_z: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised vectors of the tokens after CLS [B, L-1, D]; padding rows are zero.

        `hidden_z` (the hidden mask, during masked runs) also gates ColBERT's hidden-sized output,
        which is what slicing that output to the kept dims does in the pruned model.
        """
        vectors = self.colbert_linear(states[:, 1:].float())
        if hidden_z is not None and vectors.shape[-1] == hidden_z.shape[0]:
            vectors = vectors * hidden_z.to(vectors.dtype)
        vectors = vectors * attention_mask[:, 1:, None].to(vectors.dtype)
        return F.normalize(vectors, dim=-1)

    def sliced(self, hidden: list[int], base_hidden: int) -> "M3Heads":
        """The heads of a model that keeps only `hidden` dims (ColBERT output too when it is hidden-sized)."""
        keep = torch.tensor(hidden)
        colbert_w = self.colbert_linear.weight.detach().index_select(1, keep)
        colbert_b = self.colbert_linear.bias.detach()
        if colbert_w.shape[0] == base_hidden:
            colbert_w, colbert_b = colbert_w.index_select(0, keep), colbert_b.index_select(0, keep)
        return M3Heads.from_tensors({
            "colbert_linear.weight": colbert_w, "colbert_linear.bias": colbert_b,
            "sparse_linear.weight": self.sparse_linear.weight.detach().index_select(1, keep),
            "sparse_linear.bias": self.sparse_linear.bias.detach()}, self.file_dtype)


# ---------------------------------------------------------------- files


def has_heads(directory: str | Path) -> bool:
    """Whether a model directory has either head file (bge-m3 style)."""
    return any((Path(directory) / name).is_file() for name in HEAD_FILES)


def _read_state_dict(path: Path, out_features: int | None) -> dict[str, torch.Tensor]:
    """A `.pt` file that must be a plain {weight, bias} state dict; anything else is refused unexecuted."""
    try:
        # weights_only=True: a pickled module or any code-executing payload raises before it runs.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refused, truncated, not a torch file: all mean "not a state dict"
        raise ArtifactError(f"{path} is not a plain state dict of tensors, so it was refused without running "
                            f"anything in it ({_why_refused(exc)}). Re-save it from the model it belongs to with "
                            f"torch.save(linear.state_dict(), '{path.name}').") from None
    if not isinstance(state, dict) or set(state) != {"weight", "bias"} or \
            not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in state.values()):
        shown = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise ArtifactError(f"{path} must hold exactly the tensors 'weight' and 'bias' of an nn.Linear "
                            f"(FlagEmbedding loads it with load_state_dict); it holds {shown}.")
    weight, bias = state["weight"], state["bias"]
    if weight.dim() != 2 or bias.shape != (weight.shape[0],) or \
            (out_features is not None and weight.shape[0] != out_features):
        want = f"[{out_features}, hidden]" if out_features else "[out, hidden]"
        raise ArtifactError(f"{path}: weight {list(weight.shape)} and bias {list(bias.shape)} are not the shapes "
                            f"of this head (weight {want}, bias [out]).")
    return state


def _why_refused(exc: Exception) -> str:
    """What torch.load(weights_only=True) objected to, in our words: torch's own message suggests
    reloading with weights_only=False, which would run whatever the file contains, so it is never quoted."""
    text = str(exc)
    if match := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"it refers to {match.group(1)}, which a plain state dict never does"
    if "Unsupported operand" in text or "WeightsUnpickler" in text or "Weights only load failed" in text:
        return "it holds pickle instructions a plain state dict never has"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{exc.__class__.__name__}: {first[:200]}" if first and "weights_only" not in first else \
        f"{exc.__class__.__name__}: not a readable torch file"


def load_heads(directory: str | Path, hidden: int | None = None) -> M3Heads | None:
    """Both heads of a bge-m3-style directory; None if it has neither. One without the other is an error."""
    directory = Path(directory)
    present = [name for name in HEAD_FILES if (directory / name).is_file()]
    if not present:
        return None
    if len(present) == 1:
        missing = next(name for name in HEAD_FILES if name not in present)
        raise ArtifactError(f"{directory} has {present[0]} but no {missing}: {RANDOM_HEADS_WARNING}. "
                            f"Restore {missing} from the model it came from.")
    colbert = _read_state_dict(directory / COLBERT_FILE, None)
    sparse = _read_state_dict(directory / SPARSE_FILE, 1)
    widths = {"colbert_linear": colbert["weight"].shape[1], "sparse_linear": sparse["weight"].shape[1]}
    if len(set(widths.values())) != 1 or (hidden is not None and widths["sparse_linear"] != hidden):
        raise ArtifactError(f"{directory}: the heads read {widths} input dims but the encoder's hidden size is "
                            f"{hidden}; FlagEmbedding would fail to load them (were they left unpruned?).")
    tensors = {f"colbert_linear.{k}": v for k, v in colbert.items()}
    tensors.update({f"sparse_linear.{k}": v for k, v in sparse.items()})
    return M3Heads.from_tensors(tensors, colbert["weight"].dtype)


def save_heads(heads: M3Heads, directory: Path) -> None:
    """Both `.pt` files, as FlagEmbedding writes them: plain state dicts in the file dtype, on CPU."""
    tensors = heads.tensors()
    for name in ("colbert_linear", "sparse_linear"):
        state = {param: tensors[f"{name}.{param}"].clone() for param in ("weight", "bias")}
        with open(directory / f"{name}.pt", "wb") as handle:  # a full disk surfaces as the OSError
            torch.save(state, handle)


# ---------------------------------------------------------------- outputs and scores


def special_token_ids(tokenizer) -> set[int]:
    """The ids FlagEmbedding drops from lexical weights: CLS, EOS, PAD and UNK."""
    ids = (getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "eos", "pad", "unk"))
    return {int(i) for i in ids if i is not None}


def lexical_weights(token_weights: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    special: set[int]) -> list[dict[int, float]]:
    """Per text: token id -> its largest positive weight (special tokens and padding dropped)."""
    result = []
    for weights, ids, mask in zip(token_weights.tolist(), input_ids.tolist(), attention_mask.tolist()):
        row: dict[int, float] = {}
        for w, i, m in zip(weights, ids, mask):
            if m and i not in special and w > 0 and w > row.get(i, 0.0):
                row[i] = w
        result.append(row)
    return result


def colbert_per_text(vectors: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Per text: the vectors of its real tokens after CLS (as FlagEmbedding returns them)."""
    lengths = attention_mask.sum(-1).tolist()
    return [v[: n - 1] for v, n in zip(vectors, lengths)]


def dense_scores(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    return queries.float() @ passages.float().T


def sparse_scores(queries: list[dict[int, float]], passages: list[dict[int, float]]) -> torch.Tensor:
    """Lexical matching: sum over shared token ids of the product of their weights.

    Only token ids that occur in a query can score, so both sides become dense rows over those ids.
    """
    column = {t: j for j, t in enumerate(sorted({t for w in queries for t in w}))}

    def rows(weights: list[dict[int, float]]) -> torch.Tensor:
        matrix = torch.zeros(len(weights), len(column), dtype=torch.float64)
        for i, w in enumerate(weights):
            for t, v in w.items():
                if t in column:
                    matrix[i, column[t]] = v
        return matrix

    return (rows(queries) @ rows(passages).T).float()


def colbert_scores(queries: list[torch.Tensor], passages: list[torch.Tensor], chunk: int = 256) -> torch.Tensor:
    """Late interaction: for each query token its best passage token, averaged over query tokens."""
    out = torch.zeros(len(queries), len(passages))
    for start in range(0, len(passages), chunk):  # passages padded per chunk; padding never wins the max
        group = [p.float() for p in passages[start:start + chunk]]
        padded = torch.nn.utils.rnn.pad_sequence(group, batch_first=True)  # [P, T, D]
        pad = torch.arange(padded.shape[1])[None] >= torch.tensor([len(p) for p in group])[:, None]
        for i, q in enumerate(queries):
            sim = torch.einsum("qd,ptd->pqt", q.float(), padded).masked_fill(pad[:, None, :], float("-inf"))
            out[i, start:start + len(group)] = sim.max(-1).values.sum(-1) / q.shape[0]
    return out


def combined_scores(dense: torch.Tensor, sparse: torch.Tensor, colbert: torch.Tensor,
                    weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """FlagEmbedding's `colbert+sparse+dense`: the weighted mean of the three scores."""
    w_dense, w_sparse, w_colbert = weights
    return (dense * w_dense + sparse * w_sparse + colbert * w_colbert) / (w_dense + w_sparse + w_colbert)


HEAD_MODES = ("sparse", "colbert", "m3")  # the retrieval modes beside dense that need the head files


def mode_scores(modes: list[str], queries: "M3Output", docs: "M3Output") -> dict[str, torch.Tensor]:
    """[queries, docs] relevance scores per mode; `m3` combines the other three, each computed once. The
    two sides may come from different models when their widths match and their token ids are the same."""
    scores = {"dense": dense_scores(queries.dense, docs.dense)}
    if set(modes) & set(HEAD_MODES):
        scores["sparse"] = sparse_scores(queries.lexical, docs.lexical)
        scores["colbert"] = colbert_scores(queries.colbert, docs.colbert)
        scores["m3"] = combined_scores(scores["dense"], scores["sparse"], scores["colbert"])
    return {mode: scores[mode] for mode in modes}


# ---------------------------------------------------------------- one batch, three outputs


@dataclass
class M3Output:
    dense: torch.Tensor  # [n, d], normalised
    lexical: list[dict[int, float]]  # per text: token id -> weight
    colbert: list[torch.Tensor]  # per text: [tokens after CLS, D], normalised

    def __len__(self) -> int:
        return len(self.lexical)

    @classmethod
    def concat(cls, parts: list["M3Output"]) -> "M3Output":
        """One output from the outputs of consecutive batches."""
        return cls(torch.cat([p.dense for p in parts]), [w for p in parts for w in p.lexical],
                   [v for p in parts for v in p.colbert])


def encode_batch(model, heads: M3Heads, batch: dict, pooling, special: set[int],
                 hidden_z: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> M3Output:
    """All three outputs of one tokenised batch. `keep` restricts states to kept hidden dims (masked
    models: the heads must then be the sliced ones); `hidden_z` is for masks applied by hooks."""
    states = model(**batch).last_hidden_state.float()
    if keep is not None:
        states = states.index_select(-1, keep)
    dense = pooling.pool(states, batch["attention_mask"])
    weights = heads.token_weights(states)
    vectors = heads.colbert_vectors(states, batch["attention_mask"], hidden_z)
    return M3Output(dense, lexical_weights(weights, batch["input_ids"], batch["attention_mask"], special),
                    colbert_per_text(vectors, batch["attention_mask"]))
