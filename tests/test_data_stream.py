"""Streaming training text (data_stream): shuffle buffer, determinism, exact resume, errors. Local files only."""

from __future__ import annotations

import builtins
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

datasets = pytest.importorskip("datasets")

from bgeprune_cli.config import StreamSource  # noqa: E402
from bgeprune_cli.errors import DataError, EnvironmentProblem  # noqa: E402
from bgeprune_cli.training.data_stream import StreamBatches, open_stream  # noqa: E402

N_GOOD = 23


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    # load_dataset pings the hub to count downloads, even for local files; a slow DNS answer costs seconds.
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path) -> tuple[list[str], list[str]]:
    """Two files, 23 usable texts among 5 records without one; returns (data_files, usable texts)."""
    records = [{"text": f"text {i}", "id": i} for i in range(N_GOOD)]
    records[3:3] = [{"text": None, "id": -1}, {"text": "", "id": -2}, {"text": "   ", "id": -3}]
    records[15:15] = [{"id": -4}, {"text": None, "id": -5}]
    a = jsonl(tmp_path / "a.jsonl", records[:12])
    b = jsonl(tmp_path / "b.jsonl", records[12:])
    return [str(a), str(b)], [f"text {i}" for i in range(N_GOOD)]


def through_torch(state: dict) -> dict:
    """What a checkpoint gives back: torch.save, then torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def flat(stream: StreamBatches, batches: int) -> list[str]:
    return [t for _ in range(batches) for t in stream.next_texts()]


# --- order and determinism ----------------------------------------------------------------------

@pytest.mark.parametrize("buffer", [1, 4, 1000])
def test_each_epoch_is_a_permutation_of_the_usable_texts(corpus, buffer):
    files, texts = corpus
    stream = StreamBatches(StreamSource("json", data_files=files, shuffle_buffer=buffer), batch_size=5, seed=3)
    drawn = flat(stream, 14)  # 70 texts: three full epochs and a bit
    for e in range(3):
        assert sorted(drawn[e * N_GOOD:(e + 1) * N_GOOD]) == sorted(texts)
    assert (drawn[:N_GOOD] == texts) == (buffer == 1)  # buffer 1 is stream order; bigger ones shuffle
    assert stream.epoch == 3 and 3 * 5 <= stream.skipped <= 4 * 5
    assert stream.epoch_progress == 3.0  # a local json file's size is not known up front


def test_epoch_advances_when_the_last_text_is_drawn(corpus):
    files, _ = corpus
    stream = StreamBatches(StreamSource("json", data_files=files, shuffle_buffer=6), batch_size=N_GOOD)
    stream.next_texts()
    assert (stream.epoch, stream.position, stream.epoch_progress) == (1, 0, 1.0)


def test_same_seed_same_batches_other_seed_differs(corpus):
    files, _ = corpus
    source = StreamSource("json", data_files=files, shuffle_buffer=8)
    a, b, c = (StreamBatches(source, 4, seed=s) for s in (0, 0, 1))
    assert flat(a, 15) == flat(b, 15)
    assert flat(StreamBatches(source, 4, seed=0), 15) != flat(c, 15)


# --- resume -------------------------------------------------------------------------------------

@pytest.mark.parametrize("buffer", [4, 1000])
def test_resume_gives_exactly_the_uninterrupted_batches(corpus, buffer):
    """Saved after k batches (mid-stream, while draining, at and across epoch ends), resumed in a new object."""
    files, _ = corpus
    source = StreamSource("json", data_files=files, shuffle_buffer=buffer)
    reference = StreamBatches(source, batch_size=3, seed=7)
    states, batches = [], []
    for _ in range(20):  # 60 texts: 2.6 epochs of 23
        states.append(through_torch(reference.state_dict()))
        batches.append(reference.next_texts())
    exact_paths = 0
    for k in range(0, 20, 2):
        resumed = StreamBatches(source, batch_size=3, seed=999)  # the state's seed wins, as in Batches
        resumed.load_state_dict(states[k])
        exact_paths += states[k]["stream_state"] is not None
        assert [resumed.next_texts() for _ in range(min(5, 20 - k))] == batches[k:k + 5], f"after {k} batches"
    assert exact_paths > 0 or buffer == 1000  # a buffer bigger than the data reads the whole stream at once


def test_resume_mid_stream_uses_the_dataset_state_and_skip_gives_the_same(corpus):
    files, _ = corpus
    source = StreamSource("json", data_files=files, shuffle_buffer=3)
    reference = StreamBatches(source, batch_size=2, seed=1)
    flat(reference, 4)
    state = through_torch(reference.state_dict())
    assert state["stream_state"] and 0 < state["position"] and not state["exhausted"]
    expected = flat(reference, 12)  # crosses into epoch 1
    assert reference.epoch == 1
    # Without the dataset's state, or with one from another datasets version: the .skip(position) fallback.
    for change in ({}, {"stream_state": None}, {"datasets_version": "0.0"}):
        resumed = StreamBatches(source, batch_size=2)
        resumed.load_state_dict({**state, **change})
        again = StreamBatches(source, batch_size=2)  # saved again before reading anything: still exact
        again.load_state_dict(through_torch(resumed.state_dict()))
        assert flat(resumed, 12) == expected and flat(again, 12) == expected


def test_resume_is_exact_inside_multi_batch_parquet_and_text_files(tmp_path):
    """Arrow record batches smaller than a file: the dataset's state must point inside one."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"content": [f"row {i}" for i in range(40)]}), tmp_path / "d.parquet", row_group_size=6)
    (tmp_path / "d.txt").write_text("".join(f"line {i}\n" for i in range(30)) + "\n\n", encoding="utf-8")
    for source in (StreamSource("parquet", data_files=[str(tmp_path / "d.parquet")], text_field="content",
                                shuffle_buffer=5),
                   StreamSource("text", data_files=[str(tmp_path / "d.txt")], shuffle_buffer=2)):
        reference = StreamBatches(source, batch_size=4, seed=2)
        flat(reference, 3)
        state = through_torch(reference.state_dict())
        assert state["stream_state"] is not None
        expected = flat(reference, 15)
        resumed = StreamBatches(source, batch_size=4)
        resumed.load_state_dict(state)
        assert flat(resumed, 15) == expected


