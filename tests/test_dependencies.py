"""What `pip install bgeprune` installs is what bgeprune imports: every third-party module the package
imports, and every module those imports load in turn, comes from `dependencies` (or, behind an
ImportError guard, from the optional extra that declares it).

The test environment has the extras installed too (onnx brings protobuf), so a plain import check
here would pass with a runtime dependency missing; this one asks which distribution each loaded
module belongs to and whether `dependencies` pulls it in. `.ci/user-install` proves the same by
installing exactly as the README says.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bgeprune_cli"
# Imported only after importlib.util.find_spec says it is there, with a message naming its install line.
UNDECLARED_OPTIONAL = {"mteb": "bench --mteb"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """The distributions that installing `requirements` brings, walked through installed metadata."""
    todo = [(Requirement(r), extras) for r in requirements]
    seen: set[str] = set()
    while todo:
        requirement, wanted = todo.pop()
        if requirement.marker is not None and not any(
                requirement.marker.evaluate({"extra": extra}) for extra in (wanted or ("",))):
            continue
        name = _norm(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend((Requirement(r), tuple(requirement.extras)) for r in requires)
    return seen


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside `try: ... except ImportError` (or ModuleNotFoundError)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = set()
        for handler in node.handlers:
            types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            caught |= {t.id for t in types if isinstance(t, ast.Name)}
        if caught & {"ImportError", "ModuleNotFoundError"}:
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt)
                      if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def _type_checking_only(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for stmt in node.body for n in ast.walk(stmt)
                      if isinstance(n, (ast.Import, ast.ImportFrom))}
    return lines


def third_party_imports() -> list[tuple[str, str, bool, str]]:
    """(top-level module, the import statement, guarded, file:line) for every absolute third-party import."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        guarded, typing_only = _guarded(tree), _type_checking_only(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            if node.lineno in typing_only:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in ("__future__", "bgeprune_cli"):
                    continue
                found.append((top, ast.unparse(node), node.lineno in guarded,
                              f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def _owner(top: str, extras: dict[str, list[str]]) -> str | None:
    """'' when `dependencies` declares the distribution of module `top`, the extra's name, or None."""
    distributions = {_norm(d) for d in metadata.packages_distributions().get(top, [top])}
    if distributions & {_norm(Requirement(r).name) for r in _project()["dependencies"]}:
        return ""
    for extra, requirements in extras.items():
        if extra != "test" and distributions & {_norm(Requirement(r).name) for r in requirements}:
            return extra
    return None


def _installed_only(distributions: set[str], into: Path) -> Path:
    """A directory that holds just `distributions` (their files linked from site-packages, metadata too):
    an interpreter started with `-S` and this on its path sees what a venv with only those would."""
    into.mkdir()
    for dist in metadata.distributions():
        if _norm(dist.metadata["Name"]) not in distributions or not dist.files:
            continue
        for top in {Path(str(f)).parts[0] for f in dist.files}:
            source = Path(dist.locate_file(top))
            if top != ".." and source.exists() and not (into / top).exists():
                (into / top).symlink_to(source)
    return into


_RUNNER = """
import json, sys
sys.path[:0] = sys.argv[1:3]
failures = []
for statement in json.loads(sys.argv[3]):
    try:
        exec(statement, {})
    except ImportError as exc:
        failures.append([statement, f"{exc.__class__.__name__}: {exc}"])
print(json.dumps(failures))
"""


def _failing_imports(statements: list[str], distributions: set[str], site: Path) -> list[list[str]]:
    """The statements that raise ImportError with only `distributions` installed (and this checkout)."""
    _installed_only(distributions, site)
    out = subprocess.run([sys.executable, "-S", "-c", _RUNNER, str(site), str(ROOT), json.dumps(statements)],
                         capture_output=True, text=True, cwd=site)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


def _names_require(tree: ast.AST, extra: str) -> bool:
    """Whether a module defines, imports or calls `require_<extra>`, which raises the install message
    before any of the extra's packages is imported."""
    name = f"require_{extra}"
    return any((isinstance(n, ast.Name) and n.id == name) or (isinstance(n, ast.alias) and n.name == name)
               or (isinstance(n, ast.FunctionDef) and n.name == name) for n in ast.walk(tree))


def test_every_import_works_with_only_the_declared_install(tmp_path):
    project = _project()
    extras = {k: v for k, v in project.get("optional-dependencies", {}).items() if k != "test"}
    imports = third_party_imports()
    assert len(imports) > 20, "found few third-party imports: the scan is broken"
    problems, by_owner = [], {}
    for top, statement, guarded, where in imports:
        if top in UNDECLARED_OPTIONAL:
            continue
        owner = _owner(top, extras)
        if owner is None:
            problems.append(f"{where}: {statement!r}: its distribution is in neither dependencies nor an extra")
            continue
        if owner and not guarded and not _names_require(ast.parse((ROOT / where.split(":")[0]).read_text()), owner):
            problems.append(f"{where}: {statement!r} needs the [{owner}] extra, but its module neither uses "
                            f"require_{owner}() nor guards the import")
        by_owner.setdefault(owner, set()).add(statement)
    base = _closure(project["dependencies"])
    for owner, statements in sorted(by_owner.items()):
        installed = base | (_closure(extras[owner]) if owner else set())
        what = "dependencies" if not owner else f"dependencies + [{owner}]"
        for statement, error in _failing_imports(sorted(statements), installed, tmp_path / (owner or "base")):
            problems.append(f"{statement!r} fails with only {what} installed: {error}")
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_missing_runtime_dependency(tmp_path):
    """Not vacuous: sentencepiece's proto module imports protobuf, which sentencepiece does not require,
    so without protobuf in `dependencies` the import fails in the emulated install."""
    statement = "from sentencepiece import sentencepiece_model_pb2"
    without = [r for r in _project()["dependencies"] if _norm(Requirement(r).name) != "protobuf"]
    [(failed, error)] = _failing_imports([statement], _closure(without), tmp_path / "without")
    assert failed == statement and "google" in error
    assert _failing_imports([statement], _closure(_project()["dependencies"]), tmp_path / "with") == []


def test_a_missing_module_is_named_with_its_install_line(tmp_path):
    """The README's quickstart without protobuf: exit 4 naming google.protobuf and the package protobuf,
    not the sentencepiece that imported it (which is installed)."""
    blocked = "import sys; sys.modules.update(dict.fromkeys(['google', 'google.protobuf'])); "
    run = "from bgeprune_cli.cli import main; sys.argv = ['bgeprune', 'check', 'recipes/vocab-smoke.toml']; main()"
    env = {**os.environ, "BGEPRUNE_CACHE": str(tmp_path / "cache")}  # the builtin base is built anew: protobuf
    out = subprocess.run([sys.executable, "-c", blocked + run], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 4, out.stderr
    message = " ".join(out.stderr.split())
    assert "'google.protobuf' (package protobuf)" in message and "pip install protobuf" in message, message
    assert "internal error" not in message
