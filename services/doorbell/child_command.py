"""The command line that starts one of the doorbell's Python child processes (the
recognizer, the one-shot face encoder).

A plain `python -c` rather than multiprocessing: no re-import of the parent's __main__ and
no resource-tracker process left behind. The command carries the parent's -W options, so
the child treats warnings exactly as the parent does (under -W error a warning must mean
the same on both sides), and -P with this checkout appended to sys.path, so the child
imports this code and not whatever the working directory holds.

Not responsible for: starting, talking to or killing the child (recognizer_child.py,
enrollment.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def child_command(python: str, module: str, function: str) -> list[str]:
    """[python, -W..., -P, -c, code] running `sys.exit(module.function())`; arguments
    appended to the list reach the function as sys.argv[1:]."""
    if not (module.replace(".", "").replace("_", "").isalnum() and function.replace("_", "").isalnum()):
        raise ValueError(f"{module}.{function} is not a Python module and function name")
    code = (f"import sys; sys.path.append({str(_REPO_ROOT)!r}); "
            f"from {module} import {function}; sys.exit({function}())")
    return [python, *(f"-W{option}" for option in sys.warnoptions), "-P", "-c", code]
