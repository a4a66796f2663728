"""Project promises: CI runs exactly the README's test command; recipes and docs stay in sync; the README
stays a front door (short, no volatile facts such as test counts)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"


def _header(recipe: str) -> str:
    return (ROOT / "recipes" / recipe).read_text().splitlines()[0].removeprefix("# ")


def test_ci_runs_exactly_the_readme_test_command():
    readme = README.read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    tests_section = readme.split("## Tests", 1)[1]
    assert f"```bash\n{ci_command}\n```" in tests_section


def test_readme_quickstarts_are_the_smoke_recipe_headers():
    readme = README.read_text()
    assert _header("smoke.toml") in readme, "smoke.toml"
    # the bge-m3 smoke run lives with bge-m3's three modes in docs/bge-m3.md
    docs = readme + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    assert _header("smoke-m3.toml") in docs, "smoke-m3.toml"


def test_readme_gpu_command_is_the_50pct_recipe_header():
    assert _header("50pct.toml") in README.read_text().split("## Pruning bge-m3 on your GPU", 1)[1]


def test_ci_installs_cpu_torch_before_the_project():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    torch_line = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    project_line = next(i for i, line in enumerate(lines) if "-e '.[test]'" in line)
    assert torch_line < project_line


def test_readme_is_a_short_front_door_without_volatile_counts():
    readme = README.read_text()
    assert len(readme.splitlines()) < 300, "README.md is a front door: move details into docs/"
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        counts = re.findall(r"\d+ passed", path.read_text())
        assert not counts, f"{path.relative_to(ROOT)}: test counts belong in the CI log, not the docs: {counts}"


def _first_bash_block(path: Path, heading: str) -> list[str]:
    """What .ci/user-install runs: the first ```bash block under the heading that starts with `heading`."""
    text = path.read_text()
    found = re.search(rf"^{re.escape(heading)}( .*)?$", text, re.M)
    assert found, f"{path.name} has no heading {heading!r}"
    block = re.search(r"```bash\n(.*?)```", text[found.end():], re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_first_leg_installs_as_the_docs_say_before_any_test_extra():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    leg = next(i for i, line in enumerate(lines) if line.strip() == ".ci/user-install")
    extras = next(i for i, line in enumerate(lines) if "-e '.[test]'" in line)
    assert leg < extras
    install, pipeline = _first_bash_block(README, "## Quickstart")
    assert install == "pip install torch==2.13.0 && pip install -e ." and pipeline == _header("smoke.toml")
    assert _first_bash_block(ROOT / "docs" / "onnx.md", "## Quickstart")[0] == "pip install -e '.[onnx]'"
    assert _first_bash_block(ROOT / "docs" / "data.md", "## Quickstart")[0] == "pip install -e '.[stream]'"


def test_ci_lints_before_the_tests_with_the_projects_ruff_settings():
    import tomllib

    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    lint = next(i for i, line in enumerate(lines) if line.startswith("python -m ruff check"))
    assert lint < len(lines) - 1 and {"bgeprune_cli", "tests", "benchmarks"} <= set(lines[lint].split())
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert ruff["line-length"] == 120 and {"E", "F", "I"} <= set(ruff["lint"]["select"])
