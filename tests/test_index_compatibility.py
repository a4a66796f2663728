"""Index compatibility: the asymmetric (pruned queries x the base's documents) quality metric, on a
hand-made example and in bench."""

from __future__ import annotations

import pytest
import torch

from bgeprune_cli.bench.eval_data import BeirSet
from bgeprune_cli.bench.quality import asymmetric_scores, evaluate, ir_evaluator, ir_metrics
from bgeprune_cli.models.m3 import M3Output
from conftest import Recorder


def _outputs(rows: list[list[float]]) -> M3Output:
    dense = torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)
    return M3Output(dense, [{} for _ in rows], [])


def test_asymmetric_quality_on_a_hand_made_three_query_example():
    """Three queries and three documents, each query relevant to the document with the same index. The
    base's vectors make every query find its document. The pruned model's documents are the base's, so
    its queries must be ranked against the base's index: two of its three queries point at the right
    document, one (q3) at d1, which gives a known nDCG@10 for "pruned queries × base index"."""
    base_q = _outputs([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    base_d = _outputs([[1, 0.1, 0], [0, 1, 0.1], [0.1, 0, 1]])
    model_q = _outputs([[1, 0, 0], [0, 1, 0], [1, 0, 0.2]])  # q3 drifted towards d1
    model_d = _outputs([[1, 0.1, 0], [0, 1, 0.1], [0.1, 0, 1]])
    scores = asymmetric_scores((model_q, model_d), (base_q, base_d))
    assert scores["model_queries_base_docs"].argmax(1).tolist() == [0, 1, 0]
    assert scores["base_queries_model_docs"].argmax(1).tolist() == [0, 1, 2]
    beir = BeirSet("hand", {f"q{i}": f"q{i}" for i in range(3)}, {f"d{i}": f"d{i}" for i in range(3)},
                   {f"q{i}": {f"d{i}"} for i in range(3)})
    evaluator = ir_evaluator(beir)
    metrics = ir_metrics(evaluator, scores["model_queries_base_docs"])
    # q3's document is ranked second of three: 1/log2(3) for it, 1 for the two others.
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 + 1 / torch.log2(torch.tensor(3.0)).item()) / 3)
    assert metrics["mrr@10"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert ir_metrics(evaluator, scores["base_queries_model_docs"])["ndcg@10"] == pytest.approx(1.0)


def test_bench_reports_asymmetric_quality_only_when_the_widths_match(prompted_base):
    beir = BeirSet("mini", {"q1": "what is pruning", "q2": "animals"},
                   {"d1": "pruning removes weights", "d2": "cats and dogs"}, {"q1": {"d1"}, "q2": {"d2"}})
    same = evaluate({"model": Recorder(prompted_base), "base": Recorder(prompted_base)}, [beir], [], ["x", "y", "z"],
                    64, 8)
    entry = same["beir"]["mini"]["asymmetric"]
    assert entry["model_queries_base_docs"]["ratio"]["ndcg@10"] == pytest.approx(1.0)  # the same model twice
    narrower = Recorder(prompted_base, hidden=32)
    other = evaluate({"model": narrower, "base": Recorder(prompted_base)}, [beir], [], ["x", "y", "z"], 64, 8)
    assert "asymmetric" not in other["beir"]["mini"] and "output dimension differs" in other["asymmetric_note"]



def test_sparse_and_colbert_cross_scores_on_hand_made_outputs_with_a_trimmed_vocabulary():
    """The pruned model's lexical weights are keyed by its trimmed ids: they score against the base's
    documents only once mapped to the base's ids. ColBERT: each query token's best document token."""
    from bgeprune_cli.bench.index_compat import cross_directions
    from bgeprune_cli.models.tokenizers.vocab_map import VocabMap

    vmap = VocabMap([3, 5, 9], base_size=12)  # trimmed id 1 is the base's 5
    unit = torch.nn.functional.normalize
    model_q = M3Output(unit(torch.tensor([[1.0, 0.0]]), dim=-1), [{1: 0.5, 2: 1.0}], [unit(torch.tensor(
        [[1.0, 0.0], [0.0, 1.0]]), dim=-1)])
    base_d = M3Output(unit(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1), [{5: 2.0}, {9: 1.0, 1: 7.0}],
                      [unit(torch.tensor([[1.0, 0.0]]), dim=-1), unit(torch.tensor([[0.6, 0.8], [0.0, 1.0]]), dim=-1)])
    crossed = cross_directions(["dense", "sparse", "colbert", "m3"], (model_q, model_q), (base_d, base_d), vmap)
    q_x_index = crossed["model_queries_base_docs"]
    assert q_x_index["sparse"].tolist() == [[1.0, 1.0]]  # 0.5 x 2.0 (id 5); 1.0 x 1.0 (id 9); never id 1
    # document 0 has one token (1, 0): query tokens score 1 and 0; document 1: 0.6 and 1.0 at best
    assert q_x_index["colbert"].flatten().tolist() == pytest.approx([0.5, 0.8])
    assert q_x_index["m3"].flatten().tolist() == pytest.approx([(1 + 1 + 0.5) / 3, (0 + 1 + 0.8) / 3])
    without_map = cross_directions(["sparse"], (model_q, model_q), (base_d, base_d))
    # unmapped, the trimmed id 1 meets the base's unrelated id 1 (and 5, 9 meet nothing): a wrong score
    assert without_map["model_queries_base_docs"]["sparse"].tolist() == [[0.0, 3.5]]


def test_bench_reports_index_compatibility_in_every_bge_m3_mode(builtin_cache):
    """The same bge-m3-like model as both sides: its queries against its own index in every mode keep 100%,
    on BEIR and per bitext language, summarised with the worst language; the render and the card show them."""
    from bgeprune_cli.bench.eval_data import BitextSet
    from bgeprune_cli.bench.models import load_bench_model
    from bgeprune_cli.bench.render import _asymmetric_mode_rows
    from bgeprune_cli.models.card_measured import _quality_rows

    model = load_bench_model("builtin:tiny-bge-m3")
    beir = BeirSet("mini", {"q1": "what is pruning", "q2": "animals"},
                   {"d1": "pruning removes weights", "d2": "cats and dogs"}, {"q1": {"d1"}, "q2": {"d2"}})
    bitext = [BitextSet("de", "de", ["a house", "the cat", "red wine"], ["ein Haus", "die Katze", "Rotwein"]),
              BitextSet("fr", "fr", ["a house", "the cat", "red wine"], ["une maison", "le chat", "vin rouge"])]
    q = evaluate({"model": model, "base": model}, [beir], bitext, ["x", "y"], 64, 8)
    for mode in ("sparse", "colbert", "m3"):
        for direction in ("model_queries_base_docs", "base_queries_model_docs"):
            crossed = q["beir"]["mini"]["asymmetric_modes"][mode][direction]
            assert crossed["ratio"]["ndcg@10"] == pytest.approx(1.0), (mode, direction)
        for language in ("de", "fr"):
            crossed = q["bitext"][language]["asymmetric_modes"][mode]["model_queries_base_docs"]
            assert crossed["metrics"] == pytest.approx(q["bitext"][language]["cross_lingual"][mode]["model"])
        summary = q["bitext_asymmetric_modes"][mode]
        assert summary["ratio"]["ndcg@10"] == pytest.approx(1.0) and summary["worst"]["language"] in ("de", "fr")
    assert "dense" not in q["beir"]["mini"]["asymmetric_modes"]  # dense stays under "asymmetric", as before
    rows = _asymmetric_mode_rows(q)
    assert ["xx→en retrieval worst language", "colbert"] == rows[-3][:2] and len(rows) == 3 * 2 + 3 * 2 + 3 * 2
    card = "\n".join(_quality_rows(q))
    assert "| mini: this model's queries × the base's index | nDCG@10 | sparse |" in card


# ---------------------------------------------------------------- training levers
