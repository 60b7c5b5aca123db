"""The doorbell worker in a real runtime on gpiozero's MockFactory: the button path (chime
and ring at once, cooldown, long press, coalescing), the camera and recognition side
(visitor events with the ring's event_id, degradation when either is missing or dies) and
known faces changing under a running device. MQTT is not involved here: events are read
from the bus (tests/doorbell/test_doorbell_mqtt.py goes to a real broker)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import sqlite3
import threading

import cv2
import pytest

from edge.clock import FakeClock
from edge.commands import CommandRejected
from edge.store import DB_NAME, Store
from edge.testing.waiting import wait_for
from services.doorbell.enrollment import encode_photo, photo_source
from services.doorbell.faces_store import FaceStore
from services.doorbell.recognizer_child import RecognizerProcess
from services.doorbell.snapshots import SnapshotFolder
from services.doorbell.testing import NO_FACES, SimulatedDoorbell
from services.doorbell.worker import DoorbellWorker

HD = {"width": 1280, "height": 720}


@pytest.fixture(scope="module")
def obama_encoding(photos):
    photo = photos / "obama_1.jpg"
    return photo_source(photo), encode_photo(photo, min_face_px=60)


def rising_edges(pin) -> int:
    return sum(1 for before, after in zip(pin.states, pin.states[1:]) if after.state and not before.state)


def doorbell_health(bell) -> tuple[str, str]:
    component = bell.runtime.health.get("worker.doorbell")
    return component.state, component.reason


def assert_camera_back(bell, timeout: float) -> None:
    """The camera breaker closes, health is OK again and the next ring has a full burst."""
    wait_for(lambda: bell.runtime.breakers.get("camera").state == "closed", timeout=timeout,
             message="the camera to be reopened")
    wait_for(lambda: doorbell_health(bell)[0] == "OK", timeout=5, message="health OK again")
    bell.press()
    ring = bell.events("doorbell.ring")[-1]
    assert bell.wait_event("doorbell.visitor", lambda e: e.event_id == ring.event_id).data["frames"] == 3


# -- the button path -------------------------------------------------------------------------

def test_press_rings_the_chime_and_publishes_ring_before_the_camera_has_answered(make_bell):
    bell = make_bell(NO_FACES)
    bell.slow_camera(0.3)  # a burst now takes about a second
    bell.button.drive_low()
    # Both happened inside the press, on gpiozero's callback: nothing waited for the camera.
    assert bell.chime.state is True
    rings = bell.events("doorbell.ring")
    assert len(rings) == 1 and rings[0].data["event_type"] == "ring"
    assert bell.events("doorbell.visitor") == []
    bell.button.drive_high()
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.event_id == rings[0].event_id
    assert visitor.ts_mono - rings[0].ts_mono >= 0.8  # the burst came after the ring, not before
    wait_for(lambda: bell.chime.state is False, timeout=5, message="the chime pulse to end")


def test_press_within_the_cooldown_is_counted_but_does_not_ring(make_bell):
    clock = FakeClock()
    bell = make_bell({"doorbell": {"cooldown_s": 5}, **NO_FACES}, clock=clock)
    bell.press()
    clock.advance(4.9)
    bell.press()
    assert len(bell.events("doorbell.ring")) == 1
    assert rising_edges(bell.chime) == 1
    clock.advance(0.1)  # five seconds after the ring (the ignored press did not extend it)
    bell.press()
    assert len(bell.events("doorbell.ring")) == 2
    states = bell.runtime.states
    wait_for(lambda: (states.get("doorbell.presses"), states.get("doorbell.presses_ignored"),
                      states.get("doorbell.rings")) == (3, 1, 2), timeout=5, message="the press counters")


def test_visitor_latency_is_measured_on_the_runtime_clock(make_bell):
    """Bus events carry the runtime's clock: under a FakeClock the visitor's latency is the
    fake time that passed while the ring was answered, not a mix with the system clock
    (which once gave 422,236 ms)."""
    clock = FakeClock()
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES}, clock=clock)
    bell.slow_camera(0.3)
    bell.press()
    bell.wait_answering()
    clock.advance(2.5)
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.data["latency_ms"] == 2500.0


def test_last_visitor_is_on_the_state_board_before_the_visitor_event_goes_out(make_bell, monkeypatch):
    """An automation triggered by the Visitor event that reads "Last visitor" finds this
    ring's visitor there, not the previous one (a test reading the state right after the
    event once found the previous one)."""
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES})
    emit, at_event = bell.runtime.bus.emit, []

    def spy(kind, data=None, event_id=None):
        if kind == "doorbell.visitor":
            at_event.append((event_id, (bell.runtime.states.get("doorbell.last_visitor") or {}).get("event_id")))
        return emit(kind, data, event_id)

    monkeypatch.setattr(bell.runtime.bus, "emit", spy)
    for _ in range(2):
        bell.press()
        ring = bell.events("doorbell.ring")[-1]
        bell.wait_event("doorbell.visitor", event_id=ring.event_id)
    assert len(at_event) == 2 and all(event == state for event, state in at_event), at_event


def test_long_press_is_a_separate_event_of_the_same_ring(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0, "long_press_s": 0.3}, **NO_FACES})
    bell.press()  # short
    bell.press(hold=1.0)
    rings = bell.events("doorbell.ring")
    long_press = bell.wait_event("doorbell.long_press")
    assert len(rings) == 2
    assert long_press.event_id == rings[1].event_id
    assert long_press.data["event_type"] == "long_press"
    assert len(bell.events("doorbell.long_press")) == 1  # the short press made none


def test_presses_during_a_recognition_coalesce_into_the_newest(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES})
    camera = bell.slow_camera(0.3)
    bell.press()
    bell.wait_answering()
    for _ in range(3):
        bell.press()
    rings = [e.event_id for e in bell.events("doorbell.ring")]
    assert len(rings) == 4  # every press rang and was announced at once
    wait_for(lambda: len(bell.events("doorbell.visitor")) == 2, timeout=15, message="two visitor events")
    first, second = bell.events("doorbell.visitor")
    assert first.event_id == rings[0] and first.data["coalesced"] == []
    assert second.event_id == rings[3] and second.data["coalesced"] == rings[1:3]
    assert camera.captures == 2 * 3  # two bursts, not four
    camera.inject(None)
    bell.press()  # nothing was left waiting: the next ring gets its own visitor
    third = bell.wait_event("doorbell.visitor", lambda e: e.event_id not in rings)
    assert third.data["coalesced"] == []


def test_ring_and_chime_work_without_a_store(make_bell, tmp_path):
    (tmp_path / "bell0" / DB_NAME).mkdir(parents=True)  # a database that cannot be opened
    bell = make_bell(NO_FACES)
    assert bell.runtime.store is None
    bell.press()
    assert bell.chime.state is True
    ring = bell.wait_event("doorbell.ring")
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.event_id == ring.event_id and visitor.data["frames"] == 3
    assert bell.runtime.health.get("store").state == "DEGRADED"


# -- the camera --------------------------------------------------------------------------------

def test_camera_unplugged_mid_burst_still_announces_and_is_reopened_when_plugged(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES})
    camera = bell.worker.camera
    camera.fail_after(1)
    bell.press()
    partial = bell.wait_event("doorbell.visitor")
    assert partial.data["frames"] == 1 and "unplugged" in partial.data["reason"]
    assert partial.data["snapshot"]  # the one frame there was is kept
    wait_for(lambda: doorbell_health(bell)[0] == "DEGRADED", timeout=5, message="DEGRADED")
    assert "camera unavailable" in doorbell_health(bell)[1]
    assert bell.runtime.breakers.get("camera").state != "closed"  # the connectivity sensor is off

    bell.press()  # while unplugged: still rings, visitor says why there is no picture
    ring = bell.events("doorbell.ring")[-1]
    missing = bell.wait_event("doorbell.visitor", lambda e: e.event_id == ring.event_id)
    assert missing.data["result"] == "camera_unavailable" and missing.data["visitor"] == "camera unavailable"
    assert rising_edges(bell.chime) == 2

    camera.plug()
    assert_camera_back(bell, timeout=10)


def test_missing_camera_degrades_the_doorbell_but_not_the_ring(make_bell, tmp_path):
    bell = make_bell({"camera": {"backend": "opencv", "source": str(tmp_path / "no-such-camera.mp4")},
                      **NO_FACES})
    bell.press()
    assert bell.chime.state is True
    ring = bell.wait_event("doorbell.ring")
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.event_id == ring.event_id and visitor.data["result"] == "camera_unavailable"
    wait_for(lambda: doorbell_health(bell)[0] == "DEGRADED", timeout=5, message="DEGRADED")
    assert "camera unavailable" in doorbell_health(bell)[1]
    assert bell.runtime.health.overall() == "DEGRADED"  # not FAILED: the doorbell works


# -- recognition -------------------------------------------------------------------------------

def test_recognizer_killed_mid_ring_the_ring_is_still_announced_and_the_child_restarted(make_bell):
    # Looking for 20 px faces makes the child scan each frame at 4x: seconds of work.
    bell = make_bell({"doorbell": {"cooldown_s": 0}, "camera": HD, "faces": {"min_face_px": 20}})
    recognizer = bell.worker.recognizer
    bell.wait_recognizer()
    first_pid = recognizer.pid
    assert bell.sim("status")["recognition"]["pid"] == first_pid  # what bench_doorbell measures
    bell.press()
    wait_for(lambda: recognizer.busy, timeout=10, message="a recognition in progress")
    recognizer.kill()
    ring = bell.events("doorbell.ring")[0]
    visitor = bell.wait_event("doorbell.visitor", timeout=30)
    assert visitor.event_id == ring.event_id
    assert visitor.data["result"] == "recognition_unavailable" and visitor.data["frames"] == 3
    assert visitor.data["snapshot"]
    wait_for(lambda: recognizer.available and recognizer.pid not in (None, first_pid), timeout=60,
             message="a new recognizer child")
    bell.press()
    again = bell.wait_event("doorbell.visitor", lambda e: e.event_id != ring.event_id, timeout=60)
    assert again.data["result"] == "no_face"  # recognition works again (an empty porch)


class NoFaceLibraryDoorbell(DoorbellWorker):
    def make_recognizer(self, options):
        return RecognizerProcess(options=options, face_library="no_such_face_library")


def test_missing_face_library_leaves_the_ring_working_and_says_why(make_bell):
    bell = make_bell(classes=(NoFaceLibraryDoorbell,))
    wait_for(lambda: doorbell_health(bell)[0] == "DEGRADED", timeout=30, message="DEGRADED")
    assert "face recognition unavailable" in doorbell_health(bell)[1]
    assert "no_such_face_library" in doorbell_health(bell)[1]
    bell.press()
    assert bell.chime.state is True
    ring = bell.wait_event("doorbell.ring")
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.event_id == ring.event_id
    assert visitor.data["result"] == "recognition_unavailable" and visitor.data["visitor"] == "recognition unavailable"


def test_known_visitor_is_announced_and_enrollment_elsewhere_needs_no_restart(make_bell, photos, obama_encoding,
                                                                              caplog):
    caplog.set_level(logging.DEBUG)
    bell = make_bell({"doorbell": {"cooldown_s": 0}, "camera": {**HD, "source": str(photos / "obama_2.jpg")},
                      "faces": {"allow_remote_enroll": True}})
    worker = bell.worker
    bell.wait_recognizer()
    bell.press()
    before = bell.wait_event("doorbell.visitor", timeout=60)
    assert before.data["visitor"] == "unknown person" and before.data["faces"][0]["status"] == "unknown"

    # Another process (`edge faces enroll`) writes through its own connection.
    other = Store(bell.state_dir / DB_NAME)
    FaceStore(other).add("obama", [obama_encoding], ts_wall=1.7e9)
    other.close()

    bell.press()
    ring = bell.events("doorbell.ring")[-1]
    visitor = bell.wait_event("doorbell.visitor", lambda e: e.event_id == ring.event_id, timeout=30)
    assert visitor.data["result"] == "faces" and visitor.data["visitor"] == "obama"
    assert visitor.data["event_type"] == "known" and visitor.data["names"] == ["obama"]  # the Visitor event entity
    face = visitor.data["faces"][0]
    assert face["name"] == "obama" and face["status"] == "known" and face["confidence"] > 0.5
    assert bell.worker is worker and bell.runtime.supervisor.runner("doorbell").restarts == 0

    snapshot = bell.wait_event("doorbell.snapshot", lambda e: e.event_id == ring.event_id)
    assert snapshot.data["jpeg"][:2] == b"\xff\xd8" and snapshot.data["content_type"] == "image/jpeg"
    assert (bell.state_dir / "snapshots" / visitor.data["snapshot"]).is_file()
    last = bell.runtime.states.get("doorbell.last_visitor")
    assert (last["visitor"], last["event_id"], last["confidence"]) == ("obama", ring.event_id, face["confidence"])
    assert bell.runtime.states.get("doorbell.rang_recently") == "ON"

    # `edge faces remove obama` in another process: the retained "Last visitor" forgets him.
    other = Store(bell.state_dir / DB_NAME)
    FaceStore(other).remove("obama")
    other.close()
    forgotten = wait_for(lambda: (lambda last: last if last["visitor"] != "obama" else None)(
        bell.runtime.states.get("doorbell.last_visitor")), timeout=10, message="the last visitor relabelled")
    assert forgotten["visitor"] == "unknown person" and forgotten["confidence"] is None
    assert forgotten["event_id"] == ring.event_id
    assert [(f["name"], f["status"]) for f in forgotten["faces"]] == [(None, "unknown")]
    with pytest.raises(CommandRejected, match="no visitor snapshot"):  # his picture is gone from memory too
        bell.command("enroll_last_visitor", {"name": "Barack"})

    # Who came to the door is for Home Assistant and the audit log, not for the journal.
    logged = "\n".join(r.getMessage() + str(r.__dict__.get("exc_text") or "") for r in caplog.records)
    assert "obama" not in logged.lower()


# -- failures that must not take the button path down ----------------------------------------

def assert_not_restarted(bell) -> None:
    assert bell.runtime.supervisor.runner("doorbell").restarts == 0


def ring_and_answer(bell):
    """Press; the chime must ring at once and a visitor event follow for that ring."""
    wait_for(lambda: bell.chime.state is False, timeout=5, message="the previous chime to end")
    bell.press()
    assert bell.chime.state is True
    ring = bell.events("doorbell.ring")[-1]
    return bell.wait_event("doorbell.visitor", lambda e: e.event_id == ring.event_id)


class RefusingFolder(SnapshotFolder):
    """A snapshot folder whose every access is refused, as on a disk with broken permissions."""

    def _refuse(self, *args):
        raise PermissionError(13, "Permission denied", str(self.directory))

    files = save = prune = remove = _refuse


class RefusingDiskDoorbell(DoorbellWorker):
    def make_snapshot_folder(self, state_dir):
        return RefusingFolder(state_dir / "snapshots", keep=5, max_age_days=1)


def test_snapshot_folder_that_raises_permission_error_leaves_ring_and_visitor_working(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES}, classes=(RefusingDiskDoorbell,))
    for _ in range(2):
        visitor = ring_and_answer(bell)
        assert visitor.data["frames"] == 3 and visitor.data["snapshot"] is None
    wait_for(lambda: "cannot save visitor snapshots" in doorbell_health(bell)[1], timeout=5,
             message="the snapshot failure in health")
    state, reason = doorbell_health(bell)
    assert state == "DEGRADED" and "snapshot pruning failed (PermissionError" in reason
    assert_not_restarted(bell)


def test_read_only_snapshot_disk_leaves_ring_and_visitor_working(make_bell, tmp_path, read_only):
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    expired = snapshots / "00000001_20240101T000000Z_old.jpg"  # over the count limit, and dated 1970
    expired.write_bytes(b"\xff\xd8")
    os.utime(expired, (86400.0, 86400.0))
    (snapshots / "00000002_20240101T000000Z_older.jpg").write_bytes(b"\xff\xd8")
    with read_only(snapshots):
        bell = make_bell({"doorbell": {"cooldown_s": 0},
                          "faces": {"enabled": False, "snapshot_dir": str(snapshots), "snapshot_keep": 1}})
        for _ in range(2):
            visitor = ring_and_answer(bell)
            assert visitor.data["result"] == "recognition_off" and visitor.data["snapshot"] is None
        wait_for(lambda: "cannot save visitor snapshots" in doorbell_health(bell)[1], timeout=5,
                 message="the snapshot failure in health")
        assert_not_restarted(bell)
        bell.stop()
    assert expired.exists()


def test_camera_whose_capture_raises_a_driver_error_still_rings_and_announces(make_bell, caplog):
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES})
    camera = bell.worker.camera

    def driver_error():
        raise cv2.error("OpenCV(4.10.0) cvtColor: (-215:Assertion failed) !_src.empty()")

    camera.capture = driver_error  # not a CameraError: what a driver raises on its own
    for _ in range(2):
        visitor = ring_and_answer(bell)
        assert visitor.data["result"] == "camera_unavailable" and visitor.data["frames"] == 0
        assert "Assertion failed" in visitor.data["reason"]
    wait_for(lambda: doorbell_health(bell)[0] == "DEGRADED", timeout=5, message="DEGRADED")
    assert "camera unavailable" in doorbell_health(bell)[1]
    assert any(r.exc_info and isinstance(r.exc_info[1], cv2.error) for r in caplog.records)  # with its traceback
    assert_not_restarted(bell)


class UnreadableReplyRecognizer(RecognizerProcess):
    def recognize(self, frames, known=None, timeout_s=10.0):
        raise pickle.UnpicklingError("invalid load key, '\\x00'.")


class UnreadableReplyDoorbell(DoorbellWorker):
    def make_recognizer(self, options):
        return UnreadableReplyRecognizer(options=options, face_library="no_such_face_library")


def test_unexpected_recognition_error_gives_an_error_visitor_and_the_bell_rings_on(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0}}, classes=(UnreadableReplyDoorbell,))
    bell.press()
    ring = bell.wait_event("doorbell.ring")
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.event_id == ring.event_id
    assert (visitor.data["result"], visitor.data["visitor"]) == ("error", "error")
    assert visitor.data["reason"].startswith("recognition failed: UnpicklingError")
    assert visitor.data["snapshot"]  # the steps after the broken one still ran
    wait_for(lambda: "recognition failed (UnpicklingError" in doorbell_health(bell)[1], timeout=5,
             message="the failure in health")
    assert doorbell_health(bell)[0] == "DEGRADED"
    assert ring_and_answer(bell).data["result"] == "error"
    assert_not_restarted(bell)


@pytest.mark.parametrize("fault, says", [("black", "black frames"), ("frozen", "frozen frames")])
def test_black_or_frozen_camera_is_a_camera_fault_until_it_shows_real_frames_again(make_bell, fault, says):
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES})
    assert bell.sim("camera", action="fault", fault=fault)["fault"] == fault
    bell.press()
    ring = bell.wait_event("doorbell.ring")
    visitor = bell.wait_event("doorbell.visitor")
    assert visitor.event_id == ring.event_id
    assert visitor.data["result"] == "camera_unavailable" and says in visitor.data["reason"]
    assert visitor.data["frames"] == 0 and visitor.data["snapshot"] is None  # no picture of nothing
    wait_for(lambda: doorbell_health(bell)[0] == "DEGRADED", timeout=5, message="DEGRADED")
    assert says in doorbell_health(bell)[1]
    assert bell.runtime.breakers.get("camera").state != "closed"

    assert bell.sim("camera", action="fault", fault="none")["fault"] is None
    assert_camera_back(bell, timeout=30)  # reopened once it shows real frames
    assert_not_restarted(bell)


def test_unknown_camera_fault_from_the_simulator_is_refused_with_the_choices(make_bell):
    bell = make_bell(NO_FACES)
    with pytest.raises(ValueError, match="use one of black, frozen, slow or none"):
        bell.sim("camera", action="fault", fault="smoke")
    assert bell.worker.camera.fault is None


# -- restarts and the simulator ------------------------------------------------------------------

def test_rang_recently_is_off_after_a_worker_restart(make_bell):
    bell = make_bell({"doorbell": {"rang_recently_s": 600}, "supervisor": {"backoff_initial_s": 0.1}, **NO_FACES})
    bell.press()
    bell.wait_event("doorbell.visitor")
    states = bell.runtime.states
    assert states.get("doorbell.rang_recently") == "ON"
    runner = bell.runtime.supervisor.runner("doorbell")
    bell.runtime.supervisor.restart("doorbell")
    wait_for(lambda: runner.restarts == 1 and bell.worker.ready.is_set(), timeout=10,
             message="the restarted doorbell")
    assert states.get("doorbell.rang_recently") == "OFF"  # the old run's 600 s timer died with it


def test_long_press_through_the_simulator_hold(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0, "long_press_s": 0.3}, **NO_FACES})
    pressed = bell.sim("press", hold=0.8)
    assert pressed["rang"] and pressed["hold_s"] == 0.8
    long_press = bell.wait_event("doorbell.long_press")
    assert long_press.event_id == pressed["event_id"]
    assert long_press.data == {"event_type": "long_press", "held_s": 0.3}
    wait_for(lambda: bell.button.state is True, timeout=5, message="the timer to let go")  # pull-up: idle high
    short = bell.sim("press")  # the default 0.1 s
    assert short["rang"]
    wait_for(lambda: bell.button.state is True, timeout=5, message="the short press to end")
    assert [e.event_id for e in bell.events("doorbell.long_press")] == [pressed["event_id"]]
    with pytest.raises(ValueError, match="at most 60 seconds"):
        bell.sim("press", hold=61)


def test_a_camera_unplugged_while_idle_is_noticed_within_the_idle_check_and_a_replug_within_seconds(make_bell):
    clock = FakeClock()
    bell = make_bell({"camera": {"idle_check_s": 30}, **NO_FACES}, clock=clock)
    camera, breaker = bell.worker.camera, bell.runtime.breakers.get("camera")
    assert doorbell_health(bell)[0] == "OK"
    camera.unplug()  # no ring: only the idle check can see it
    clock.advance(30)
    wait_for(lambda: "camera unavailable" in doorbell_health(bell)[1], 5, message="the unplug in health")
    for n in range(2, 8):  # gone a while: failed reopens, each one opening the breaker again
        clock.advance(breaker.retry_in())
        wait_for(lambda n=n: breaker.open_count == n, 5, message=f"failed reopen {n}")
        assert breaker.retry_in() <= 5.0  # the wait never grows past a few seconds
    camera.plug()
    clock.advance(breaker.retry_in())
    wait_for(lambda: doorbell_health(bell)[0] == "OK", 5, message="the replugged camera in use at the next try")


def test_ring_and_recognition_counters_continue_across_a_restart(make_bell):
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES})
    for _ in range(2):
        bell.press()
        ring = bell.events("doorbell.ring")[-1]
        bell.wait_event("doorbell.visitor", lambda e, i=ring.event_id: e.event_id == i)
    wait_for(lambda: bell.runtime.states.get("doorbell.rings") == 2, 5, message="two rings counted")
    runner = bell.runtime.supervisor.runner("doorbell")
    runner.request_restart()  # as after a crash: a new worker object, counters from the store
    wait_for(lambda: runner.restarts == 1 and bell.worker.ready.is_set(), 10, message="the restarted doorbell")
    bell.press()
    wait_for(lambda: bell.runtime.states.get("doorbell.rings") == 3, 5, message="the count going on from 2")


def test_a_longer_recognition_timeout_widens_the_heartbeat_timeout_so_a_slow_board_is_not_hung(make_bell):
    """Answering a ring blocks for the recognition, up to [faces] timeout_s (up to 120 s on a
    slow board): the watchdog must not call the doorbell hung, and restart it, within that."""
    default = make_bell({**NO_FACES})
    slow = make_bell({"faces": {"enabled": False, "timeout_s": 60}})
    assert default.runtime.supervisor.runner("doorbell").worker.heartbeat_timeout_s == 40
    assert slow.runtime.supervisor.runner("doorbell").worker.heartbeat_timeout_s == 90


def _damage_the_events_table(db) -> None:
    """Fill the events table, then overwrite one of its pages, as a failing SD card would."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.executemany("INSERT INTO events(event_id, kind, ts_wall, data) VALUES (?, ?, ?, ?)",
                      [(f"e{i}", "doorbell.ring", 1.7e9, json.dumps({"pad": "x" * 200})) for i in range(3000)])
        c.commit()
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.execute("PRAGMA journal_mode=DELETE")
        page_size, pages = c.execute("PRAGMA page_size").fetchone()[0], c.execute("PRAGMA page_count").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((pages - 3) * page_size)
        f.write(b"\xff" * page_size)
    with contextlib.closing(sqlite3.connect(db)) as c, pytest.raises(sqlite3.DatabaseError):
        c.execute("SELECT COUNT(*) FROM events WHERE data LIKE '%q%'").fetchall()


