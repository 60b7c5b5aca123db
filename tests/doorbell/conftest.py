"""Fixtures shared by the doorbell tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess

import pytest

from services.doorbell.testing import doorbells


@pytest.fixture
def make_bell(tmp_path):
    """`make_bell(config, **options)` starts a SimulatedDoorbell; all are stopped after the test."""
    with doorbells(tmp_path) as make:
        yield make


@contextlib.contextmanager
def _read_only(folder):
    """Make `folder` and its files refuse every change, as a disk remounted read-only
    would: chmod for an ordinary user; for root (whom permissions do not stop) the
    immutable attribute. Skips where neither is possible."""
    paths = [*folder.iterdir(), folder]
    if os.geteuid() != 0:
        for path in paths:
            path.chmod(0o555 if path.is_dir() else 0o444)
        undo = [lambda p=p: p.chmod(0o700 if p.is_dir() else 0o600) for p in paths]
    else:
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", *map(str, paths)], capture_output=True).returncode:
            pytest.skip("running as root where chattr +i is not available: cannot make a folder read-only")
        undo = [lambda: subprocess.run([chattr, "-i", *map(str, paths)], check=True)]
    try:
        yield folder
    finally:
        for step in undo:
            step()


@pytest.fixture
def read_only():
    """`with read_only(folder):` makes a folder and its files unwritable for the block."""
    return _read_only
