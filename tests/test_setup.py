"""The README's set-up commands: CI runs exactly its test command; the dev extra holds what the tests compare with."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (python3 -m venv .+)$", section, re.M)


def test_ci_runs_exactly_the_readme_test_command():
    main_job, tests = readme_commands()
    assert main_job.endswith("xmodlm demo") and tests.endswith("pytest -q")
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()


def test_the_commands_make_their_own_virtual_environment():
    for command in readme_commands():  # Debian's python3 refuses a global pip install (PEP 668)
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install -e ")


def test_dev_extra_holds_the_optional_test_references():
    dev = re.search(r"^dev = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M).group(1)  # no tomllib in 3.10
    names = {re.split(r"[<>=!~ \[]", d.strip().strip('"'), maxsplit=1)[0] for d in dev.split(",")}
    assert {"pytest", "transformers", "seqeval", "omegaconf"} <= names