def test_a_damaged_events_table_costs_the_ring_counts_not_the_button(tmp_path):
    """The doorbell counts the rings of earlier runs at start-up by scanning the events; a
    damaged page there must not stop it from starting (it would restart again and again,
    the button dead meanwhile): it rings, and its health says what failed."""
    SimulatedDoorbell(tmp_path, NO_FACES).start().stop()  # creates the store
    _damage_the_events_table(tmp_path / DB_NAME)
    bell = SimulatedDoorbell(tmp_path, {"doorbell": {"cooldown_s": 0}, **NO_FACES})
    try:
        bell.start()
        bell.press()
        assert bell.wait_event("doorbell.ring").data["event_type"] == "ring"
        wait_for(lambda: "counting earlier rings" in (bell.runtime.health.get("worker.doorbell").reason or ""),
                 timeout=10, message="the doorbell's health to name the failed count")
    finally:
        bell.stop()


class LedThatFailsAtFirst(DoorbellWorker):
    """Its status LED refuses writes (a GPIO chip error) until `led_works` is set."""

    led_works = threading.Event()

    def _open_gpio(self, ctx):
        super()._open_gpio(ctx)
        led, works = self.gpio.led, self.led_works
        for name in ("on", "blink"):
            def write(*args, real=getattr(led, name), **kwargs):
                if not works.is_set():
                    raise OSError(5, "Input/output error")
                return real(*args, **kwargs)
            setattr(led, name, write)


def test_a_status_led_that_fails_at_start_up_costs_the_led_not_the_doorbell(make_bell):
    LedThatFailsAtFirst.led_works.clear()
    bell = make_bell({"doorbell": {"cooldown_s": 0}, **NO_FACES}, classes=(LedThatFailsAtFirst,))
    runner = bell.runtime.supervisor.runner("doorbell")
    bell.press()
    ring = bell.wait_event("doorbell.ring")
    assert bell.wait_event("doorbell.visitor").event_id == ring.event_id
    assert runner.crashes == 0 and runner.restarts == 0
    wait_for(lambda: "state publishing" in bell.runtime.health.get("worker.doorbell").reason, 10,
             message="the doorbell's health to name the failing step")
    # The write that failed is tried again: once the LED works it shows "ready", steadily.
    LedThatFailsAtFirst.led_works.set()
    wait_for(lambda: bell.worker._led_mode == "on" and bell.pin("led_pin").state, 10,
             message="the LED to be switched on once it works")
    wait_for(lambda: bell.runtime.health.get("worker.doorbell").state == "OK", 10, message="the doorbell to be OK")
