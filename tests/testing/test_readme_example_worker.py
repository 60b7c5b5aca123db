"""README's "Writing a worker" example runs exactly as written: its worker module and its
test are taken from README's code blocks and run here with the shipped harness."""

from __future__ import annotations

import re
import types
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> tuple[str, str]:
    """The two Python blocks of the "Writing a worker" section: the worker, then its test."""
    section = README.read_text().split("## Writing a worker", 1)[1].split("\n## ", 1)[0]
    worker, test = re.findall(r"```python\n(.*?)```", section, re.S)
    return worker, test


def test_readme_example_worker_and_its_test_run_as_written(tmp_path):
    worker_code, test_code = readme_example()
    module = types.ModuleType("parcel_box")
    exec(compile(worker_code, f"{README}:parcel_box", "exec"), module.__dict__)
    namespace = dict(module.__dict__)
    exec(compile(test_code, f"{README}:test", "exec"), namespace)
    namespace["test_parcels_are_counted_and_collected"](tmp_path)


def test_readme_example_declares_what_the_guide_promises():
    worker_code, _ = readme_example()
    module = types.ModuleType("parcel_box")
    exec(compile(worker_code, f"{README}:parcel_box", "exec"), module.__dict__)
    box = module.ParcelBox
    assert [s.name for s in box.sections] == ["parcels"] and box.sections[0].key("enabled")
    assert [s.component for s in box.schemas] == ["parcels"]
    assert {e.component for e in box.entities} == {"sensor", "button"}
