"""README's two commands stay true: CI runs the very test command README shows."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_command(title: str) -> str:
    match = re.search(rf"\*\*{re.escape(title)}\*\*\s*```sh\n(.+?)\n```", (REPO / "README.md").read_text(), re.S)
    assert match, f"README.md has no sh block after **{title}**"
    return match.group(1).strip()


def test_ci_runs_readmes_test_command_verbatim():
    command = readme_command("Run the tests:")
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in lines, f".ci/run does not run README's test command:\n{command}"
    assert lines[-1] == command, "README's test command must be the last thing .ci/run does (its exit code is CI's)"


def test_readmes_run_command_starts_the_simulator():
    command = readme_command("Run the device with simulated hardware:")
    assert command.startswith("python3 -m venv .venv && ") and command.endswith(".venv/bin/edge run --sim")
    # The same setup as the tests, so the one command works on a fresh machine too.
    setup = readme_command("Run the tests:").split(" && .venv/bin/python -m pytest")[0]
    assert command.replace("'.[sim]'", "'.[test]'").startswith(setup)
