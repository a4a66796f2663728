"""Training-data reader: file discovery, streaming index, error reports, shuffled resumable batches."""

from __future__ import annotations

import json
import os
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from bgeprune_cli.errors import DataError, UsageError
from bgeprune_cli.training.batches import Batches
from bgeprune_cli.training.data import DataIndex, build_index, expand_sources, open_data


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(path: Path, records: list) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def texts_of(index: DataIndex) -> list[str]:
    return [index.text(i) for i in range(len(index))]


def problems(excinfo) -> str:
    assert isinstance(excinfo.value, UsageError) and excinfo.value.exit_code == 2
    return str(excinfo.value)


PAIRS = [{"query": f"q{i}", "pos": [f"p{i}a", f"p{i}b"], "neg": [f"n{i}a", f"n{i}b", f"n{i}c"]} for i in range(10)]


# --- reading ------------------------------------------------------------------------------------

def test_train_reads_txt_jsonl_text_and_query_records(tmp_path):
    a = write(tmp_path / "a.txt", "first line\n  kept spaces  \nthird")
    b = jsonl(tmp_path / "b.jsonl", [{"text": "json text"}, {"query": "q", "pos": ["p1", "p2"], "neg": "n"}])
    c = jsonl(tmp_path / "c.json", [{"query": "only a query"}])
    with open_data([str(a), str(b), str(c)], "text", "data.train") as index:
        assert texts_of(index) == ["first line", "  kept spaces  ", "third", "json text", "q", "p1", "p2", "n",
                                   "only a query"]
        assert index.files == [a, b, c]
        assert index.summary() == {"files": 3, "items": 9, "bytes": sum(p.stat().st_size for p in (a, b, c))}
        assert all(len(sha) == 64 for sha in index.file_sha256)


def test_blank_lines_crlf_and_bom(tmp_path):
    a = write(tmp_path / "a.txt", b"\xef\xbb\xbfone\r\n\r\n   \r\n\ttwo\twords\r\n\nthree\r")
    b = write(tmp_path / "b.jsonl", b'\xef\xbb\xbf{"text": "x"}\r\n\r\n  \n{"text": "y"}\r\n')
    with open_data([str(a), str(b)], "text", "data.train") as index:
        assert texts_of(index) == ["one", "\ttwo\twords", "three", "x", "y"]


def test_offsets_with_multibyte_text_read_back_exactly(tmp_path):
    lines = ["naïve café", "日本語のテキスト", "emoji 🎉🎉 here", "Ünïcödé " * 50, "ascii", "Ελληνικά\tκείμενο"]
    a = write(tmp_path / "a.txt", "\n".join(lines * 20) + "\n")
    recs = [{"text": t} for t in lines] + [{"query": "查询", "pos": ["正例🎉"], "neg": ["負例", "ネガ"]}]
    b = jsonl(tmp_path / "b.jsonl", recs * 5)
    with open_data([str(a), str(b)], "text", "data.train") as index:
        expected = lines * 20 + (lines + ["查询", "正例🎉", "負例", "ネガ"]) * 5
        assert texts_of(index) == expected
        # random access order does not matter
        assert [index.text(i) for i in reversed(range(len(index)))] == expected[::-1]


def test_pairs_read_and_normalised(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", [{"query": "q1", "pos": "p", "neg": "n", "extra": 1},
                                        {"query": "q2", "pos": ["a", "b"]},
                                        {"query": "q3", "pos": ["c"], "neg": []}])
    with open_data([str(path)], "pairs", "data.pairs") as index:
        assert len(index) == 3
        assert index.pair(0) == {"query": "q1", "pos": ["p"], "neg": ["n"]}
        assert index.pair(1) == {"query": "q2", "pos": ["a", "b"], "neg": []}
        assert index.pair(2) == {"query": "q3", "pos": ["c"], "neg": []}
        with pytest.raises(ValueError):
            index.text(0)
        with pytest.raises(IndexError):
            index.pair(3)


# --- finding files ------------------------------------------------------------------------------

