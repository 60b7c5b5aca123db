"""The benchmarks under tests/bench are run by hand; their command line must say what they measure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("bench_*.py")), ids=lambda p: p.stem)
def test_every_benchmarks_help_says_what_it_measures_and_what_each_option_does(script):
    """--help shows the module's docstring (what is measured, against which baseline) and
    a help text for every option; it starts nothing (no broker, no device)."""
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-800:]
    doc = re.search(r'"""(.*?)"""', script.read_text(), re.S).group(1)
    first_paragraph = " ".join(doc.split("\n\n")[0].split())
    assert first_paragraph in " ".join(result.stdout.split()), result.stdout[:400]
    lines = result.stdout.split("options:", 1)[1].splitlines()
    for line, after in zip(lines, [*lines[1:], ""]):
        option = re.match(r"\s+(--[\w-]+)( [A-Z_]+)?\s*$", line)  # an option with nothing beside it...
        if option:  # ...has its help on the next line (argparse wraps long ones there)
            assert after.strip() and not after.strip().startswith("-"), f"{script.name}: {option.group(1)} has no help"
