"""Error types that carry their exit code (docs/design.md, Conventions), so `cli.py` maps them in one place.

Every message says what went wrong, where, and what to do next. `os_error_in` finds the operating
system's error behind a library's exception (safetensors and torch.save report a full disk in their
own words), so an I/O failure is always reported as one, never as an internal error.
"""

from __future__ import annotations

import errno
import re


class BgepruneError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 1


class CheckFailed(BgepruneError):
    """A verification or numerical check did not pass."""

    exit_code = 1


class UsageError(BgepruneError):
    """Bad command-line usage or a bad recipe."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe problem; `problems` holds every `file:line: key: message` found at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("recipe is invalid:\n  " + "\n  ".join(problems))


class Busy(UsageError):
    """Another bgeprune process is writing the same run or output directory."""


class ArtifactError(BgepruneError):
    """An artifact directory is missing, of the wrong kind, corrupt or tampered with."""

    exit_code = 3


class BadModelFiles(BgepruneError):
    """A model directory's own files (config, weights, sentence-transformers files) are unusable."""

    exit_code = 3


class EnvironmentProblem(BgepruneError):
    """Something outside the inputs is missing or failing: a model that cannot be fetched, no GPU, a
    package, a full disk, a read-only or forbidden location."""

    exit_code = 4


class DataError(UsageError):
    """Training data that is missing, empty, unreadable or malformed (named with file and line)."""


# Import names whose PyPI distribution is called otherwise.
_DISTRIBUTION_OF = {"google": "protobuf", "yaml": "pyyaml", "sklearn": "scikit-learn", "PIL": "pillow"}


def missing_module(exc: ImportError, needed_for: str) -> EnvironmentProblem:
    """Exit 4 naming the module that actually failed to import (not the package that imported it) and
    the install line that brings it."""
    named = re.search(r"No module named '([^']+)'", str(exc))
    module = exc.name or (named.group(1) if named else str(exc))
    package = _DISTRIBUTION_OF.get(module.split(".")[0], module.split(".")[0])
    return EnvironmentProblem(f"{needed_for} needs the Python module '{module}' (package {package}), which is not "
                              f"installed. bgeprune's own install brings it: reinstall it (`pip install -e .` in "
                              f"its checkout), or run `pip install {package}`.")


_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")  # how Rust libraries (safetensors, tokenizers) word it


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind `exc`: itself, one in its cause/context chain, or one a Rust library named."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        match = _OS_ERROR_IN_TEXT.search(str(exc))
        if match:
            code = int(match.group(1))
            return OSError(code, _strerror(code))
        exc = exc.__cause__ or exc.__context__
    return None


def _strerror(code: int) -> str:
    import os

    return os.strerror(code)


_ADVICE = {
    errno.ENOSPC: "free some space there or choose another location",
    errno.EDQUOT: "your disk quota is used up; free some space or choose another location",
    errno.EFBIG: "the file size limit (ulimit -f) or the filesystem's limit was reached; raise it or choose "
                 "another location",
    errno.EROFS: "that filesystem is read-only; choose a writable location",
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.ENOENT: "check the path",
    errno.EIO: "the disk reported an I/O error; check the device",
}


def environment_error(error: OSError, doing: str) -> EnvironmentProblem:
    """An EnvironmentProblem (exit 4) for an OSError met while `doing` (e.g. "writing runs/x/pruned")."""
    where = f" ({error.filename})" if getattr(error, "filename", None) else ""
    advice = _ADVICE.get(error.errno, "check the location and try again")
    return EnvironmentProblem(f"{doing} failed{where}: {error.strerror or error}; {advice}.")
