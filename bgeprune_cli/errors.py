"""Error types that carry their exit code (DESIGN.md §8), so `cli.py` maps them in one place.

Every message says what went wrong, where, and what to do next.
"""


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


class ArtifactError(BgepruneError):
    """An artifact directory is missing, of the wrong kind, corrupt or tampered with."""

    exit_code = 3


class EnvironmentProblem(BgepruneError):
    """Something outside the inputs is missing: a model that cannot be fetched, no GPU, a package."""

    exit_code = 4


class DataError(UsageError):
    """Training data that is missing, empty, unreadable or malformed (named with file and line)."""