def test_directories_recursive_sorted_and_filtered(tmp_path):
    for name in ["b.txt", "a.jsonl", "sub/c.json", "sub/deep/d.txt", "notes.md", "img.png", ".hidden/e.txt",
                 ".f.txt"]:
        write(tmp_path / "d" / name, '{"text": "x"}\n')
    found = expand_sources([str(tmp_path / "d")], "data.train")
    assert [p.relative_to(tmp_path / "d").as_posix() for p in found] == [
        "a.jsonl", "b.txt", "sub/c.json", "sub/deep/d.txt"]


def test_globs_order_and_dedup(tmp_path):
    for name in ["x/2.txt", "x/1.txt", "x/sub/3.txt", "y/0.txt"]:
        write(tmp_path / name, "t\n")
    entries = [str(tmp_path / "y" / "*.txt"), str(tmp_path / "x" / "**" / "*.txt"), str(tmp_path / "x" / "1.txt"),
               str(tmp_path / "y")]
    found = expand_sources(entries, "data.train")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["y/0.txt", "x/1.txt", "x/2.txt", "x/sub/3.txt"]


def test_literal_name_with_glob_characters(tmp_path):
    path = write(tmp_path / "part[1].txt", "t\n")
    assert expand_sources([str(path)], "data.train") == [path]


def test_missing_path_and_empty_directory_reported_together(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "empty" / "readme.md", "not data\n")
    good = write(tmp_path / "ok.txt", "fine\n")
    with pytest.raises(DataError) as excinfo:
        open_data([str(tmp_path / "nope.txt"), str(tmp_path / "*.jsonl"), str(tmp_path / "empty"), str(good)],
                  "text", "data.train")
    text = problems(excinfo)
    assert "3 problems" in text
    assert f"data.train: '{tmp_path / 'nope.txt'}' matches no file" in text
    assert f"data.train: '{tmp_path / '*.jsonl'}' matches no file" in text
    assert f"'{tmp_path / 'empty'}' is a directory with no .txt, .jsonl or .json file" in text


def test_no_patterns_is_an_error():
    with pytest.raises(DataError, match="data.pairs: no data files listed"):
        open_data([], "pairs", "data.pairs")


@pytest.mark.parametrize("content", [b"", b"\n\n   \n\r\n\t\n"])
def test_empty_or_blank_file(tmp_path, content):
    path = write(tmp_path / "e.txt", content)
    with pytest.raises(DataError) as excinfo:
        open_data([str(path)], "text", "data.train")
    assert f"data.train: {path}: no text in it (empty file?)" in problems(excinfo)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    path = write(tmp_path / "secret.txt", "x\n")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match=rf"{path}: cannot read it \(Permission denied\)"):
            open_data([str(path)], "text", "data.train")
    finally:
        path.chmod(0o644)


