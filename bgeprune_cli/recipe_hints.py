"""What a recipe error adds so the user can fix it without reading the schema: the nearest valid key for
a misspelt one, and for a value of the wrong type the type wanted with an example in the form the user
wrote it in (`--set key=value`, or `key = value` in the file).

Example:
    bgeprune check recipes/smoke.toml --set train.step=10     # ... unknown key; did you mean train.steps?
"""

from __future__ import annotations

import difflib
import types
import typing

from pydantic import BaseModel

# What each scalar type is called in a message, and a value of it as TOML writes it.
_SCALARS = {int: ("an integer", "10"), float: ("a number", "0.5"), bool: ("true or false", "true"),
            str: ("a string", '"text"')}


def _section(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The model class that holds the last key of `loc` (None when the path leaves the schema)."""
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of tables ([[data.stream]])
            continue
        field = model.model_fields.get(str(part))
        inner = _model_in(field.annotation) if field else None
        if inner is None:
            return None
        model = inner
    return model


def _model_in(annotation) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def nearest_key(model: type[BaseModel], loc: tuple) -> str | None:
    """The valid dotted key closest to a misspelt one, if any is close."""
    section = _section(model, loc)
    if section is None:
        return None
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    if not close:
        return None
    return ".".join([*(str(p) for p in loc[:-1] if not isinstance(p, int)), close[0]])


def _describe(annotation) -> tuple[str, str] | None:
    """(what it is, a TOML example) for a field's annotation, or None for anything unusual."""
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        described = [d for d in map(_describe, [a for a in args if a is not type(None)]) if d]
        return described[0] if described else None
    if origin is list and args and args[0] in _SCALARS:
        name, example = _SCALARS[args[0]]
        return f"a list of {name.removeprefix('an ').removeprefix('a ')}s", f"[{example}]"
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args)), f'"{args[0]}"'
    return None


def type_hint(model: type[BaseModel], loc: tuple, via_set: bool) -> str:
    """`; expected ..., e.g. ...` for the field at `loc`, or "" when the schema does not say simply."""
    section = _section(model, loc)
    field = section.model_fields.get(str(loc[-1])) if section else None
    described = _describe(field.annotation) if field else None
    if described is None:
        return ""
    name, example = described
    key = ".".join(str(p) for p in loc if not isinstance(p, int))
    if str(loc[-1]) in ("train", "pairs", "translations", "corpus") and example == '["text"]':
        example = '["data.txt"]'
    shown = f"--set {key}='{example}'" if via_set else f"{loc[-1]} = {example}"
    return f"; expected {name}, e.g. {shown}"
