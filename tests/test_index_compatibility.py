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


# ---------------------------------------------------------------- training levers