def test_unreadable_file_reported_even_as_root(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.txt", "x\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr("bgeprune_cli.training.data.open", refuse, raising=False)
    with pytest.raises(DataError) as excinfo:
        open_data([str(path)], "text", "data.train")
    assert f"data.train: {path}: cannot read it (Permission denied); check the path and its permissions" \
        in problems(excinfo)


def test_directory_given_to_build_index(tmp_path):
    (tmp_path / "d.txt").mkdir()
    with pytest.raises(DataError, match=r"d\.txt: cannot read it"):
        build_index([tmp_path / "d.txt"], "text", "data.train")


# --- bad lines ----------------------------------------------------------------------------------

def test_malformed_json_reports_file_and_line(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"text": "ok"}\n\n{"text": "ok"}\n{"text": "broken" "x"}\n{"text": "ok"}\n')
    with pytest.raises(DataError) as excinfo:
        open_data([str(path)], "text", "data.train")
    text = problems(excinfo)
    assert f"data.train: {path}:4: not valid JSON (Expecting ',' delimiter at column 19); fix or remove the line" \
        in text
    assert "1 problem:" in text and "no text in it" not in text


def test_non_utf8_reports_line(tmp_path):
    path = write(tmp_path / "a.txt", "ok\nok\n".encode() + b"caf\xe9\n" + b"ok\n")
    with pytest.raises(DataError) as excinfo:
        open_data([str(path)], "text", "data.train")
    assert f"{path}:3: not valid UTF-8 (bad byte at position 4 of the line); re-save the file as UTF-8" \
        in problems(excinfo)


@pytest.mark.parametrize("line, expected", [
    ('["a", "b"]', "got an array"),
    ('"just a string"', "got a string"),
    ('{"title": "x"}', "got an object without either key"),
    ('{"text": ""}', '"text" must be a non-empty string, got a string'),
    ('{"text": "   "}', '"text" must be a non-empty string'),
    ('{"text": 3}', '"text" must be a non-empty string, got a number'),
    ('{"query": null}', '"query" must be a non-empty string, got null'),
    ('{"query": "q", "pos": [1]}', '"pos" must be a non-empty string or a non-empty list'),
    ('{"query": "q", "neg": {"a": 1}}', '"neg" must be a non-empty string or a non-empty list'),
])
def test_wrong_schema_in_train(tmp_path, line, expected):
    path = write(tmp_path / "a.jsonl", '{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataError) as excinfo:
        open_data([str(path)], "text", "data.train")
    text = problems(excinfo)
    assert f"data.train: {path}:2: " in text and expected in text and "fix or remove the line" in text


@pytest.mark.parametrize("record, expected", [
    ({"text": "not a pair"}, '"query" must be a non-empty string, got null'),
    ({"query": "", "pos": ["p"]}, '"query" must be a non-empty string'),
    ({"query": "q"}, '"pos" must be a non-empty string or a non-empty list of non-empty strings, got null'),
    ({"query": "q", "pos": []}, '"pos" must be'),
    ({"query": "q", "pos": ["p", ""]}, '"pos" must be'),
    ({"query": "q", "pos": "p", "neg": [None]}, '"neg" must be'),
    ({"query": "q", "pos": "p", "neg": 5}, '"neg" must be'),
    ([1, 2], 'expected a JSON object with "query" and "pos", got an array'),
])
def test_pairs_validation(tmp_path, record, expected):
    path = jsonl(tmp_path / "p.jsonl", [PAIRS[0], record])
    with pytest.raises(DataError) as excinfo:
        open_data([str(path)], "pairs", "data.pairs")
    text = problems(excinfo)
    assert f"data.pairs: {path}:2: " in text and expected in text


def test_text_file_in_pairs(tmp_path):
    path = write(tmp_path / "p.txt", "query\tpassage\n")
    with pytest.raises(DataError, match=r"p\.txt: pairs must be JSONL with query/pos/neg"):
        open_data([str(path)], "pairs", "data.pairs")


def test_problems_across_files_capped_at_20(tmp_path):
    a = write(tmp_path / "a.jsonl", "not json\n" * 15)
    b = write(tmp_path / "b.txt", b"\xff\n" * 15)
    with pytest.raises(DataError) as excinfo:
        open_data([str(a), str(b), str(tmp_path / "missing")], "text", "data.train")
    lines = problems(excinfo).splitlines()
    assert lines[0] == "training data has 31 problems:"
    assert len(lines) == 1 + 20 + 1 and lines[-1].strip() == "... and 11 more"
    assert "'" + str(tmp_path / "missing") + "' matches no file" in lines[1]  # finding files comes first
    assert f"{a}:15:" in lines[16] and f"{b}:4:" in lines[20]
    assert len(excinfo.value.problems) == 20


# --- streaming ----------------------------------------------------------------------------------

def test_index_streams_large_file(tmp_path):
    line = ("grüße ünïcödé " * 70 + "\n").encode()  # ~1 KB per line
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        for i in range(20_000):
            handle.write(b"%d " % i + line)
    size = path.stat().st_size
    assert size > 20_000_000
    tracemalloc.start()
    try:
        index = build_index([path], "text", "data.train")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 0.25 * size, f"peak {peak} bytes for a {size}-byte file"
    with index:
        assert len(index) == 20_000
        assert index.text(12_345) == "12345 " + line.decode().rstrip("\n")
        assert index.text(19_999).startswith("19999 grüße")


# --- batches ------------------------------------------------------------------------------------

@pytest.fixture()
def text_index(tmp_path):
    path = write(tmp_path / "t.txt", "".join(f"text {i}\n" for i in range(23)))
    with open_data([str(path)], "text", "data.train") as index:
        yield index


def epoch_of(batches: Batches, n: int) -> list[str]:
    out = []
    while len(out) < n:
        out += batches.next_texts()
    return out[:n]


def test_shuffle_deterministic_per_seed(text_index):
    first = [Batches(text_index, 5, seed=1).next_texts() for _ in range(2)]
    assert first[0] == first[1]
    assert Batches(text_index, 5, seed=2).next_texts() != first[0]
    assert first[0] != [f"text {i}" for i in range(5)]


def test_every_item_once_per_epoch_and_crossing_epochs(text_index):
    batches = Batches(text_index, 4, seed=3)
    seen = []
    for _ in range(23):  # 92 items = 4 epochs exactly
        batch = batches.next_texts()
        assert len(batch) == 4  # never short, even across the epoch end
        seen += batch
    for epoch in range(4):
        assert Counter(seen[epoch * 23:(epoch + 1) * 23]) == Counter(f"text {i}" for i in range(23))
    assert seen[:23] != seen[23:46]  # a new permutation each epoch
    assert batches.epoch == 4 and batches.position == 0 and batches.epoch_progress == 4.0


def test_batch_crossing_epoch_boundary(text_index):
    batches = Batches(text_index, 10, seed=0)
    batches.next_texts(), batches.next_texts()
    assert batches.state_dict()["position"] == 20
    crossing = batches.next_texts()
    assert batches.epoch == 1 and batches.position == 7
    assert batches.epoch_progress == pytest.approx(1 + 7 / 23)
    fresh = Batches(text_index, 23, seed=0)
    assert crossing == fresh.next_texts()[20:] + fresh.next_texts()[:7]


def test_smaller_than_batch_wraps(tmp_path):
    path = write(tmp_path / "t.txt", "a\nb\nc\n")
    with open_data([str(path)], "text", "data.train") as index:
        batches = Batches(index, 8, seed=0)
        batch = batches.next_texts()
        assert len(batch) == 8 and set(batch) == {"a", "b", "c"}
        assert Counter(batch[:6]) == Counter("aabbcc")
        assert batches.epoch == 2 and batches.position == 2


def test_resume_gives_identical_continuation(text_index):
    original = Batches(text_index, 6, seed=7)
    for _ in range(5):
        original.next_texts()
    state = json.loads(json.dumps(original.state_dict()))  # survives a JSON round trip
    assert state == {"epoch": 1, "position": 7, "seed": 7, "batch_size": 6, "fingerprint": text_index.fingerprint}
    expected = [original.next_texts() for _ in range(10)]
    resumed = Batches(text_index, 6, seed=0)
    resumed.load_state_dict(state)
    assert [resumed.next_texts() for _ in range(10)] == expected


def test_fingerprint_changes_with_content_and_resume_refuses(tmp_path):
    path = write(tmp_path / "t.txt", "a\nb\nc\n")
    with open_data([str(path)], "text", "data.train") as index:
        state = Batches(index, 2).state_dict()
        same = open_data([str(path)], "text", "data.train")
        assert same.fingerprint == index.fingerprint
        same.close()
    write(path, "a\nb\nC\n")
    with open_data([str(path)], "text", "data.train") as changed:
        assert changed.fingerprint != state["fingerprint"]
        with pytest.raises(DataError, match="data changed since the checkpoint"):
            Batches(changed, 2).load_state_dict(state)
    with open_data([str(path)], "text", "data.train") as again:
        assert again.fingerprint == changed.fingerprint


def test_file_changed_under_a_live_index(tmp_path):
    path = jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"query": "q", "pos": ["p1", "p2"]}])
    with open_data([str(path)], "text", "data.train") as index:
        assert len(index) == 4
        write(path, '{"text": "one"}\n{"text": "shorter"}\n')
        assert index.text(0) == "one"
        with pytest.raises(DataError, match=r"a\.jsonl: changed or gone since it was indexed"):
            index.text(3)
        index.close()
        path.unlink()
        with pytest.raises(DataError, match="changed or gone"):
            index.text(0)


