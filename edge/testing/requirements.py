"""Skip when a system program or test data is missing, on a laptop; fail in CI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


# Marks a skip allowed in CI: code that can only run on a Raspberry Pi (picamera2, lgpio).
PLATFORM_SKIP = "(platform skip)"


def integration_required() -> bool:
    return os.environ.get("EDGE_REQUIRE_INTEGRATION", "") not in ("", "0", "false")


def missing(reason: str) -> None:
    """Skip with `reason`, or fail when integration tests are required (CI)."""
    if integration_required():
        pytest.fail(f"{reason} (EDGE_REQUIRE_INTEGRATION=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def require_program(name: str, package: str | None = None) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.path.exists(p)), None)
    if path is None:
        missing(f"{name} is not installed; install it with `sudo apt-get install {package or name}`")
    return path


def find_test_data(*required: str) -> Path:
    """`EDGE_TEST_DATA`, default ../shared/data beside the repository; skips (fails in CI)
    unless it holds every `required` relative path, e.g. "faces/manifest.json"."""
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    path = Path(os.environ.get("EDGE_TEST_DATA") or default).resolve()
    for rel in required or (".",):
        if not (path / rel).exists():
            missing(f"test data not found: {path / rel}; set EDGE_TEST_DATA to the shared data folder")
    return path
