"""push: what goes to the Hub, with which arguments, and every export that is refused before anything does.

The Hub has no offline stand-in, so `push._hub_api` is replaced by a fake that records each call and
returns the Hub client's own result types (RepoUrl, CommitInfo, made locally): everything up to the upload
call is exercised, the upload itself never is. The two tests that run the real client point it at a
closed local port, so nothing can reach huggingface.co.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitInfo
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoUrl
from typer.testing import CliRunner

from bgeprune_cli.cli import app
from bgeprune_cli.stages import export_hf, prune, push
from conftest import keep_only, make_run

ROOT = Path(__file__).resolve().parents[1]
OID = "0123456789abcdef0123456789abcdef01234567"


class _Response:
    """What the Hub's HTTP errors read from a response."""

    def __init__(self, status_code: int):
        self.status_code, self.headers, self.request = status_code, {}, None


class FakeHub:
    """HfApi's four calls that push makes, recorded; `fail` = {method: exception} raises instead."""

    def __init__(self, fail: dict | None = None, branches: tuple[str, ...] = ("main",)):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail, self.branches = fail or {}, branches
        self.uploaded: list[str] = []

    def _record(self, name, args, kwargs):
        self.calls.append((name, args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def create_repo(self, *args, **kwargs):
        self._record("create_repo", args, kwargs)
        return RepoUrl(f"https://huggingface.co/{args[0]}")

    def repo_info(self, *args, **kwargs):
        self._record("repo_info", args, kwargs)
        if kwargs.get("revision") not in self.branches:
            raise RevisionNotFoundError("404 Client Error: Revision Not Found", response=_Response(404))

    def create_branch(self, *args, **kwargs):
        self._record("create_branch", args, kwargs)

    def upload_folder(self, **kwargs):
        self._record("upload_folder", (), kwargs)
        folder = Path(kwargs["folder_path"])  # what the Hub client would send: every file below it
        self.uploaded = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        repo = kwargs["repo_id"]
        if kwargs.get("create_pr"):
            return CommitInfo(commit_url=f"https://huggingface.co/{repo}/commit/{OID}", commit_message="m",
                              commit_description="", oid=OID, pr_url=f"https://huggingface.co/{repo}/discussions/3")
        return CommitInfo(commit_url=f"https://huggingface.co/{repo}/commit/{OID}", commit_message="m",
                          commit_description="", oid=OID)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]


@pytest.fixture(scope="module")
def m3_export(tmp_path_factory, builtin_cache) -> Path:
    """A bge-m3-shaped export with onnx/ and both head files."""
    root = tmp_path_factory.mktemp("push")
    run = make_run(root / "run", "builtin:tiny-bge-m3", {"layer": keep_only(3, 0, 2)})
    prune.run(run / "masks")
    export_hf.run(run, root / "out", onnx=True)
    return root / "out"


@pytest.fixture()
def export(tmp_path, m3_export) -> Path:
    """A copy of the export to break."""
    out = tmp_path / "out"
    shutil.copytree(m3_export, out)
    return out


@pytest.fixture()
def hub(monkeypatch):
    """The fake behind every push in a test; `hub.tokens` are the tokens the factory was given."""
    fake = FakeHub()
    fake.tokens = []

    def factory(token):
        fake.tokens.append(token)
        return fake

    monkeypatch.setattr(push, "_hub_api", factory)
    return fake


def _push(*args):
    return CliRunner().invoke(app, ["push", *map(str, args)])


def _snapshot(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _manifest_files(out: Path) -> set[str]:
    return {e["path"] for e in json.loads((out / "manifest.json").read_text())["files"]}


def test_push_uploads_the_whole_export_and_prints_the_commit_url(m3_export, hub):
    before = _snapshot(m3_export)
    result = _push(m3_export, "your-name/tiny-m3", "--private", "--commit-message", "Prune tiny bge-m3")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"→ https://huggingface.co/your-name/tiny-m3/commit/{OID}\n"
    assert hub.names() == ["create_repo", "upload_folder"]  # no --revision: main, which exists
    assert hub.calls[0][1:] == (("your-name/tiny-m3",), {"private": True, "exist_ok": True, "repo_type": "model"})
    upload = hub.calls[1][2]
    assert Path(upload.pop("folder_path")).resolve() == m3_export.resolve()
    assert upload == {"repo_id": "your-name/tiny-m3", "repo_type": "model", "revision": None, "create_pr": False,
                      "commit_message": "Prune tiny bge-m3"}
    assert hub.tokens == [None]  # the client finds HF_TOKEN or the saved login itself
    assert set(hub.uploaded) == _manifest_files(m3_export) | {"manifest.json"}
    assert {"onnx/model.onnx", "onnx/model.onnx_data", "onnx/model_qint8_avx512_vnni.onnx", "colbert_linear.pt",
            "sparse_linear.pt", "lineage.json", "README.md", "model.safetensors"} <= set(hub.uploaded)
    assert "pushed 18 files" in result.stderr and "branch main" in result.stderr
    assert _snapshot(m3_export) == before  # push writes nothing into the export (no path of this machine)


def test_json_names_the_repo_url_revision_and_files(m3_export, hub):
    result = _push(m3_export, "your-name/tiny-m3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["repo_id"] == "your-name/tiny-m3" and report["revision"] == "main" and report["pr_url"] is None
    assert report["url"] == report["commit_url"] == f"https://huggingface.co/your-name/tiny-m3/commit/{OID}"
    assert report["files"] == len(report["paths"]) == len(hub.uploaded) and report["paths"] == hub.uploaded
    assert hub.calls[0][2]["private"] is False
    assert hub.calls[1][2]["commit_message"] == push.DEFAULT_MESSAGE


def test_a_new_branch_is_created_and_an_existing_one_is_not(m3_export, hub):
    assert _push(m3_export, "me/m", "--revision", "pruned-50").exit_code == 0
    assert hub.names() == ["create_repo", "repo_info", "create_branch", "upload_folder"]
    assert hub.calls[2][1:] == (("me/m",), {"branch": "pruned-50", "repo_type": "model", "exist_ok": True})
    assert hub.calls[3][2]["revision"] == "pruned-50"
    hub.calls.clear()
    hub.branches = ("main", "pruned-50")
    result = _push(m3_export, "me/m", "--revision", "pruned-50", "--json")
    assert hub.names() == ["create_repo", "repo_info", "upload_folder"]
    assert json.loads(result.stdout)["revision"] == "pruned-50"


def test_create_pr_prints_the_pull_requests_url(m3_export, hub):
    result = _push(m3_export, "me/m", "--create-pr")
    assert result.exit_code == 0, result.output
    assert result.stdout == "→ https://huggingface.co/me/m/discussions/3\n"
    assert "(pull request refs/pr/3, commit 01234567)" in result.stderr
    assert hub.names() == ["create_repo", "upload_folder"]  # a PR needs no branch
    assert hub.calls[1][2]["create_pr"] is True and hub.calls[1][2]["revision"] is None
    report = json.loads(_push(m3_export, "me/m", "--create-pr", "--json").stdout)
    assert report["pr_url"] == report["url"] == "https://huggingface.co/me/m/discussions/3"
    assert report["revision"] == "refs/pr/3"


def test_the_token_given_goes_to_the_client_and_nowhere_else(m3_export, hub):
    result = _push(m3_export, "me/m", "--token", "hf_secret_value", "--json")
    assert result.exit_code == 0 and hub.tokens == ["hf_secret_value"]
    assert "hf_secret_value" not in result.output and "hf_secret_value" not in json.dumps(hub.calls, default=str)


@pytest.mark.parametrize("args, needle", [
    (["me/m", "--create-pr", "--revision", "dev"], "--create-pr opens a pull request against main"),
    (["a/b/c"], "is not a Hub repo id"),
])
def test_bad_options_exit_2_before_anything(m3_export, hub, args, needle):
    result = _push(m3_export, *args)
    assert result.exit_code == 2 and needle in result.stderr, result.output
    assert hub.calls == [] and hub.tokens == []


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's data: the file still loads
    path.write_bytes(bytes(data))


BROKEN = {
    "tampered-weight-byte": (lambda out: _flip_last_byte(out / "model.safetensors"),
                             ["manifest: file(s) differ from the sha256", "model.safetensors"]),
    "missing-head-file": (lambda out: (out / "sparse_linear.pt").unlink(), ["manifest:", "m3-heads: missing "
                                                                             "sparse_linear.pt"]),
    "missing-tokenizer": (lambda out: (out / "tokenizer.json").unlink(), ["files: missing file(s): tokenizer.json"]),
    "nan-weights": (lambda out: _nan(out), ["finite: NaN or Inf"]),
}


def _nan(out: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(out / "model.safetensors"))
    state["encoder.layer.0.intermediate.dense.weight"][0, 0] = torch.nan
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("case", BROKEN)
def test_an_export_that_fails_a_static_check_is_refused_and_nothing_is_called(export, hub, case):
    breaks, needles = BROKEN[case]
    breaks(export)
    result = _push(export, "me/m")
    assert result.exit_code == 1, result.output
    assert "fails verify's static checks, so nothing was uploaded" in result.stderr
    assert all(n in result.stderr for n in needles), result.stderr
    assert f"Run 'bgeprune verify {export}'" in result.stderr
    assert hub.calls == [] and hub.tokens == [] and result.stdout == ""


def test_a_file_the_manifest_does_not_list_is_refused(export, hub):
    (export / "notes.txt").write_text(f"trained from {export.parent}/data\n")
    result = _push(export, "me/m", "--json")
    assert result.exit_code == 1 and hub.calls == []
    assert "does not list" in result.stderr and "notes.txt" in result.stderr
    assert json.loads(result.stdout)["exit"] == 1


def test_an_export_with_local_paths_is_refused(export, hub):
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["info"]["local_paths"] = True  # what export-hf --local-paths records
    (export / "manifest.json").write_text(json.dumps(manifest))
    result = _push(export, "me/m")
    assert result.exit_code == 2 and "--local-paths" in result.stderr and hub.calls == []


def test_a_directory_that_is_not_an_export_is_refused(tmp_path, export, hub):
    (export / "manifest.json").unlink()
    result = _push(export, "me/m")
    assert result.exit_code == 3 and "has no manifest.json" in result.stderr and hub.calls == []
    make_run(tmp_path / "run", "builtin:tiny-bge-m3", {"layer": keep_only(3, 0, 2)})
    result = _push(tmp_path / "run" / "masks", "me/m")
    assert result.exit_code == 3 and "'push' needs 'hf-model'" in result.stderr
    assert hub.calls == []


@pytest.mark.parametrize("error, code, needles", [
    (LocalTokenNotFoundError("Token is required"), 4, ["not logged in", "hf auth login", "HF_TOKEN", "--token"]),
    (HfHubHTTPError("401 Client Error: Unauthorized", response=_Response(401)), 4, ["HTTP 401", "hf auth login"]),
    (HfHubHTTPError("403 Forbidden: you cannot write", response=_Response(403)), 4, ["HTTP 403", "write access"]),
    (ConnectionError("Connection refused"), 4, ["cannot reach the Hugging Face Hub", "run the same command again"]),
])
def test_hub_errors_become_clear_messages(m3_export, hub, error, code, needles):
    hub.fail = {"create_repo": error}
    result = _push(m3_export, "me/m")
    assert result.exit_code == code and all(n in result.stderr for n in needles), result.stderr
    assert "Traceback" not in result.output and hub.names() == ["create_repo"]


def test_an_error_during_the_upload_is_reported_the_same_way(m3_export, hub):
    hub.fail = {"upload_folder": HfHubHTTPError("500 Server Error", response=_Response(500))}
    result = _push(m3_export, "me/m", "--json")
    assert result.exit_code == 4 and "HTTP 500" in result.stderr and "resumes the upload" in result.stderr
    assert json.loads(result.stdout)["exit"] == 4


def test_what_is_not_the_hubs_error_is_not_dressed_up_as_one(tmp_path):
    assert push.hub_error(RuntimeError("a bug"), "me/m", tmp_path) is None
    assert push.hub_error(KeyError("x"), "me/m", tmp_path) is None


def _real_client(m3_export: Path, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """`bgeprune push` with the real Hub client, its endpoint a closed local port and an empty HF_HOME."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    environ.update(HF_HOME=str(tmp_path / "hf-home"), HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_OFFLINE="0",
                   PYTHONPATH=os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run([sys.executable, "-m", "bgeprune_cli", "push", str(m3_export), "me/m"], env=environ,
                          capture_output=True, text=True, timeout=300)


def test_the_real_client_without_a_token_says_to_log_in(m3_export, tmp_path):
    done = _real_client(m3_export, tmp_path)
    assert done.returncode == 4, done.stderr
    assert "not logged in" in done.stderr and "Traceback" not in done.stderr and done.stdout == ""


def test_the_real_client_offline_says_it_cannot_reach_the_hub(m3_export, tmp_path):
    done = _real_client(m3_export, tmp_path, HF_TOKEN="hf_not_a_real_token")
    assert done.returncode == 4, done.stderr
    assert "cannot reach the Hugging Face Hub" in done.stderr and "Traceback" not in done.stderr
    assert "hf_not_a_real_token" not in done.stderr