def test_fingerprint_depends_on_kind_and_files(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", PAIRS)
    b = jsonl(tmp_path / "b.jsonl", PAIRS)
    prints = {open_data([str(a)], "text", "k").fingerprint, open_data([str(a)], "pairs", "k").fingerprint,
              open_data([str(a), str(b)], "pairs", "k").fingerprint,
              open_data([str(b), str(a)], "pairs", "k").fingerprint}
    assert len(prints) == 4


def test_bad_state_rejected(text_index):
    state = Batches(text_index, 2).state_dict()
    with pytest.raises(DataError, match="invalid"):
        Batches(text_index, 2).load_state_dict({**state, "position": 23})


def test_pairs_batches_deterministic_across_resume(tmp_path):
    records = PAIRS + [{"query": "lonely", "pos": "only positive"}]
    path = jsonl(tmp_path / "p.jsonl", records)
    with open_data([str(path)], "pairs", "data.pairs") as index:
        stream = Batches(index, 4, seed=5)
        stream.next_pairs()
        state = stream.state_dict()
        expected = [stream.next_pairs() for _ in range(8)]
        resumed = Batches(index, 4, seed=0)
        resumed.load_state_dict(state)
        assert [resumed.next_pairs() for _ in range(8)] == expected

        by_query = {r["query"]: r for r in records}
        picked_pos, picked_neg = set(), set()
        for queries, positives, negatives in expected:
            assert len(queries) == len(positives) == 4
            assert len(negatives) == sum(q != "lonely" for q in queries)
            for q, p in zip(queries, positives):
                assert p in ([by_query[q]["pos"]] if isinstance(by_query[q]["pos"], str) else by_query[q]["pos"])
            picked_pos.update(positives)
            picked_neg.update(negatives)
        assert len(picked_pos) > 11 and len(picked_neg) > 10  # choices vary, not always the first
        assert Batches(index, 4, seed=6).next_pairs() != Batches(index, 4, seed=5).next_pairs()


def test_batches_reject_wrong_use(text_index):
    with pytest.raises(ValueError):
        Batches(text_index, 0)
    with pytest.raises(ValueError):
        Batches(text_index, 2).next_pairs()
    empty = build_index([], "text", "data.train")
    with pytest.raises(DataError, match="no items"):
        Batches(empty, 2)


# ---------------------------------------------------------------- passages too long to tokenize whole


def test_a_huge_line_is_cut_before_tokenizing_with_one_warning_naming_file_and_line(tmp_path):
    from bgeprune_cli.models.loading import load_tokenizer, resolve_base
    from bgeprune_cli.training.passages import passage_limit

    huge = " ".join(["pruning keeps the tokens that matter"] * 300_000)  # about 11 MB on one line
    path = tmp_path / "corpus.txt"
    path.write_text("a short first line\nanother\n" + huge + "\nlast line, also " + "long " * 300 + "\n")
    warnings: list[str] = []
    with open_data([str(path)], "text", "data.train") as index:
        index.cut_passages(64, warnings.append)
        texts = [index.text(i) for i in range(len(index))]
    limit = passage_limit(64)
    assert texts[:2] == ["a short first line", "another"] and len(texts[2]) <= limit
    assert huge.startswith(texts[2]) and not texts[2].endswith(" pru")  # cut at a space, no word split
    assert len(warnings) == 1 and f"{path}:3:" in warnings[0] and "was cut to" in warnings[0]
    tokenizer = load_tokenizer(resolve_base("builtin:tiny-xlm-roberta"))
    for full, cut in zip([huge[:200_000], "last line, also " + "long " * 300], texts[2:]):
        assert tokenizer(full, truncation=True, max_length=64)["input_ids"] == \
            tokenizer(cut, truncation=True, max_length=64)["input_ids"]  # the cut changes no kept token


def test_pairs_are_cut_too(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"query": "q", "pos": ["x " * 50_000], "neg": ["n"]}) + "\n")
    warnings: list[str] = []
    with open_data([str(path)], "pairs", "data.pairs") as index:
        index.cut_passages(32, warnings.append)
        pair = index.pair(0)
    assert pair["query"] == "q" and len(pair["pos"][0]) <= 1024 and pair["neg"] == ["n"] and len(warnings) == 1