def test_state_holds_only_plain_types(corpus):
    files, _ = corpus
    stream = StreamBatches(StreamSource("json", data_files=files, shuffle_buffer=5), batch_size=3)
    stream.next_texts()
    state = stream.state_dict()

    def plain(value) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (str, int, float, bool))

    assert plain(state) and len(state["buffer"]) == 5 and state["stream_state"]
    assert through_torch(state) == state


def test_changed_data_or_source_refuses_the_checkpoint(corpus):
    files, _ = corpus
    source = StreamSource("json", data_files=files, shuffle_buffer=5)
    state = StreamBatches(source, batch_size=3).state_dict()
    with pytest.raises(DataError, match="changed since the checkpoint"):
        StreamBatches(StreamSource("json", data_files=files, shuffle_buffer=6), 3).load_state_dict(state)
    with open(files[1], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "appended"}) + "\n")
    assert source.fingerprint() != state["fingerprint"]
    with pytest.raises(DataError, match="changed since the checkpoint") as excinfo:
        StreamBatches(source, batch_size=3).load_state_dict(state)
    assert excinfo.value.exit_code == 2
    with pytest.raises(DataError, match="invalid"):
        stream = StreamBatches(source, batch_size=3)
        stream.load_state_dict({**stream.state_dict(), "rng": [3, [1, 2], None]})


def test_fingerprint_covers_every_field():
    assert StreamSource("a/b").fingerprint() == StreamSource("a/b").fingerprint()
    assert len({StreamSource("a/b").fingerprint(), StreamSource("a/b", name="x").fingerprint(),
                StreamSource("a/b", split="test").fingerprint(), StreamSource("a/b", revision="v1").fingerprint(),
                StreamSource("a/b", text_field="body").fingerprint()}) == 5


