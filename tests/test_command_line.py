"""The one rebuild of a command line (bench's report command, train's resume command), and bench's headline."""

import shlex
from pathlib import Path

from bgeprune_cli.bench.headline import QualityHeadline, entries_headline, quality_headline
from bgeprune_cli.command_line import comma_list, command_line


def test_flags_follow_their_values():
    line = command_line(["bgeprune", "train", Path("my recipes/r.toml")], [
        ("--set", ["a=1", "b='x y'"]), ("--resume", True), ("--masks", None), ("--force", False), ("--set", []),
        ("--device", "cpu"), ("--batch-sizes", comma_list([1, 32])), ("--mteb", comma_list([]))])
    assert shlex.split(line) == ["bgeprune", "train", "my recipes/r.toml", "--set", "a=1", "--set", "b='x y'",
                                 "--resume", "--device", "cpu", "--batch-sizes", "1,32"]


def test_quality_headline_is_named_not_indexed():
    modes = {"dense": {"model": {"ndcg@10": 0.4}, "base": {"ndcg@10": 0.5}, "ratio": {"ndcg@10": 0.8},
                       "ratios": {"model@onnx": {"ndcg@10": 0.78}}}}
    headline = quality_headline({"beir": {"pydocs": {"modes": modes}}})
    assert headline == QualityHeadline("pydocs nDCG@10", "ndcg@10", modes) and headline.is_quality
    assert headline.value("base") == 0.5 and headline.ratios("model") == {"ndcg@10": 0.8}
    assert headline.ratios("base") is None


def test_agreement_is_not_a_quality_headline():
    headline = quality_headline({"agreement": {"modes": {"dense": {"top10_overlap": 0.7}}}})
    assert not headline.is_quality and headline.value("model") == 0.7 and headline.value("base") == 1.0


def test_entries_carry_quality_and_its_ratio_only_where_a_base_divides():
    class Entry:
        def __init__(self, label, backend):
            self.label, self.backend = label, backend

    modes = {"dense": {"model": {"accuracy": 0.9}, "model@onnx": {"accuracy": 0.88}, "base": {"accuracy": 1.0},
                       "ratio": {"accuracy": 0.9}, "ratios": {"model@onnx": {"accuracy": 0.88}}}}
    headline = quality_headline({"bitext_mean": modes})
    models = {"model": Entry("m", "torch"), "model@onnx": Entry("m", "onnx"), "base": Entry("b", "torch")}
    entries = entries_headline(models, None, {}, headline)
    assert entries["model"]["quality_vs_base"] == 0.9 and entries["model@onnx"]["quality_vs_base"] == 0.88
    assert entries["base"]["quality"] == 1.0 and "quality_vs_base" not in entries["base"]
