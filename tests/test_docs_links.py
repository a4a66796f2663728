"""Every relative link in README.md and docs/*.md resolves: the file exists (relative to the page that links
to it) and a `#anchor` names a heading of the target page, by GitHub's slug rules. Links in fenced code
blocks and code spans are not links and are skipped; http(s):// and mailto: links are not checked."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
            fence = None
        elif fence is None:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lowercased, punctuation dropped except '-' and '_',
    spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found, counts = set(), {}
    for _, line in prose_lines(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = counts.get(base, 0)
            counts[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not SCHEME.match(target):
                found.append((number, target))
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(root)}:{number}: ({target})"
        if not dest.exists():
            problems.append(f"{where}: {path} does not exist")
        elif anchor:
            if dest.suffix != ".md" or dest.is_dir():
                problems.append(f"{where}: #{anchor} points into {path}, which is not a markdown page")
            elif anchor not in anchors(dest):
                problems.append(f"{where}: {path or page.name} has no heading with the anchor #{anchor}")
    return problems


def test_slugs_follow_githubs_rules():
    assert slug("Keeping your index: when you can skip re-indexing") == \
        "keeping-your-index-when-you-can-skip-re-indexing"
    assert slug("Quality levers, one at a time (all-MiniLM-L6-v2 at 50%)") == \
        "quality-levers-one-at-a-time-all-minilm-l6-v2-at-50"
    assert slug("Benchmarking: `bgeprune bench`") == "benchmarking-bgeprune-bench"
    assert slug("bge-m3's three modes: dense, sparse and ColBERT") == "bge-m3s-three-modes-dense-sparse-and-colbert"
    assert slug("Quickstart (offline, about a minute on 2 CPU cores)") == \
        "quickstart-offline-about-a-minute-on-2-cpu-cores"
    assert slug("overhead_train_step and [a link](x.md)") == "overhead_train_step-and-a-link"


def test_links_in_code_are_skipped_and_broken_ones_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## A section: here\n\n## A section: here\n")
    page.write_text("# Page\n\n[ok](other.md#a-section-here) [second](other.md#a-section-here-1) [self](#page)\n"
                    "[web](https://example.com/nothing.md) `[code](missing.md)`\n"
                    "```\n[fenced](missing.md)\n```\n"
                    "[gone](missing.md) [bad anchor](other.md#nowhere)\n")
    found = [t for _, t in links(page)]
    assert found == ["other.md#a-section-here", "other.md#a-section-here-1", "#page", "missing.md",
                     "other.md#nowhere"]
    problems = broken_links(page, root=tmp_path)
    assert len(problems) == 2 and "missing.md does not exist" in problems[0] and "#nowhere" in problems[1], problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)
