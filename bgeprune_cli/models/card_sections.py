"""Sections of a model card that a later stage rewrites: each sits between two HTML comments named for it
(`<!-- bgeprune:NAME -->` ... `<!-- /bgeprune:NAME -->`), so writing it again replaces it and nothing else.

Example:
    card = with_section(card, "serving", ["## Serving\\n", "..."])
"""

from __future__ import annotations


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bgeprune:{name} -->", f"<!-- /bgeprune:{name} -->"


def section_block(name: str, lines: list[str]) -> str:
    begin, end = markers(name)
    return "\n".join([begin, *lines, end])


def with_section(card: str, name: str, lines: list[str]) -> str:
    """`card` with section NAME replaced where it was, else appended at the end."""
    begin, end = markers(name)
    block = section_block(name, lines)
    if begin in card and end in card:
        start, stop = card.index(begin), card.index(end) + len(end)
        return card[:start] + block + card[stop:]
    return card.rstrip("\n") + "\n\n" + block + "\n"
