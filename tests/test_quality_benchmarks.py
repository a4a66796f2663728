"""The quality benchmarks' own arithmetic (the runs themselves are benchmarks, not tests): the naive
baseline's evenly spaced layers, and how the multilingual point turns a bench report into per-language
retention and the pooled bitext number on the curve."""

from __future__ import annotations

import pytest

import quality_curve
import quality_multilingual_point


@pytest.mark.parametrize(("keep", "layers"), [(4, [0, 2, 3, 5]), (3, [0, 2, 5]), (2, [0, 5]), (1, [5])])
def test_naive_keeps_evenly_spaced_layers_with_the_first_and_last(keep, layers):
    mask = quality_curve.evenly_spaced(keep)
    assert mask.nonzero().flatten().tolist() == layers and int(mask.sum()) == keep


def test_the_targets_remove_the_fractions_the_docstring_states():
    # one all-MiniLM-L6-v2 layer: Q, K, V, O (384 x 384 + bias), two LayerNorms, the FFN's output bias,
    # and per FFN unit one row + bias in and one column out
    fixed, per_unit = 4 * (384 * 384 + 384) + 2 * 2 * 384 + 384, 384 + 1 + 384

    def kept(layers, ffn):
        return layers * (fixed + ffn * per_unit)

    removed = {name: 1 - kept(t["layers"], t["ffn"]) / kept(6, 1536) for name, t in quality_curve.TARGETS.items()}
    assert removed == pytest.approx({"30%": 0.305, "50%": 0.502, "70%": 0.703}, abs=0.0005)
    # the trainer counts the same: metrics.jsonl of a 50% run reports encoder_params 5304160
    assert kept(5, 608) == 5304160


def _modes(base, model, metric):
    return {"modes": {"dense": {"base": {metric: base}, "model": {metric: model}, "ratio": {metric: model / base}}}}


def test_the_multilingual_summary_keeps_every_language_and_pools_bitext_by_accuracy(capsys):
    report = {"size_ratio": {"params_encoder": 0.498}, "headline": {"speedup": 1.9},
              "quality": {"bitext": {"ar": _modes(0.8, 0.4, "accuracy"), "ro": _modes(0.6, 0.6, "accuracy")},
                          "beir": {"pydocs": _modes(0.5, 0.45, "ndcg@10")}}}
    result = quality_multilingual_point.summarize(report, "python benchmarks/quality_multilingual_point.py",
                                                  "bgeprune bench x")
    assert result["bitext"]["ar"]["retention"] == pytest.approx(0.5)  # the damaged language is not averaged away
    assert result["bitext"]["ro"]["retention"] == pytest.approx(1.0)
    assert result["bitext_mean_retention"] == pytest.approx(1.0 / 1.4)  # pooled accuracy, not the mean of ratios
    assert result["pydocs"]["retention"] == pytest.approx(0.9) and result["removed"] == pytest.approx(0.502)
    printed = capsys.readouterr().out
    assert "bitext ar accuracy" in printed and "50.0%" in printed and "bgeprune bench x" in printed


def test_the_matryoshka_table_reads_shares_of_the_teacher_and_of_each_students_full_width():
    import quality_matryoshka

    def report(student_full, student_cut, teacher_cut):
        def m(model, base):
            return {"model": {"ndcg@10": model}, "base": {"ndcg@10": base}}
        return {"models": {"model": {"hidden": 8}}, "quality": {
            "dims": [4], "beir": {"pydocs": {"modes": {"dense": m(student_full, 0.5)},
                                             "widths": {"4": m(student_cut, teacher_cut)}}}}}

    rows = quality_matryoshka.table(report(0.4, 0.2, 0.25), report(0.45, 0.4, 0.25))
    assert rows[2] == "| 8 | pydocs nDCG@10 | 100.0% | 80.0% | 90.0% | 100.0% | 100.0% |"
    assert rows[3] == "| 4 | pydocs nDCG@10 | 50.0% | 40.0% | 80.0% | 50.0% | 88.9% |"


def test_the_long_input_table_shows_each_backends_speedup_beside_the_flops_ratio():
    import speed_long_bge_m3_shape

    def entry(p50_ms: float, **ratio) -> dict:
        return {"p50_ms": p50_ms, **ratio}

    points = [{"batch": 1, "length": 8192, "flops_speedup": 1.66, "base": entry(100_000.0),
               "base@onnx-int8": entry(90_000.0, speedup_vs_base=1.1),
               "model": entry(60_000.0, speedup_vs_base=1.67, speedup_vs_base_same_backend=1.67),
               "model@onnx-int8": entry(60_000.0, speedup_vs_base=1.67, speedup_vs_base_same_backend=1.5)}]
    table = speed_long_bge_m3_shape.long_input_table(points).splitlines()
    assert table[0] == ("| batch × tokens | speedup, PyTorch fp32 | speedup, ONNX int8 | FLOPs ratio | "
                        "pruned p50 s, PyTorch fp32 | pruned p50 s, ONNX int8 |")
    assert table[2] == "| 1 × 8,192 | 1.67× | 1.50× | 1.66× | 60.00 | 60.00 |"
