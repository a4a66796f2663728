"""`bgeprune push`: upload an export to the Hugging Face Hub, only once it passes verify's static checks.

Before anything leaves the machine (docs/publishing.md, Push):
  - OUT is an `hf-model` artifact (the checked reader: no manifest or another kind is exit 3), not one
    written with `export-hf --local-paths`, whose files name this machine's paths (exit 2);
  - it passes verify's static checks (verification/static_checks.py: files, manifest hashes, finite
    weights, config against tensor shapes, identity placeholders, the fields serving engines read,
    bge-m3's head files); a failure is exit 1, naming each failed check;
  - every file it would upload is one the manifest lists (or the manifest itself), listed with the Hub's
    own ignore rule, so nothing goes out that nothing vouches for.
Holding the export's lock (no export-hf --force or export-onnx changes it between the checks and the
upload), it creates the repo if it does not exist (`--private` only applies then), creates the
`--revision` branch if it does not exist, as `hf upload` does, and uploads the whole folder in one
`upload_folder` call, which resumes when the same command runs again. The Hub's errors (no token,
refused, unreachable) are exit 4 with what to do next; nothing else is caught.

Tests replace `_hub_api` with a fake: the upload itself is never exercised offline.

Example:
    bgeprune push out/bge-m3-50pct your-name/bge-m3-50pct --private
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..artifacts import read_artifact
from ..atomic import real_output
from ..errors import BgepruneError, CheckFailed, EnvironmentProblem, UsageError, environment_error, os_error_in
from ..filenames import MANIFEST
from ..locks import exclusive, lock_path_for
from ..ui import step
from ..verification.lineage import read_lineage
from ..verification.static_checks import static_checks

DEFAULT_MESSAGE = f"Upload a pruned model exported by bgeprune {__version__}"
# Where a transport's own exceptions come from (the Hub client moved from requests to httpx to httpx2):
# matched by module so no version of it has to be imported here.
_TRANSPORTS = {"requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2", "hf_xet"}


def run(export: Path, *, repo_id: str, private: bool = False, revision: str | None = None, create_pr: bool = False,
        commit_message: str | None = None, token: str | None = None) -> dict:
    """Upload the export `export` to the Hub model repo `repo_id` (see the module docstring for the order)."""
    _check_options(repo_id, revision, create_pr)
    out = read_artifact(export, "hf-model", needed_by="push").path  # not an export: exit 3 before the lock
    with exclusive(lock_path_for(real_output(out)), str(out)):
        artifact = read_artifact(out, "hf-model", needed_by="push")  # as it is now that we hold the lock
        files = _publishable(out, artifact)
        api = _hub_api(token)
        with step(f"uploading {len(files)} files of {out} to {repo_id}"):
            repo_id, commit = _upload(api, out, repo_id, private, revision, create_pr, commit_message)
    pr_url = getattr(commit, "pr_url", None)
    return {"export": str(out), "repo_id": repo_id, "url": pr_url or commit.commit_url,
            "commit_url": commit.commit_url, "pr_url": pr_url, "oid": commit.oid,
            "revision": getattr(commit, "pr_revision", None) or revision or "main", "files": len(files),
            "paths": files}


def _check_options(repo_id: str, revision: str | None, create_pr: bool) -> None:
    """What the Hub client would refuse only after the checks (or, for some versions, not at all)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UsageError(f"{repo_id!r} is not a Hub repo id ({exc}); give NAME or NAMESPACE/NAME, e.g. "
                         f"your-name/bge-m3-50pct") from None
    if create_pr and revision not in (None, "main"):
        raise UsageError(f"--create-pr opens a pull request against main, so it takes no --revision "
                         f"({revision!r}); to add a commit to an open pull request, pass --revision refs/pr/N "
                         f"without --create-pr")


