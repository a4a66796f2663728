"""Translation pairs (`data.translations`, `distill.translation`): the loss's values, its gradients,
the two file formats and their errors, and a training run that uses them (resume, teacher cache)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.config import load_recipe
from bgeprune_cli.errors import DataError
from bgeprune_cli.models.loading import recipe_base_dims
from bgeprune_cli.stages import train
from bgeprune_cli.training.batches import Batches
from bgeprune_cli.training.data import open_data
from bgeprune_cli.training.losses import cross_lingual_kl, translation_loss
from conftest import SHORT_TRAIN

SMOKE = Path(__file__).resolve().parents[1] / "recipes" / "smoke.toml"
PAIRS = [("the file was saved", "el archivo se guardó"), ("open the door", "öffne die Tür"),
         ("a new message", "un nouveau message"), ("the server stopped", "il server si è fermato"),
         ("print the page", "imprima a página"), ("close all windows", "sluit alle vensters")]


def write_pairs(path: Path, fields: tuple[str, str] = ("en", "xx")) -> Path:
    path.write_text("".join(json.dumps({fields[0]: en, fields[1]: xx, "lang": "?"}) + "\n" for en, xx in PAIRS))
    return path


def recipe_with(tmp_path: Path, data_lines: str, *sets: str):
    text = SMOKE.read_text().replace('train = ["builtin:probe"]', 'train = ["builtin:probe"]\n' + data_lines)
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return load_recipe(path, [*SHORT_TRAIN, *sets], base_dims=recipe_base_dims)


# ---------------------------------------------------------------- the loss


def test_loss_is_zero_where_source_and_translation_sit_on_the_teachers_source():
    teacher = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert translation_loss(teacher, teacher, teacher, 0.05, same_width=True).abs() < 1e-6
    assert translation_loss(2 * teacher, teacher, teacher, 0.05, same_width=True).abs() < 1e-6  # cosine: scale-free
    assert translation_loss(teacher.flip(0), teacher, teacher, 0.05, same_width=True) > 0.1


def test_cross_lingual_kl_matches_a_hand_computed_case():
    # Two sources at right angles; the student's translation 0 sits on source 1 and translation 1 on itself.
    sources = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    translations = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    t = 0.5
    # Teacher rows: softmax([1, 0] / t) and softmax([0, 1] / t). Student rows: cos to the sources, both [0, 1].
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]
    q = p[::-1]
    row0 = p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1])
    expected = (row0 + 0.0) / 2  # row 1 already matches
    assert cross_lingual_kl(sources, translations, sources, t).item() == pytest.approx(expected, rel=1e-5)
    cosines = (1 - 0) + (1 - 1)  # 1 − cos per translation: 1 and 0; sources match exactly
    assert translation_loss(sources, translations, sources, t, same_width=True).item() == pytest.approx(
        expected + (0 + cosines / 2) / 2, rel=1e-5)


def test_term_is_zero_for_the_teacher_itself_and_trains_weights_and_gates(builtin_cache):
    """With pairs whose translation is the source itself, the teacher as the student with every unit kept
    scores 0; with sampled gates and real translations the gradient reaches weights and log_alpha."""
    from bgeprune_cli.config import BaseDims, DistillSection
    from bgeprune_cli.models.families import adapter_for
    from bgeprune_cli.models.loading import load_model, load_tokenizer, read_config, resolve_base
    from bgeprune_cli.models.st_files import read_pooling
    from bgeprune_cli.pruning.hooks import MaskHooks
    from bgeprune_cli.training.distill_model import DistillModel, MicroBatch, Teacher, TeacherNeeds, TranslationBatch
    from bgeprune_cli.training.gates import MaskSet

    directory = resolve_base("builtin:tiny-bert")
    dims = BaseDims.from_config(read_config(directory))
    student, teacher = load_model(directory), load_model(directory).requires_grad_(False)
    pooling, tokenizer = read_pooling(directory), load_tokenizer(directory)
    masks = MaskSet(dims, ["heads", "ffn"], 3.0)
    hooks = MaskHooks(student, adapter_for("bert"), {}, dims.head_dim)
    distill = DistillSection(cosine=0, similarity_kl=0, translation=1.0)
    model = DistillModel(student, masks, None, None, hooks, pooling, distill, True, torch.device("cpu"))
    sources = [en for en, _ in PAIRS]

    def tokens(texts):
        return dict(tokenizer(texts, padding=True, return_tensors="pt"))

    texts = tokens(sources)
    expected = Teacher(teacher, None, pooling, TeacherNeeds(), torch.device("cpu")).outputs(MicroBatch(texts, sources))
    same = TranslationBatch(texts, texts, sources)
    keep_all = {name: torch.ones_like(a) for name, a in masks.log_alpha.items()}
    with torch.no_grad():
        terms = model(texts, expected, None, keep_all, None, same, expected.embedding)
    assert terms["translation"].abs() < 1e-5

    real = TranslationBatch(texts, tokens([xx for _, xx in PAIRS]), sources)
    terms = model(texts, expected, masks.noise(torch.Generator().manual_seed(0)), None, None, real,
                  expected.embedding)
    assert terms["translation"] > 0
    terms["translation"].backward()
    assert student.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in masks.log_alpha.values())


# ---------------------------------------------------------------- the files


def test_jsonl_with_named_fields_and_tsv_read_the_same_pairs(tmp_path):
    jsonl = write_pairs(tmp_path / "pairs.jsonl", ("source", "target"))
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{en}\t{xx}\textra column\n" for en, xx in PAIRS) + "\n")  # blank line skipped
    with open_data([str(jsonl)], "translations", "data.translations", ("source", "target")) as a, \
            open_data([str(tsv)], "translations", "data.translations") as b:
        assert [a.translation(i) for i in range(len(a))] == [b.translation(i) for i in range(len(b))] == PAIRS


def test_other_fields_of_the_same_file_are_other_data(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"en": en, "xx": xx, "de": xx + " (de)"}) + "\n" for en, xx in PAIRS))
    with open_data([str(path)], "translations", "k") as a, \
            open_data([str(path)], "translations", "k", ("en", "de")) as b:
        assert a.fingerprint != b.fingerprint and b.translation(0) == (PAIRS[0][0], PAIRS[0][1] + " (de)")


@pytest.mark.parametrize("line, message", [
    ('{"en": "a"}', '"xx" must be a non-empty string, got null'),
    ('{"en": "a", "xx": " "}', '"xx" must be a non-empty string, got a string'),
    ('["a", "b"]', "expected a JSON object with 'en' and 'xx', got an array"),
    ("{oops", "not valid JSON"),
])
def test_malformed_jsonl_pairs_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"en": "fine", "xx": "bien"}\n' + line + "\n")
    with pytest.raises(DataError, match="problem") as caught:
        open_data([str(path)], "translations", "data.translations")
    assert f"data.translations: {path}:2: " in str(caught.value) and message in str(caught.value)


def test_malformed_tsv_and_wrong_suffix_are_named(tmp_path):
    tsv, txt = tmp_path / "pairs.tsv", tmp_path / "pairs.txt"
    tsv.write_text("only one column\n")
    txt.write_text("a\tb\n")
    with pytest.raises(DataError) as caught:
        open_data([str(tsv), str(txt)], "translations", "data.translations")
    text = str(caught.value)
    assert f"{tsv}:1: expected a source and its translation separated by a tab" in text
    assert f"{txt}: translation pairs must be JSONL" in text


def test_pairs_batches_resume_where_they_left_off(tmp_path):
    with open_data([str(write_pairs(tmp_path / "p.jsonl"))], "translations", "data.translations") as index:
        stream = Batches(index, 4, seed=3)
        stream.local_share(2, range(2))
        state = stream.state_dict()
        expected = [stream.local_share(2, range(2)) for _ in range(4)]
        resumed = Batches(index, 4, seed=0)
        resumed.load_state_dict(state)
        assert [resumed.local_share(2, range(2)) for _ in range(4)] == expected
        sources, translations = expected[0][0]
        assert all(dict(PAIRS)[s] == t for s, t in zip(sources, translations))


def test_field_names_are_validated_in_the_recipe(tmp_path):
    from bgeprune_cli.errors import RecipeError

    with pytest.raises(RecipeError, match=r"recipe.toml:\d+: data.translation_fields: .*two different"):
        recipe_with(tmp_path, 'translations = ["p.jsonl"]\ntranslation_fields = ["en", "en"]')


# ---------------------------------------------------------------- training with them


def test_training_uses_the_pairs_and_the_teacher_cache_serves_their_sources(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    loaded = recipe_with(tmp_path, f'translations = ["{pairs}"]')
    cache = tmp_path / "cache"
    first = train.run(loaded, run_dir=tmp_path / "first", teacher_cache=cache, device="cpu")
    records = [json.loads(line) for line in (tmp_path / "first" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["terms"]["translation"]) and r["terms"]["translation"] > 0 for r in records)
    assert first["bad_steps"] == 0 and first["data_summary"]["translations"]["items"] == len(PAIRS)
    second = train.run(loaded, run_dir=tmp_path / "second", teacher_cache=cache, device="cpu")
    assert second["teacher_forwards"] == 0  # the sources were cached with the texts
    assert [json.loads(line)["loss"] for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()] \
        == [r["loss"] for r in records]


def test_a_bad_pairs_file_fails_before_training_with_exit_2_and_writes_nothing(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"en": "a", "xx": "b"}\n{"en": "c"}\n')
    text = SMOKE.read_text().replace('train = ["builtin:probe"]',
                                     f'train = ["builtin:probe"]\ntranslations = ["{bad}"]')
    (tmp_path / "recipe.toml").write_text(text)
    result = CliRunner().invoke(app, ["train", str(tmp_path / "recipe.toml"), "--run-dir", str(tmp_path / "run"),
                                      *[w for s in SHORT_TRAIN for w in ("--set", s)]])
    assert result.exit_code == 2, result.output
    assert f"{bad}:2" in result.output and '"xx" must be a non-empty string' in result.output
    assert not (tmp_path / "run").exists()


def test_no_term_without_pairs_and_none_at_weight_zero(tmp_path):
    pairs = write_pairs(tmp_path / "pairs.jsonl")
    train.run(recipe_with(tmp_path, f'translations = ["{pairs}"]', "distill.translation=0"),
              run_dir=tmp_path / "off", device="cpu")
    terms = json.loads((tmp_path / "off" / "metrics.jsonl").read_text().splitlines()[-1])["terms"]
    assert "translation" not in terms
