"""Teacher cache: bitwise round trips, keyed folders, repair of damaged files, several writers."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
import torch
from safetensors.torch import save_file

from bgeprune_cli.training import teacher_cache
from bgeprune_cli.training.teacher_cache import TeacherCache, TeacherCacheError, file_fingerprint, text_key

KEY = {"teacher": "abc", "tokenizer": "def", "max_length": 16, "fields": ["colbert", "embedding", "sparse"],
       "dtype": "bf16", "format": teacher_cache.FORMAT}


def outputs(texts: list[str], seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per-text outputs of varying length (one of length 0), with NaN and -0.0 so equality must be bitwise."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, _ in enumerate(texts):
        length = i % 5 + 1
        emb = torch.randn(8, generator=gen)
        emb[0] = float("nan") if i % 2 else -0.0
        out.append({"embedding": emb, "sparse": torch.rand(length, generator=gen),
                    "colbert": torch.randn(length - 1, 4, generator=gen).bfloat16()})
    return out


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[f].dtype == b[f].dtype and a[f].shape == b[f].shape
        and torch.equal(a[f].flatten().view(torch.uint8), b[f].flatten().view(torch.uint8)) for f in a)


def texts(n: int, prefix: str = "text") -> list[str]:
    return [f"{prefix} {i} é" for i in range(n)]


class Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def shards(cache: TeacherCache) -> list:
    return sorted(cache.path.glob("shard-*.safetensors"))


def test_round_trip_is_bitwise_across_flush_and_instances(tmp_path):
    t, o = texts(7), outputs(texts(7))
    with TeacherCache(tmp_path, KEY, shard_entries=100) as cache:
        cache.put(t[:4], o[:4])
        assert all(map(same, cache.get(t[:4]), o[:4])) and not shards(cache)  # served from the buffer
        cache.flush()
        cache.put(t[4:], o[4:])
        assert len(cache) == 7 and len(shards(cache)) == 1
        got = cache.get(t)
        assert all(map(same, got, o))
        got[0]["embedding"].zero_()  # callers may modify what they get
        assert same(cache.get(t[:1])[0], o[0])
    again = TeacherCache(tmp_path, KEY)
    assert len(again) == 7 and len(shards(again)) == 2
    assert all(map(same, again.get(list(reversed(t))), reversed(o)))
    assert (again.hits, again.misses) == (7, 0)
    assert json.loads((again.path / "key.json").read_text()) == KEY


def test_partial_hit_gives_none_for_missing_texts_and_counts(tmp_path):
    cache = TeacherCache(tmp_path, KEY)
    cache.put(texts(3), outputs(texts(3)))
    assert [e is None for e in cache.get(texts(3) + ["new one", "new two"])] == [False] * 3 + [True] * 2
    assert (cache.hits, cache.misses) == (3, 2)
    assert None not in cache.get(texts(2))
    assert (cache.hits, cache.misses) == (5, 2)
    cache.put(texts(3), outputs(texts(3), seed=1))  # already cached: skipped, not overwritten
    cache.close()
    assert cache.stored == 3 and same(cache.get(texts(1))[0], outputs(texts(1))[0])


def test_other_key_uses_other_folder(tmp_path):
    with TeacherCache(tmp_path, KEY) as cache:
        cache.put(texts(2), outputs(texts(2)))
    other = TeacherCache(tmp_path, {**KEY, "max_length": 32})
    assert other.path != cache.path and len(other) == 0 and other.get(texts(2)) == [None, None]


def test_edited_key_json_empties_the_cache(tmp_path):
    with TeacherCache(tmp_path, KEY) as cache:
        cache.put(texts(2), outputs(texts(2)))
    (cache.path / "key.json").write_text(json.dumps({**KEY, "teacher": "edited"}))
    warned = Warnings()
    again = TeacherCache(tmp_path, KEY, warn=warned)
    assert len(warned) == 1 and "key.json" in warned[0] and "1 shard" in warned[0]
    assert len(again) == 0 and not shards(again) and again.get(texts(2)) == [None, None]
    assert json.loads((again.path / "key.json").read_text()) == KEY


def test_truncated_and_foreign_shards_are_deleted(tmp_path):
    with TeacherCache(tmp_path, KEY, shard_entries=2) as cache:
        cache.put(texts(6), outputs(texts(6)))
    first, second, third = shards(cache)
    first.write_bytes(first.read_bytes()[:-7])
    tensors = {"embedding": torch.zeros(1, 8), "embedding.lengths": torch.ones(1, dtype=torch.int64)}
    save_file(tensors, second, metadata={"format": teacher_cache.FORMAT, "key": "0" * 64,
                                         "texts": json.dumps([text_key("x")]), "fields": '["embedding"]'})
    warned = Warnings()
    again = TeacherCache(tmp_path, KEY, warn=warned)
    assert len(warned) == 2
    assert any(first.name in w and "cannot be parsed" in w for w in warned)
    assert any(second.name in w and "was written for key" in w for w in warned)
    assert shards(again) == [third] and len(again) == 2
    assert again.get(texts(6)).count(None) == 4 and (again.hits, again.misses) == (2, 4)


def test_lengths_that_do_not_add_up_and_other_fields_are_deleted(tmp_path):
    with TeacherCache(tmp_path, KEY) as cache:
        cache.put(texts(2), outputs(texts(2)))
    meta = {"format": teacher_cache.FORMAT, "key": cache._hash, "texts": json.dumps([text_key("x")])}
    save_file({"sparse": torch.zeros(3), "sparse.lengths": torch.tensor([2])},
              cache.path / "shard-9-1-a.safetensors", metadata={**meta, "fields": '["sparse"]'})
    save_file({"embedding": torch.zeros(8), "embedding.lengths": torch.tensor([8])},
              cache.path / "shard-9-2-b.safetensors", metadata={**meta, "fields": '["embedding"]'})
    warned = Warnings()
    again = TeacherCache(tmp_path, KEY, warn=warned)
    assert len(shards(again)) == 1 and len(again) == 2 and len(warned) == 2
    assert any("shard-9-1-a" in w and "adding up to 2 rows" in w for w in warned)
    assert any("shard-9-2-b" in w and "has fields ['embedding']" in w for w in warned)


def test_shard_damaged_or_vanished_after_indexing_misses(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_cache, "_MAX_HANDLES", 0)  # reopen on every read, as after LRU eviction
    with TeacherCache(tmp_path, KEY, shard_entries=2) as cache:
        cache.put(texts(4), outputs(texts(4)))
    warned = Warnings()
    again = TeacherCache(tmp_path, KEY, warn=warned)
    first, second = shards(again)
    first.unlink()
    second.write_bytes(b"garbage")
    assert again.get(texts(4)) == [None] * 4 and (again.hits, again.misses) == (0, 4)
    assert again.get(texts(4)[2:]) == [None, None] and (again.hits, again.misses) == (0, 6)
    assert len(warned) == 2 and "vanished" in warned[0] and "could not be read" in warned[1]
    assert len(again) == 0 and not shards(again)


def test_two_writers_share_a_folder(tmp_path):
    a = TeacherCache(tmp_path, KEY, writer="0")
    b = TeacherCache(tmp_path, KEY, writer="1")
    a.put(texts(3, "a"), outputs(texts(3, "a")))
    b.put(texts(2, "b"), outputs(texts(2, "b")))
    b.put(texts(1, "a"), outputs(texts(1, "a")))  # both compute it; b's copy goes once a's is seen
    a.close()
    assert len(b) == 3
    b.refresh()
    assert len(b) == 5
    b.close()
    assert len(shards(a)) == 2 and {p.name.split("-")[1] for p in shards(a)} == {"0", "1"}
    got = a.get(texts(2, "b"))  # a miss refreshes before giving up
    assert got is not None and all(map(same, got, outputs(texts(2, "b"))))
    assert (a.hits, a.misses) == (2, 0) and len(a) == 5


def test_auto_flush_at_shard_entries(tmp_path):
    cache = TeacherCache(tmp_path, KEY, shard_entries=3)
    cache.put(texts(2), outputs(texts(2)))
    assert not shards(cache) and cache.stored == 0
    cache.put(texts(7), outputs(texts(7)))
    assert len(shards(cache)) == 2 and cache.stored == 6 and len(cache) == 7
    cache.close()
    assert len(shards(cache)) == 3 and cache.stored == 7


def test_temp_files_are_ignored_and_stale_ones_removed(tmp_path):
    cache = TeacherCache(tmp_path, KEY)
    fresh, stale = cache.path / ".tmp-fresh.safetensors", cache.path / ".tmp-stale.safetensors"
    fresh.write_bytes(b"in progress")
    stale.write_bytes(b"crashed")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    warned = Warnings()
    TeacherCache(tmp_path, KEY, warn=warned)
    assert fresh.exists() and not stale.exists() and not warned


def test_mismatched_outputs_and_unusable_root_raise(tmp_path):
    cache = TeacherCache(tmp_path / "cache", KEY)
    cache.put(["a"], outputs(["a"]))
    wrong = outputs(["b"])[0]
    wrong["colbert"] = wrong["colbert"].float()
    with pytest.raises(ValueError, match="colbert"):
        cache.put(["b"], [wrong])
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(TeacherCacheError) as info:
        TeacherCache(tmp_path / "file", KEY)
    assert info.value.exit_code == 3


def test_file_fingerprint_sees_one_byte(tmp_path):
    big, small = tmp_path / "model.safetensors", tmp_path / "tokenizer.json"
    big.write_bytes(bytes(range(256)) * 6000)  # more than one 1 MiB chunk
    small.write_text("{}")
    before = file_fingerprint([big, small])
    assert before == file_fingerprint([big, small]) != file_fingerprint([small, big])
    renamed = tmp_path / "vocab.json"
    renamed.write_text("{}")
    assert file_fingerprint([big, renamed]) != before  # the name counts, the folder does not
    data = bytearray(big.read_bytes())
    data[-3] ^= 1
    big.write_bytes(bytes(data))
    changed = file_fingerprint([big, small])
    assert changed != before
    (tmp_path / "moved").mkdir()
    assert file_fingerprint([big, small.rename(tmp_path / "moved" / small.name)]) == changed
    assert text_key("é") == hashlib.sha256("é".encode()).hexdigest() != text_key("e")


@pytest.mark.parametrize("weights, heads, types", [
    ({}, False, ["layer"]), ({}, True, ["layer"]), ({"sparse": 0.0}, True, ["ffn"]), ({"colbert": 0.0}, True, []),
    ({"tokens": 1.0}, True, ["heads"]), ({"tokens": 1.0}, False, ["hidden"]), ({"sparse": 0, "colbert": 0}, True, []),
])
def test_what_the_teacher_computes_is_what_the_cache_key_names(weights, heads, types, builtin_cache):
    """One decision (TeacherNeeds) for the cache key and the teacher: the entries a teacher writes have
    exactly the fields its key names, for every combination of losses, heads and pruned axes."""
    from bgeprune_cli.config import DistillSection
    from bgeprune_cli.models import m3
    from bgeprune_cli.models.loading import load_model, load_tokenizer, resolve_base
    from bgeprune_cli.models.st_files import read_pooling
    from bgeprune_cli.training.distill_model import Teacher, TeacherNeeds

    base = resolve_base("builtin:tiny-bge-m3")
    distill = DistillSection(**weights)
    needs = TeacherNeeds.of(distill, heads, types)
    teacher = Teacher(load_model(base), m3.load_heads(base) if heads else None, read_pooling(base), needs,
                      torch.device("cpu"))
    batch = dict(load_tokenizer(base)(["one text", "and another, longer one"], padding=True, return_tensors="pt"))
    entries = teacher._to_entries(teacher._forward(batch), batch["attention_mask"])
    assert all(sorted(entry) == sorted(needs.cache_fields) for entry in entries)
    assert ("sparse" in needs.cache_fields) == (heads and distill.sparse > 0)
    assert ("tokens" in needs.cache_fields) == (distill.tokens > 0 and "hidden" not in types)