def test_summary(corpus):
    files, _ = corpus
    stream = StreamBatches(StreamSource("json", data_files=files), batch_size=2)
    assert stream.summary() == {"dataset": "json", "name": None, "split": "train", "streaming": True}
    assert stream.fingerprint == StreamSource("json", data_files=files).fingerprint()


# --- errors -------------------------------------------------------------------------------------

def test_missing_datasets_package_says_how_to_install(monkeypatch, corpus):
    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError("No module named 'datasets'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(EnvironmentProblem, match="pip install datasets") as excinfo:
        open_stream(StreamSource("json", data_files=corpus[0]))
    assert excinfo.value.exit_code == 4


def test_wrong_split_missing_file_and_wrong_field_name_the_problem(corpus, tmp_path):
    files, _ = corpus
    with pytest.raises(DataError, match="'json'.*validation") as excinfo:
        open_stream(StreamSource("json", split="validation", data_files=files))
    assert excinfo.value.exit_code == 2
    with pytest.raises(DataError, match="cannot open dataset 'json'"):
        open_stream(StreamSource("json", data_files=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(DataError, match=r"no field 'body'.*its fields: text, id\); set text_field"):
        StreamBatches(StreamSource("json", data_files=files, text_field="body"), batch_size=2)


def test_no_usable_text_raises_instead_of_looping(tmp_path):
    empty = jsonl(tmp_path / "e.jsonl", [{"text": ""}, {"text": None}, {"text": "  "}])
    stream = StreamBatches(StreamSource("json", data_files=[str(empty)]), batch_size=2)
    with pytest.raises(DataError, match="no usable text: none of its 3 records"):
        stream.next_texts()
    (tmp_path / "blank.txt").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no records|cannot open"):
        open_stream(StreamSource("text", data_files=[str(tmp_path / "blank.txt")]))


def test_the_module_imports_without_datasets():
    blocked = "import sys; sys.modules['datasets'] = None; import bgeprune_cli.training.data_stream"
    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-c", blocked], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)})


# ---------------------------------------------------------------- through `bgeprune train`

STREAM_RECIPE = """# bgeprune train r.toml
[base]
model = "builtin:tiny-bert"
[target]
layers = 2
ffn = 64
[data]
max_length = 32
[data.stream]
dataset = "json"
data_files = ["corpus.jsonl"]
shuffle_buffer = 7
[train]
steps = 12
recovery_steps = 4
batch_size = 8
micro_batch_size = 4
checkpoint_every = 4
log_every = 1
target_warmup_steps = 4
"""


def test_training_on_a_stream_resumes_exactly(tmp_path, monkeypatch, builtin_cache):
    from safetensors.torch import load_file

    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.models.loading import recipe_base_dims
    from bgeprune_cli.stages import train
    from conftest import train_until_crash

    lines = (Path(__file__).parents[1] / "bgeprune_cli" / "resources" / "probe.txt").read_text().splitlines()
    jsonl(tmp_path / "corpus.jsonl", [{"text": line} for line in lines if line.strip()][:30])  # 30 < 16 * 8: epochs
    (tmp_path / "r.toml").write_text(STREAM_RECIPE)
    loaded = load_recipe(tmp_path / "r.toml", base_dims=recipe_base_dims)
    straight = train.run(loaded, run_dir=tmp_path / "straight")
    assert straight["data_summary"]["train"]["streaming"] and straight["steps"] == 16
    train_until_crash(monkeypatch, loaded, tmp_path / "resumed")
    train.run(loaded, run_dir=tmp_path / "resumed", resume=True)
    a, b = (load_file(str(tmp_path / run / "train" / "student.safetensors")) for run in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[json.loads(x)["loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("straight", "resumed")]
    assert losses[0] == losses[1] and len(losses[0]) == 16


def test_a_recipe_cannot_name_both_local_files_and_a_stream(tmp_path):
    from bgeprune_cli.config import load_recipe
    from bgeprune_cli.errors import RecipeError

    (tmp_path / "r.toml").write_text(STREAM_RECIPE.replace("[data]\n", '[data]\ntrain = ["x.txt"]\n'))
    with pytest.raises(RecipeError, match="either data.train"):
        load_recipe(tmp_path / "r.toml")


# --- a mix of sources ([[data.stream]]) ----------------------------------------------------------


@pytest.fixture
def two_languages(tmp_path) -> list[StreamSource]:
    """Two sources with different text fields and sizes, weighted 3:1."""
    de = jsonl(tmp_path / "de.jsonl", [{"text": f"de {i}"} for i in range(30)])
    fr = jsonl(tmp_path / "fr.jsonl", [{"content": f"fr {i}", "other": i} for i in range(8)])
    return [StreamSource("json", data_files=[str(de)], shuffle_buffer=4, weight=3.0),
            StreamSource("json", data_files=[str(fr)], text_field="content", shuffle_buffer=6)]


def test_a_mix_draws_every_source_by_weight_until_each_has_ended_once(two_languages):
    stream = StreamBatches(two_languages, batch_size=4, seed=5)
    texts = flat(stream, 15)  # 60 texts
    assert stream.shuffle_buffer == 6 and stream.text_field == "text"
    german, french = [t for t in texts if t.startswith("de")], [t for t in texts if t.startswith("fr")]
    assert len(german) + len(french) == 60 and 2 * len(french) < len(german)  # 3:1, with the draws' noise
    assert {f"fr {i}" for i in range(8)} <= set(french)  # the small source is revisited, never dropped
    assert stream.summary()["datasets"][0]["weight"] == 3.0
    assert flat(StreamBatches(two_languages, batch_size=4, seed=5), 15) == texts
    assert flat(StreamBatches(two_languages, batch_size=4, seed=6), 15) != texts


def test_a_mix_resumes_exactly_and_under_its_own_seed(two_languages):
    reference = StreamBatches(two_languages, batch_size=3, seed=2)
    flat(reference, 5)
    state = through_torch(reference.state_dict())
    expected = flat(reference, 25)  # past the end of the mix: the next epoch too
    for change in ({}, {"stream_state": None}):
        resumed = StreamBatches(two_languages, batch_size=3, seed=77)  # the checkpoint's seed wins
        resumed.load_state_dict({**state, **change})
        assert flat(resumed, 25) == expected
    reweighted = [two_languages[0].model_copy(update={"weight": 1.0}), two_languages[1]]
    with pytest.raises(DataError, match="changed since the checkpoint"):
        StreamBatches(reweighted, batch_size=3, seed=2).load_state_dict(state)


def test_a_mix_names_the_source_that_fails(two_languages, tmp_path):
    broken = StreamSource("json", data_files=[str(jsonl(tmp_path / "x.jsonl", [{"body": "a"}]))])
    with pytest.raises(DataError, match=r"data.stream\[2\]: .* no field 'text'"):
        StreamBatches([*two_languages, broken], batch_size=2)


def test_a_recipe_takes_one_stream_table_or_several(tmp_path):
    from bgeprune_cli.config import load_recipe

    head = '[base]\nmodel = "builtin:tiny-xlm-roberta"\n[target]\nlayers = 2\n'
    one = tmp_path / "one.toml"
    one.write_text(head + '[data.stream]\ndataset = "text"\ndata_files = ["./a.txt"]\n')
    loaded = load_recipe(one)
    assert [s.dataset for s in loaded.recipe.data.stream] == ["text"]
    assert loaded.resolved["data"]["stream"]["data_files"] == [str(tmp_path / "a.txt")]  # a table, as written
    assert "weight" not in loaded.resolved["data"]["stream"]
    many = tmp_path / "many.toml"
    many.write_text(head + '[[data.stream]]\ndataset = "a/b"\nname = "deu_Latn"\n'
                    '[[data.stream]]\ndataset = "a/b"\nname = "fra_Latn"\nweight = 0\n')
    with pytest.raises(Exception) as refused:
        load_recipe(many)
    assert "many.toml:11: data.stream.1.weight" in str(refused.value)
    many.write_text(many.read_text().replace("weight = 0", "weight = 0.5"))
    assert [s.weight for s in load_recipe(many).recipe.data.stream] == [1.0, 0.5]
