"""StepGuard: a failing step costs only that step, is logged once per reason with its
traceback, shows in health until it works again, and never ends the worker's loop."""

from __future__ import annotations

import logging

import pytest

from edge.containment import StepGuard

LOGGER = "test.containment"


@pytest.fixture
def guard(caplog) -> StepGuard:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return StepGuard(logging.getLogger(LOGGER), owner="doorbell", consequence="the bell rings on")


def _raise(exc: Exception):
    raise exc


def _records(caplog, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_a_working_step_returns_its_value_and_logs_nothing(guard, caplog):
    assert guard.run("state publishing", lambda a, b: a + b, 2, 3) == 5
    assert guard.faults() == {} and guard.problems() == []
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_a_failing_step_returns_its_default_instead_of_raising(guard):
    assert guard.run("camera", _raise, OSError("unplugged"), default=([], None)) == ([], None)
    assert guard.run("faces reload", _raise, RuntimeError("boom")) is None


def test_a_failing_step_is_logged_once_per_reason(guard, caplog):
    for _ in range(5):  # the housekeeping loop runs the same failing step again and again
        guard.run("snapshot pruning", _raise, PermissionError("read-only folder"))
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1
    assert errors[0].getMessage() == ("doorbell step 'snapshot pruning' failed "
                                      "(PermissionError: read-only folder); the bell rings on")
    assert isinstance(errors[0].exc_info[1], PermissionError)  # with its traceback

    guard.run("snapshot pruning", _raise, OSError("disk full"))  # a new reason is news again
    assert len(_records(caplog, logging.ERROR)) == 2


def test_a_failing_step_is_remembered_until_it_works_again_with_one_info_line(guard, caplog):
    guard.run("recognition", _raise, ValueError("bad pickle"))
    assert guard.faults() == {"recognition": "ValueError: bad pickle"}
    assert guard.problems() == ["recognition failed (ValueError: bad pickle)"]

    assert guard.run("recognition", lambda: "ok") == "ok"
    guard.run("recognition", lambda: "ok")
    assert guard.faults() == {}
    infos = [r.getMessage() for r in _records(caplog, logging.INFO)]
    assert infos == ["doorbell step 'recognition' works again"]


def test_a_failure_is_added_to_the_callers_failed_dict(guard):
    failed: dict[str, str] = {}
    guard.run("person state", lambda: None, failed=failed)
    guard.run("camera", _raise, KeyError("frame"), failed=failed)
    assert failed == {"camera": "KeyError: 'frame'"}


def test_a_step_that_failed_before_still_lands_in_this_passes_failed_dict(guard):
    guard.run("camera", _raise, OSError("gone"))
    this_ring: dict[str, str] = {}
    guard.run("camera", _raise, OSError("gone"), failed=this_ring)  # not logged again, but counted
    assert this_ring == {"camera": "OSError: gone"}


def test_a_fault_found_without_an_exception_is_reported_once_and_cleared_with_its_own_message(guard, caplog):
    reason = "cannot save visitor snapshots in /var/lib/edge/snapshots (No space left on device)"
    for _ in range(3):
        guard.report("snapshot saving", reason, advice="free space or fix the permissions there")
    errors = _records(caplog, logging.ERROR)
    assert [r.getMessage() for r in errors] == [
        f"doorbell step 'snapshot saving' failed ({reason}); free space or fix the permissions there"]
    assert errors[0].exc_info is None
    assert guard.problems() == [f"snapshot saving failed ({reason})"]

    assert guard.clear("snapshot saving", "visitor snapshots are saved again") is True
    assert guard.clear("snapshot saving", "visitor snapshots are saved again") is False  # logged once
    assert [r.getMessage() for r in _records(caplog, logging.INFO)] == ["visitor snapshots are saved again"]
    assert guard.faults() == {}


def test_faults_of_several_steps_are_kept_apart(guard):
    guard.run("camera", _raise, OSError("unplugged"))
    guard.run("state publishing", _raise, RuntimeError("bus closed"))
    guard.run("camera", lambda: None)
    assert guard.faults() == {"state publishing": "RuntimeError: bus closed"}


def test_faults_is_a_copy_health_cannot_change(guard):
    guard.run("camera", _raise, OSError("unplugged"))
    guard.faults().clear()
    assert guard.faults() == {"camera": "OSError: unplugged"}


def test_keyboard_interrupt_and_system_exit_are_not_contained(guard):
    with pytest.raises(KeyboardInterrupt):
        guard.run("camera", _raise, KeyboardInterrupt())
    with pytest.raises(SystemExit):
        guard.run("camera", _raise, SystemExit(3))
    assert guard.faults() == {}
