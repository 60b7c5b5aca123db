"""Snapshot retention (count and age, robust to a Pi's jumping wall clock, private files)
and the known-faces tables (a version every writer bumps, idempotent enrollment, removal
of a person's snapshots)."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

from edge.store import Store
from services.doorbell.faces_store import FACES_SCHEMA, FaceStore, check_name
from services.doorbell.snapshots import SANE_WALL, SnapshotFolder, encode_jpeg

NOW = 1_790_000_000.0  # 2026
DAY = 86400.0


class Wall:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def save(folder: SnapshotFolder, event_id: str, ts_wall: float, mtime: float | None = None):
    path = folder.save(event_id, b"\xff\xd8jpeg", ts_wall)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_count_limit_keeps_the_newest_even_when_the_clock_stepped_back(tmp_path):
    wall = Wall(NOW)
    folder = SnapshotFolder(tmp_path / "snaps", keep=3, max_age_days=7, wall=wall)
    for i, ts in enumerate([NOW, NOW + 60, 0.0, 3600.0, NOW + 120]):  # two saved before NTP set the clock
        save(folder, f"ring{i}", ts)
    assert len(folder.prune()) == 2
    kept = [p.name.rsplit("_", 1)[1] for p in folder.files()]
    assert kept == ["ring4.jpg", "ring3.jpg", "ring2.jpg"]  # saved last, whatever their time stamps


def test_age_limit_uses_file_times_but_no_wrong_clock_deletes_or_keeps_forever(tmp_path):
    wall = Wall(NOW)
    folder = SnapshotFolder(tmp_path / "snaps", keep=100, max_age_days=7, wall=wall)
    old = save(folder, "old", NOW, mtime=NOW - 8 * DAY)
    recent = save(folder, "recent", NOW, mtime=NOW - 6 * DAY)
    future = save(folder, "future", NOW, mtime=NOW + 30 * DAY)  # the clock was wrong, then stepped back
    unset = save(folder, "unset", NOW, mtime=86400.0)  # written in "1970", before the clock was set
    assert folder.prune() == [old.name]
    assert recent.exists() and future.exists() and unset.exists()
    assert unset.stat().st_mtime == NOW  # its age starts now...
    wall.now = NOW + 7.5 * DAY
    folder.prune()
    assert not unset.exists()  # ...so it expires a week later, like any other
    assert future.exists()


def test_nothing_is_aged_while_the_clock_is_not_set(tmp_path):
    wall = Wall(10_000.0)  # booted without network: 1970
    folder = SnapshotFolder(tmp_path / "snaps", keep=100, max_age_days=1, wall=wall)
    path = save(folder, "ring", NOW, mtime=NOW - 30 * DAY)
    assert folder.prune() == []
    assert path.exists() and SANE_WALL > wall.now


def test_snapshots_are_private_files_in_a_private_folder(tmp_path):
    folder = SnapshotFolder(tmp_path / "snaps", keep=5, max_age_days=1)
    path = folder.save("ring", encode_jpeg(np.zeros((8, 8, 3), np.uint8)), NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(ValueError):
        folder.save("../escape", b"x", NOW)


def test_a_snapshot_jpeg_decodes_to_the_frame_in_4_2_0():
    """simplejpeg writes it (it lets the runtime's other threads run meanwhile): a baseline
    JPEG any viewer opens, the frame's size, close to the frame."""
    y, x = np.mgrid[0:120, 0:160]
    frame = np.stack([x * 255 // 159, y * 255 // 119, (x + y) % 256], axis=-1).astype(np.uint8)
    jpeg = encode_jpeg(frame)
    decoded = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert decoded.shape == frame.shape
    assert np.abs(decoded.astype(int) - frame.astype(int)).mean() < 4
    assert Image.open(io.BytesIO(jpeg)).layer[1][1:3] == (1, 1)  # chroma at half resolution: 4:2:0


def test_read_only_folder_prune_keeps_everything_and_raises_nothing(tmp_path, caplog, read_only):
    wall = Wall(NOW)
    folder = SnapshotFolder(tmp_path / "snaps", keep=1, max_age_days=7, wall=wall)
    old = save(folder, "old", NOW, mtime=NOW - 8 * DAY)
    unset = save(folder, "unset", NOW, mtime=86400.0)  # needs re-dating, which a read-only disk refuses
    newest = save(folder, "newest", NOW)
    (folder.directory / "00000009_x_ring.jpg.tmp").write_bytes(b"half")
    with read_only(folder.directory):
        assert folder.prune() == []  # the count and age limits call for deleting two: neither raises
        with pytest.raises(OSError):  # EROFS on a read-only mount, EACCES under chmod
            folder.save("another", b"\xff\xd8", NOW)  # the worker reports this one (and rings on)
        deleted, failed = folder.remove([old.name, "00000077_gone_ring.jpg"])
    assert old.exists() and unset.exists() and newest.exists()
    assert "cannot delete the snapshot" in caplog.text
    assert deleted == 0 and list(failed) == [old.name]  # the missing one is not a failure


def test_unreadable_folder_prune_logs_and_returns_nothing(tmp_path, caplog):
    class Unlistable(SnapshotFolder):
        def files(self):
            raise PermissionError(13, "Permission denied", str(self.directory))

    folder = Unlistable(tmp_path / "snaps", keep=1, max_age_days=7, wall=Wall(NOW))
    assert folder.prune() == []
    assert "cannot list the snapshots" in caplog.text


def encoding(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=128)


def test_every_writer_bumps_the_version_the_running_doorbell_polls(tmp_path):
    runtime = FaceStore(Store(tmp_path / "edge.sqlite3", schemas=[FACES_SCHEMA]))
    cli = FaceStore(Store(tmp_path / "edge.sqlite3", schemas=[FACES_SCHEMA]))  # another connection, as `edge faces` is
    try:
        start = runtime.version()
        cli.add("alice", [("photo:a", [encoding(1)])], NOW)
        assert runtime.version() > start
        after_add = runtime.version()
        cli.remove("alice")
        assert runtime.version() > after_add
    finally:
        runtime.store.close()
        cli.store.close()


def test_encodings_round_trip_and_the_same_photo_is_enrolled_once(tmp_path):
    faces = FaceStore(Store(tmp_path / "edge.sqlite3", schemas=[FACES_SCHEMA]))
    try:
        assert faces.add("alice", [("photo:a", [encoding(1)]), ("photo:b", [encoding(2)])], NOW) == (2, 0)
        version = faces.version()
        assert faces.add("alice", [("photo:a", [encoding(1)])], NOW) == (0, 1)
        assert faces.version() == version  # nothing changed, nothing to reload
        known = faces.known()
        assert list(known) == ["alice"]
        assert np.array_equal(known["alice"][0], encoding(1)) and np.array_equal(known["alice"][1], encoding(2))
        assert [(p.name, p.photos) for p in faces.people()] == [("alice", 2)]
    finally:
        faces.store.close()


def test_a_photo_with_its_night_copy_counts_once_and_re_enrolling_adds_only_what_it_lacked(tmp_path):
    faces = FaceStore(Store(tmp_path / "edge.sqlite3", schemas=[FACES_SCHEMA]))
    try:
        assert faces.add("alice", [("photo:a", [encoding(1)])], NOW) == (1, 0)  # enrolled before night copies
        assert faces.add("alice", [("photo:a", [encoding(1), encoding(3)]),
                                   ("photo:b", [encoding(2), encoding(4)])], NOW) == (1, 1)
        assert [(p.name, p.photos) for p in faces.people()] == [("alice", 2)]
        assert len(faces.known()["alice"]) == 4  # every encoding is matched against
    finally:
        faces.store.close()


def test_removing_a_person_returns_their_snapshots_only(tmp_path):
    faces = FaceStore(Store(tmp_path / "edge.sqlite3", schemas=[FACES_SCHEMA]))
    try:
        faces.add("alice", [("photo:a", [encoding(1)])], NOW)
        faces.add("bob", [("photo:b", [encoding(2)])], NOW)
        faces.record_snapshot("r1", "1.jpg", ["alice"], NOW)
        faces.record_snapshot("r2", "2.jpg", ["alice", "bob"], NOW)
        faces.record_snapshot("r3", "3.jpg", [], NOW)
        faces.label_snapshot("r3", "bob")
        assert sorted(faces.snapshot_files("alice")) == ["1.jpg", "2.jpg"]
        removed, files = faces.remove("alice")
        assert removed == 1 and sorted(files) == ["1.jpg", "2.jpg"]
        assert faces.snapshot("r3").names == ("bob",)
        assert faces.snapshot("r1") is None and list(faces.known()) == ["bob"]
    finally:
        faces.store.close()


def test_a_snapshot_file_that_could_not_be_deleted_keeps_its_row(tmp_path):
    faces = FaceStore(Store(tmp_path / "edge.sqlite3", schemas=[FACES_SCHEMA]))
    try:
        faces.add("alice", [("photo:a", [encoding(1)])], NOW)
        faces.record_snapshot("r1", "1.jpg", ["alice"], NOW)
        faces.record_snapshot("r2", "2.jpg", ["alice"], NOW)
        removed, files = faces.remove("alice", keep_files={"2.jpg"})
        assert (removed, files) == (1, ["1.jpg"])
        assert faces.snapshot("r1") is None and faces.snapshot("r2") is not None
        assert faces.snapshot_files("alice") == ["2.jpg"]  # found again by the next `edge faces remove`
    finally:
        faces.store.close()


@pytest.mark.parametrize("name", ["", " ", "../x", "a/b", "x" * 65, "-dash", "semi;colon"])
def test_names_that_cannot_be_used_are_refused_with_what_is_allowed(name):
    with pytest.raises(ValueError, match="use 1 to 64 letters"):
        check_name(name)


def test_ordinary_names_are_accepted():
    assert [check_name(n) for n in ("Alice", " Zoë ", "Mary-Jane O'Neil", "Dr. Who", "小明")] == [
        "Alice", "Zoë", "Mary-Jane O'Neil", "Dr. Who", "小明"]
