"""Parity: all-ones masks == base; masked == pruned == exported-and-reloaded (fp32, <= 1e-5).

Every axis alone and combined, BERT and XLM-R, eager and sdpa attention, batch of one and padded
batches (the probe holds both).
"""

from __future__ import annotations

import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel

from bgeprune_cli.config import BaseDims
from bgeprune_cli.errors import UsageError
from bgeprune_cli.models.families import adapter_for
from bgeprune_cli.models.loading import load_model, load_tokenizer, read_config, resolve_base
from bgeprune_cli.models.probe import max_abs_diff, model_outputs, per_text, probe_batches, probe_texts
from bgeprune_cli.models.st_files import read_pooling
from bgeprune_cli.pruning.hooks import MaskHooks, as_float_masks
from bgeprune_cli.pruning.masks import Layout
from bgeprune_cli.pruning.slicing import build_model, slice_state_dict, stock_config
from bgeprune_cli.stages import export_hf, prune
from conftest import keep_only, make_run

ATOL = 1e-5
BASES = {"xlmr": "builtin:tiny-xlm-roberta", "bert": "builtin:tiny-bert"}


def every_other(n: int, count: int, offset: int = 0) -> torch.Tensor:
    """`count` of `n` units, a reproducible scattered subset (seeded by `offset`)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(offset))
    return keep_only(n, *order[:count].tolist())


def cases(dims: BaseDims) -> dict[str, dict[str, torch.Tensor]]:
    L, H, F, d = dims.layers, dims.heads, dims.ffn, dims.hidden
    half_heads = torch.stack([keep_only(H, i % H, (i + 2) % H) for i in range(L)])
    return {
        "all-ones": {"layer": torch.ones(L, dtype=torch.bool), "heads": torch.ones(L, H, dtype=torch.bool),
                     "ffn": torch.ones(L, F, dtype=torch.bool), "hidden": torch.ones(d, dtype=torch.bool)},
        "whole-layer": {"layer": keep_only(L, 0, 2)},
        "one-head-in-a-layer": {"heads": torch.stack([keep_only(H, 2) if i == 1 else torch.ones(H, dtype=torch.bool)
                                                     for i in range(L)])},
        "heads+hidden": {"heads": half_heads, "hidden": every_other(d, 2 * dims.head_dim, offset=1)},
        "one-ffn-unit": {"ffn": torch.stack([keep_only(F, 7 * i + 3) for i in range(L)])},
        "hidden-only": {"hidden": every_other(d, d - d // 4)},
        "combined": {"layer": keep_only(L, 1, 2), "heads": half_heads,
                     "ffn": torch.stack([every_other(F, F // 3 + i, offset=i) for i in range(L)]),
                     "hidden": every_other(d, 2 * dims.head_dim, offset=1)},
    }


def setup(family: str):
    directory = resolve_base(BASES[family])
    config = read_config(directory)
    return directory, config, BaseDims.from_config(config), adapter_for(config["model_type"])


def masked_outputs(model, adapter, masks, layout, batches, pooling):
    with MaskHooks(model, adapter, as_float_masks(masks), layout.head_dim):
        return model_outputs(model, batches, pooling, layout.hidden)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", BASES)
@pytest.mark.parametrize("case", ["all-ones", "whole-layer", "one-head-in-a-layer", "heads+hidden",
                                  "one-ffn-unit", "hidden-only", "combined"])
def test_masked_equals_pruned(family, attn, case):
    directory, config, dims, adapter = setup(family)
    model = load_model(directory, attn)
    masks = cases(dims)[case]
    layout = Layout.from_masks(masks, dims)
    pooling = read_pooling(directory)
    batches = probe_batches(load_tokenizer(directory), probe_texts(), max_length=64)
    masked = masked_outputs(model, adapter, masks, layout, batches, pooling)
    state = slice_state_dict(model.state_dict(), adapter, layout)
    pruned = build_model(stock_config(config, adapter, layout.sizes()), state, adapter, layout.head_dim, attn)
    diffs = max_abs_diff(masked, model_outputs(pruned, batches, pooling))
    assert max(diffs.values()) <= ATOL, diffs
    base = model_outputs(model, batches, pooling)
    if case == "all-ones":
        assert max(max_abs_diff(masked, base).values()) <= ATOL
    else:  # the masks really changed the model, so the comparison above is not vacuous
        assert max(max_abs_diff(masked, base).values()) > 1e-3


EXPORTS = [("whole-layer", "stock"), ("one-head-in-a-layer", "padded"), ("heads+hidden", "stock"),
           ("one-ffn-unit", "stock"), ("combined", "padded")]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", BASES)
@pytest.mark.parametrize("case,fmt", EXPORTS)
def test_export_reloads_exactly(tmp_path, family, case, fmt, attn):
    directory, config, dims, adapter = setup(family)
    masks = cases(dims)[case]
    run = make_run(tmp_path / "run", BASES[family], masks)
    prune.run(run / "masks")
    out = tmp_path / "out"
    export_hf.run(run, out, fmt=fmt)

    reloaded, info = AutoModel.from_pretrained(str(out), output_loading_info=True, dtype=torch.float32,
                                               attn_implementation=attn)
    assert all(not v for v in info.values()), info
    layout = Layout.from_masks(masks, dims)
    pooling = read_pooling(directory)
    texts = probe_texts()
    batches = probe_batches(load_tokenizer(directory), texts, max_length=64)
    masked = masked_outputs(load_model(directory, attn), adapter, masks, layout, batches, pooling)
    assert reloaded.config._attn_implementation == attn
    diffs = max_abs_diff(masked, model_outputs(reloaded.eval(), batches, pooling))
    assert max(diffs.values()) <= ATOL, diffs

    st = SentenceTransformer(str(out), device="cpu")
    st.max_seq_length = 64  # the probe batches above truncate at 64 tokens too
    st_embeddings = st.encode(texts, convert_to_tensor=True, batch_size=8)
    assert st_embeddings.shape[1] == len(layout.hidden)
    assert float((st_embeddings - per_text(masked["embedding"])).abs().max()) <= ATOL


def pruned_run(tmp_path, family: str, case: str):
    """A run directory with the case's masks, pruned (not yet exported)."""
    _, _, dims, _ = setup(family)
    run = make_run(tmp_path / "run", BASES[family], cases(dims)[case])
    prune.run(run / "masks")
    return run


def test_batch_of_one_equals_padded_batch(tmp_path, xlmr_dir):
    export_hf.run(pruned_run(tmp_path, "xlmr", "heads+hidden"), tmp_path / "out")
    model = AutoModel.from_pretrained(str(tmp_path / "out")).eval()
    tokenizer = load_tokenizer(tmp_path / "out")
    short, long = "A short one.", "A much longer sentence that forces padding of the short one in the batch."
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).last_hidden_state[0]
        batch = tokenizer([short, long], padding=True, return_tensors="pt")
        together = model(**batch).last_hidden_state[0, : alone.shape[0]]
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert float((alone - together).abs().max()) <= ATOL


def test_non_stock_shape_needs_padded_format(tmp_path):
    run = pruned_run(tmp_path, "xlmr", "one-head-in-a-layer")
    with pytest.raises(UsageError, match="--format padded"):
        export_hf.run(run, tmp_path / "out", fmt="stock")
    assert not (tmp_path / "out").exists()


def test_hidden_only_is_not_exportable_and_says_why(tmp_path):
    run = pruned_run(tmp_path, "bert", "hidden-only")
    with pytest.raises(UsageError, match="allow only 3 of size 16"):
        export_hf.run(run, tmp_path / "out", fmt="padded")
