"""The model card (`README.md`) of an export: front matter the Hub reads, the numbers a user compares,
and usage code that runs as written.

Front matter: `base_model` only when the base is a Hub id (a `builtin:` name or a local path means
nothing on the Hub), `pipeline_tag`, `library_name`, tags, and `license` / `language` copied from
the base's own card. Body: architecture and parameter counts of base and export (total and encoder:
for bge-m3 the embeddings are 45% of all parameters, so an encoder-only figure alone misleads),
output dimension, max sequence length, how the model was made, and the exactness figure `prune`
measured. The snippets load the directory as `export-hf` was given it (a test runs them).

Example:
    bgeprune export-hf runs/smoke out/smoke && cat out/smoke/README.md
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..filenames import MODEL_CARD
from . import card_serving
from .card_sections import section_block
from .st_files import Pooling

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Builtins that are copies of Hub models: their Hub id is the honest base_model.
BUILTIN_HUB_IDS = {"builtin:all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass
class CardFacts:
    """What the card states; gathered by export-hf from the artifacts it reads."""

    title: str
    path: str  # the export directory as the user named it: what the snippets load
    base_model: str  # base.model as the recipe resolved it
    base_dir: Path
    base_config: dict
    target: dict
    base_sizes: dict  # layers, heads, ffn, hidden of the base
    sizes: dict  # the exported architecture (after padding, for --format padded)
    kept_layers: list[int]  # indices of the base's layers that survive
    encoder_params: int  # of the encoder layers kept (what costs compute per token)
    base_encoder_params: int
    fmt: str
    params: int  # all parameters of the export (embeddings, encoder, pooler, bge-m3 heads)
    base_params: int  # the same count for the base
    pooling: Pooling
    max_seq_length: int
    train_info: dict  # the train-run's info: method, steps, data summary
    parity: float | None  # max |pruned - masked| that prune measured
    has_heads: bool
    vocab: dict | None = None  # a trimmed vocabulary: kept, base, corpus (pruning/vocab.py, vocab_summary)
    base_shown: str | None = None  # the base as the card names it (a local directory: its name); else base_model
    matryoshka_dims: list[int] | None = None  # the nested output widths it was trained with (distill.matryoshka_dims)
    onnx_files: list[str] = field(default_factory=list)  # names in the export's onnx/, when it has graphs


def hub_base_model(base_model: str, base_dir: Path) -> str | None:
    """The Hub id of the base, or None when it has none (a builtin made locally, a local directory)."""
    if base_model in BUILTIN_HUB_IDS:
        return BUILTIN_HUB_IDS[base_model]
    if base_model.startswith("builtin:") or Path(base_model).expanduser().exists():
        return None
    return base_model if HUB_ID.match(base_model) else None


def base_card_fields(base_dir: Path) -> dict:
    """`license` and `language` from the base's README.md front matter (absent or unreadable: none)."""
    import yaml

    path = base_dir / MODEL_CARD
    try:
        text = path.read_text(encoding="utf-8")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
        data = yaml.safe_load(match.group(1)) if match else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("license", "language") if data.get(k)}


def count_base_params(base_config: dict) -> int:
    """All parameters of the base encoder model, counted on the meta device (no memory, no weights)."""
    from transformers import AutoConfig, AutoModel

    with torch.device("meta"):
        model = AutoModel.from_config(AutoConfig.for_model(**base_config))
    return sum(t.numel() for t in model.state_dict().values())


def _front_matter(facts: CardFacts) -> str:
    import yaml

    data = {}
    hub = hub_base_model(facts.base_model, facts.base_dir)
    if hub:
        data["base_model"] = hub
    data.update(pipeline_tag="sentence-similarity", library_name="sentence-transformers",
                tags=["bgeprune", "pruned", "sentence-transformers", "feature-extraction", "sentence-similarity"])
    data.update(base_card_fields(facts.base_dir))
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def _how_made(facts: CardFacts) -> str:
    info = facts.train_info
    method = info.get("method", "train")
    if method == "vocab-only":
        how = "The encoder is the base's, unchanged: only the vocabulary was trimmed, no training."
    elif method == "magnitude":
        how = "Masks from weight magnitude and block influence (`bgeprune magnitude`), no training."
    else:
        how = (f"Hard-concrete (L0) masks learned while distilling from the unpruned base (`bgeprune train`): "
               f"{info.get('prune_steps', 0)} pruning steps, then {info.get('recovery_steps', 0)} recovery steps "
               f"with the masks fixed.")
    data = (info.get("data_summary") or {}).get("train")
    if data:
        how += f" Training data: {_data_sentence(data)}."
    return how


