"""Project promises: CI runs exactly the README's test command; recipes and docs stay in sync."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    tests_section = readme.split("## Tests", 1)[1]
    assert f"```bash\n{ci_command}\n```" in tests_section


def test_readme_quickstarts_are_the_smoke_recipe_headers():
    for recipe in ("smoke.toml", "smoke-m3.toml"):
        header = (ROOT / "recipes" / recipe).read_text().splitlines()[0].removeprefix("# ")
        assert header in (ROOT / "README.md").read_text(), recipe


def test_ci_installs_cpu_torch_before_the_project():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    torch_line = next(i for i, line in enumerate(lines) if "torch==2.13.0" in line)
    project_line = next(i for i, line in enumerate(lines) if "-e '.[test]'" in line)
    assert torch_line < project_line
