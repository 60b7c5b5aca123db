"""Fixtures shared by the doorbell tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.testing.requirements import find_test_data, missing
from services.doorbell.testing import doorbells


@pytest.fixture(scope="module")
def photos() -> Path:
    """The face photos folder (EDGE_TEST_DATA/faces; skips, or fails in CI, without it)."""
    return find_test_data() / "faces"


@pytest.fixture
def make_bell(tmp_path):
    """`make_bell(config, **options)` starts a SimulatedDoorbell; all are stopped after the test."""
    with doorbells(tmp_path) as make:
        yield make


@contextlib.contextmanager
def _read_only(folder):
    """Make `folder` and its files refuse every change, as a disk remounted read-only
    would: chmod for an ordinary user; for root (whom permissions do not stop) a read-only
    bind mount of the folder over itself, else the immutable attribute (chattr +i, which
    tmpfs lacks). Skips, or fails in CI, where none is possible."""
    paths = [*folder.iterdir(), folder]
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        undo = [lambda p=p: p.chmod(0o700 if p.is_dir() else 0o600) for p in paths]
    elif _run("mount", "--bind", folder, folder):
        if not _run("mount", "-o", "remount,bind,ro", folder, folder):
            _run("umount", folder)
            missing(f"cannot remount {folder} read-only")
        undo = [lambda: subprocess.run(["umount", str(folder)], check=True)]
    elif _run("chattr", "+i", *paths):
        undo = [lambda: subprocess.run(["chattr", "-i", *map(str, paths)], check=True)]
    else:
        missing("running as root where neither a read-only bind mount nor chattr +i works: "
                "cannot make a folder read-only")
    try:
        yield folder
    finally:
        for step in undo:
            step()


def _run(program: str, *args) -> bool:
    path = shutil.which(program) or f"/usr/bin/{program}"
    try:
        return subprocess.run([path, *map(str, args)], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.fixture
def read_only():
    """`with read_only(folder):` makes a folder and its files unwritable for the block."""
    return _read_only