def _data_sentence(data: dict) -> str:
    """The training data of a run's data summary: indexed files, one streamed dataset, or a mix of them."""
    if not data.get("streaming"):
        return f"{data.get('items', 0):,} passages from {data.get('files', 0)} file(s)"
    sources = data.get("datasets") or [data]
    named = ", ".join(f"`{s.get('dataset')}`" + (f" ({s['name']})" if s.get("name") else "") for s in sources[:8])
    more = f" and {len(sources) - 8} more" if len(sources) > 8 else ""
    return f"streamed from {named}{more}" + (" mixed by weight" if len(sources) > 1 else "")


_SNIPPETS = '''```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path}")
embeddings = model.encode(["a pruned embedding model", "un modèle élagué"])
print(embeddings.shape)  # (2, {dim})
```

or with transformers alone ({pooling} pooling{normalized}):

```python
import torch
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{path}")
model = AutoModel.from_pretrained("{path}")
batch = tokenizer(["a pruned embedding model"], padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    states = model(**batch).last_hidden_state
{pool_code}
```
'''

_POOL_CODE = {
    "cls": "embedding = states[:, 0]",
    "mean": "mask = batch[\"attention_mask\"].unsqueeze(-1).float()\nembedding = (states * mask).sum(1) / mask.sum(1)",
}

_M3_SNIPPETS = '''
### bge-m3's three modes

`colbert_linear.pt` and `sparse_linear.pt` are this model's sparse and ColBERT heads (sliced to its
hidden size and distilled with it), so dense, sparse and multi-vector retrieval all work:

```python
from FlagEmbedding import BGEM3FlagModel   # FlagEmbedding 1.4 runs on transformers 4.x

model = BGEM3FlagModel("{path}", use_fp16=False)
out = model.encode(["what is pruning?"], return_dense=True, return_sparse=True, return_colbert_vecs=True)
```

```python
from bgeprune_cli.m3_encoder import M3Encoder   # the same three outputs with bgeprune (transformers 5)

encoder = M3Encoder.from_pretrained("{path}")
scores = encoder.compute_score(encoder.encode(["what is pruning?"]), encoder.encode(["Pruning removes weights."]))
print({{mode: float(score[0, 0]) for mode, score in scores.items()}})
```

**Re-saving drops the heads.** `SentenceTransformer(...).save_pretrained(new_dir)` writes only the
dense pipeline: `colbert_linear.pt` and `sparse_linear.pt` are not copied, and FlagEmbedding then
makes *random* heads without an error. Copy them along:

```python
import shutil
for name in ("colbert_linear.pt", "sparse_linear.pt"): shutil.copy(f"{path}/{{name}}", "new_dir")
```
'''


_WIDTH_SNIPPETS = '''
## Output widths

Trained with nested output widths {widths} (Matryoshka): the first k dims of the dense vector are an
embedding on their own, so an index can store {smallest} floats per text instead of {full}. The weights are
the same for every width; the width is chosen when the model is loaded, and vectors of different widths
do not share an index. Normalise after cutting: a cut unit vector is shorter than 1.

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("{path}", truncate_dim={smallest})
embeddings = model.encode(["a pruned embedding model", "un modèle élagué"], normalize_embeddings=True)
print(embeddings.shape)  # (2, {smallest})
```

With transformers alone, cut the pooled vector above before normalising it:
`embedding = torch.nn.functional.normalize(embedding[:, :{smallest}], dim=-1)`.{flag}

What each width keeps, measured against `{reference}` cut to the same width:
`bgeprune bench {path} --compare {reference} --beir DIR --bitext DIR --dims {cut}`.
'''

_FLAG_WIDTH = """ With FlagEmbedding, cut
`dense_vecs` the same way: `dense = out["dense_vecs"][:, :{smallest}]`, then divide each row by its norm
(sparse and ColBERT outputs are not affected)."""


def _widths(facts: CardFacts, reference: str) -> str:
    widths, full = facts.matryoshka_dims, facts.sizes["hidden"]
    smallest = widths[-1]
    return _WIDTH_SNIPPETS.format(
        widths=", ".join(map(str, widths)), smallest=smallest, full=full, path=facts.path, reference=reference,
        cut=",".join(str(k) for k in widths if k < full), flag=_FLAG_WIDTH.format(smallest=smallest)
        if facts.has_heads else "")


