"""pytest fixtures for edge devices: a real broker, leak checks, test data."""

from __future__ import annotations

import os
import threading

import pytest

from edge.testing.mosquitto import Mosquitto
from edge.testing.requirements import PLATFORM_SKIP, find_test_data, integration_required, require_program


@pytest.fixture
def mosquitto(tmp_path):
    """A running mosquitto on a free 127.0.0.1 port (skips or, in CI, fails without it)."""
    program = require_program("mosquitto")
    broker = Mosquitto(tmp_path / "broker", program=program).start()
    yield broker
    broker.stop()


@pytest.fixture
def test_data():
    return find_test_data()


def _children() -> set[int]:
    """PIDs whose parent is this process (any thread), from /proc."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name may contain spaces or parentheses: split after the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.add(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_leaks(request):
    """Fail a test that leaves a thread or a child process behind."""
    threads_before = set(threading.enumerate())
    children_before = _children()
    yield
    # Threads finishing their last lines are not leaks: give them a moment to end.
    deadline = 50
    while deadline:
        leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = _children() - children_before
        if not leaked and not children:
            return
        deadline -= 1
        threading.Event().wait(0.1)
    problems = []
    if leaked:
        problems.append("threads: " + ", ".join(t.name for t in leaked))
    if children:
        problems.append("child processes: " + ", ".join(map(str, sorted(children))))
    pytest.fail(f"{request.node.nodeid} leaked " + "; ".join(problems), pytrace=False)


def _no_hidden_skip(report) -> None:
    """With EDGE_REQUIRE_INTEGRATION=1 (CI) every skip is a failure, except a documented
    platform skip (code that can only run on a Pi, its reason marked PLATFORM_SKIP): a test
    skipped for a missing program or data must not pass CI silently, however it skipped."""
    if report.skipped and integration_required() and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if PLATFORM_SKIP not in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped, and EDGE_REQUIRE_INTEGRATION=1 allows only platform skips: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _no_hidden_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A module-level skip (`pytest.importorskip` at import, `allow_module_level=True`)
    happens while collecting, before any test report."""
    outcome = yield
    _no_hidden_skip(outcome.get_result())