def upload_list(out: Path) -> list[str]:
    """The files `upload_folder` sends from `out`: every file below it but what the Hub client always skips
    (.git, its own .cache/huggingface), relative POSIX paths, sorted."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    found = sorted(p.relative_to(out).as_posix() for p in out.glob("**/*") if p.is_file())
    return list(filter_repo_objects(found, ignore_patterns=list(DEFAULT_IGNORE_PATTERNS)))


def _publishable(out: Path, artifact) -> list[str]:
    """The files to upload, once the export has proved it may be published (else the reason, raised)."""
    if artifact.info.get("local_paths"):
        raise UsageError(f"{out} was exported with --local-paths, so its lineage.json, manifest.json and model card "
                         f"name absolute paths of this machine; export it again without --local-paths to publish "
                         f"it (bgeprune export-hf RUN OUT).")
    checks, _ = static_checks(out, artifact, read_lineage(out))
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        raise CheckFailed(f"{out} fails verify's static checks, so nothing was uploaded: "
                          + "; ".join(f"{c.name}: {c.message.rstrip('.')}" for c in failed)
                          + f". Run 'bgeprune verify {out}' for the full report, and export again (or put the "
                            f"exported files back) before pushing.")
    files = upload_list(out)
    listed = {entry["path"] for entry in artifact.manifest["files"]} | {MANIFEST}
    unlisted = [f for f in files if f not in listed]
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" (+{len(unlisted) - 5} more)" if len(unlisted) > 5 else "")
        raise CheckFailed(f"{out} holds {len(unlisted)} file(s) that its {MANIFEST} does not list, so nothing "
                          f"vouches for them (and they may name local paths): {shown}. Move them out of the export "
                          f"(an onnx/ that export-onnx did not finish: 'bgeprune export-onnx {out} --force'), then "
                          f"push again; nothing was uploaded.")
    return files


def _hub_api(token: str | None):
    """The Hub client. `token=True` when none is given: a push always needs one, so the client looks in
    HF_TOKEN and `hf auth login`'s file and raises LocalTokenNotFoundError before any request."""
    from huggingface_hub import HfApi

    return HfApi(token=token or True, library_name="bgeprune", library_version=__version__)


def _upload(api, out: Path, repo_id: str, private: bool, revision: str | None, create_pr: bool,
            commit_message: str | None):
    """(the repo id the Hub resolved, the CommitInfo) of creating the repo and branch if needed, then uploading."""
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = getattr(repo, "repo_id", None) or repo_id  # a bare NAME resolves to the token's namespace
        if revision is not None and not create_pr:  # upload_folder commits only to a branch that exists
            try:
                api.repo_info(repo_id, repo_type="model", revision=revision)
            except RevisionNotFoundError:
                api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=out, repo_type="model", revision=revision,
                                   create_pr=create_pr, commit_message=commit_message or DEFAULT_MESSAGE)
    except (BgepruneError, MemoryError):
        raise
    except Exception as exc:
        error = hub_error(exc, repo_id, out)
        if error is None:  # not the Hub's or the network's: a bug, reported as one
            raise
        raise error from exc
    return repo_id, commit


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


def hub_error(exc: Exception, repo_id: str, out: Path) -> BgepruneError | None:
    """The message and exit code for what the Hub client raised, or None when it is none of the Hub's errors."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    if isinstance(exc, LocalTokenNotFoundError):
        return EnvironmentProblem("not logged in to the Hugging Face Hub (no token in HF_TOKEN, none saved by "
                                  "'hf auth login'), so nothing was uploaded; run 'hf auth login' with a token that "
                                  "has write access, or set HF_TOKEN (or pass --token).")
    if isinstance(exc, OfflineModeIsEnabled):
        return EnvironmentProblem("HF_HUB_OFFLINE is set, so the Hub is not contacted and nothing was uploaded; "
                                  "unset it to push.")
    if isinstance(exc, HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        advice = {
            401: "the Hub refused the token: log in again with 'hf auth login', or pass a valid token in HF_TOKEN "
                 "or --token",
            403: f"the token may not write to {repo_id}: use a token with write access to that namespace (a "
                 f"fine-grained token needs write permission for it), or push to your own namespace",
            404: f"check the repo id {repo_id}, --revision, and that the token can see the repo",
        }.get(status, "try again later; running the same command again resumes the upload (files already "
                      "committed are skipped)")
        return EnvironmentProblem(f"the Hugging Face Hub refused to push {out} to {repo_id} (HTTP {status}: "
                                  f"{_first_line(exc)}); {advice}.")
    # Before the OS error behind it: a refused connection is a socket's OSError, not a file's.
    if isinstance(exc, (ConnectionError, TimeoutError)) or any(
            c.__module__.split(".")[0] in _TRANSPORTS for c in type(exc).__mro__):
        return EnvironmentProblem(f"cannot reach the Hugging Face Hub to push {repo_id} ({exc.__class__.__name__}: "
                                  f"{_first_line(exc)}); check the network (and HF_ENDPOINT, if set), then run the "
                                  f"same command again: the upload resumes where it stopped.")
    error = os_error_in(exc)  # a file of the export that cannot be read while it is uploaded
    if error is not None:
        return environment_error(error, f"uploading {out}")
    return None