def model_card(facts: CardFacts) -> str:
    b, s = facts.base_sizes, facts.sizes
    enc, base_enc = facts.encoder_params, facts.base_encoder_params
    heads = " (with the sparse and ColBERT heads)" if facts.has_heads else ""
    padded = (" (zero-padded to a stock shape: exact, but padded units still cost compute)"
              if facts.fmt == "padded" else "")
    shown = facts.base_shown or facts.base_model
    reference = hub_base_model(facts.base_model, facts.base_dir) or shown
    architecture = (facts.base_config.get("architectures") or ["model"])[0]
    lines = [
        _front_matter(facts),
        f"# {facts.title}\n",
        f"Structurally pruned from `{shown}` with [bgeprune](https://pypi.org/project/bgeprune/): "
        f"whole layers, attention heads, FFN units and hidden dims are removed, so this is a smaller stock "
        f"`{architecture}` that loads with no custom code.\n",
        "| | base | this model |",
        "|---|---|---|",
        f"| layers | {b['layers']} | {s['layers']} |",
        f"| attention heads | {b['heads']} | {s['heads']} |",
        f"| FFN size | {b['ffn']} | {s['ffn']} |",
        f"| hidden size = output dimension | {b['hidden']} | {s['hidden']} |",
        f"| parameters, total{heads} | {facts.base_params:,} | {facts.params:,} "
        f"({facts.params / facts.base_params:.1%}) |",
        f"| parameters, encoder layers | {base_enc:,} | {enc:,} ({enc / base_enc:.1%}) |",
        f"| max sequence length | {facts.max_seq_length} | {facts.max_seq_length} |",
        *([f"| vocabulary (tokens) | {facts.vocab['base']:,} | {facts.vocab['kept']:,} "
           f"({facts.vocab['kept'] / facts.vocab['base']:.1%}) |"] if facts.vocab else []),
        "",
        "The encoder layers are what costs compute per token. " + (_vocab_note(facts) if facts.vocab else
        f"The word-embedding table, {_embedding_share(facts):.0%} of the base's parameters, is kept whole, so the "
        f"file shrinks less than the compute does.\n"),
        "## How it was made\n",
        f"Target: {_target(facts)}. {_how_made(facts)} Kept layers of the base: {facts.kept_layers}. "
        f"Export format: `{facts.fmt}`{padded}. `lineage.json` records the bgeprune artifacts it came from.\n",
    ]
    if facts.parity is not None:
        lines.append(f"Exactness: the pruned model reproduces the masked model to a max |difference| of "
                     f"{facts.parity:.1e} on bgeprune's probe texts (`bgeprune prune` checks this before writing).\n")
    lines += [
        f"Measure it yourself: `bgeprune verify {facts.path} --compare {reference}` (strict loading, parity, "
        f"agreement with the base) and `bgeprune bench {facts.path} --compare {reference}` (speed, memory, size "
        f"and quality side by side).\n",
        "## Usage\n",
        f"The snippets load this directory as `{facts.path}`; once it is on the Hub, use its repo id instead.\n",
        _SNIPPETS.format(path=facts.path, dim=s["hidden"], pooling=facts.pooling.mode.upper() if
                         facts.pooling.mode == "cls" else facts.pooling.mode,
                         normalized=", normalized" if facts.pooling.normalize else "", pool_code=_pool_code(facts)),
    ]
    if facts.has_heads:
        lines.append(_M3_SNIPPETS.format(path=facts.path))
    if facts.matryoshka_dims:
        lines.append(_widths(facts, reference))
    lines.append(section_block(card_serving.NAME, card_serving.serving_section(
        facts.path, has_heads=facts.has_heads, pooling=facts.pooling, dim=s["hidden"], onnx_files=facts.onnx_files)))
    return "\n".join(lines) + "\n"


def _target(facts: CardFacts) -> str:
    if facts.train_info.get("method") == "vocab-only":
        return "the vocabulary only"
    return f"`{facts.target}`"


def _vocab_note(facts: CardFacts) -> str:
    corpus = facts.vocab.get("corpus") or {}
    return (f"The word-embedding table ({_embedding_share(facts):.0%} of the base's parameters) keeps only the "
            f"{facts.vocab['kept']:,} tokens that a corpus of {corpus.get('texts', '?'):,} texts produced (and the "
            f"special tokens): text like that corpus tokenizes exactly as with the base, but **text in other languages "
            f"or scripts tokenizes into smaller pieces or `<unk>`**, and the model will not represent it as the base "
            f"did. `vocab_map.json` maps this model's token ids to the base's (for sparse lexical weights: "
            f"`M3Encoder.to_base_ids`).\n")


def _pool_code(facts: CardFacts) -> str:
    code = _POOL_CODE[facts.pooling.mode]
    return code + ("\nembedding = torch.nn.functional.normalize(embedding, dim=-1)" if facts.pooling.normalize else "")


def _embedding_share(facts: CardFacts) -> float:
    cfg = facts.base_config
    return cfg.get("vocab_size", 0) * cfg["hidden_size"] / facts.base_params
