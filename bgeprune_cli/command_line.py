"""The command line that reproduces (or continues) a run, rebuilt from its options.

bench records the command behind each report, and train prints the command that resumes an
interrupted run; both spell their options through `command_line`, so quoting and the rules for
flags are one piece of code.

Example:
    python -c "from bgeprune_cli.command_line import command_line; \
print(command_line(['bgeprune', 'train', 'r.toml'], [('--set', ['a=1', 'b=2']), ('--resume', True)]))"
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

Flag = tuple[str, object]


def command_line(words: Iterable[str | Path], flags: Iterable[Flag] = ()) -> str:
    """`words`, then each flag by its value: None, False or an empty list leave the flag out, True writes
    it alone, a list repeats it once per item, anything else is its value (quoted for a POSIX shell)."""
    out = [str(w) for w in words]
    for flag, value in flags:
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, list):
            out += [w for item in value for w in (flag, str(item))]
        else:
            out += [flag, str(value)]
    return shlex.join(out)


def comma_list(values: Iterable[object] | None) -> str | None:
    """A comma-separated option value (`--batch-sizes 1,32`); None when there is nothing to list."""
    values = list(values or [])
    return ",".join(map(str, values)) if values else None
