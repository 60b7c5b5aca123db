"""`edge backup` and `edge restore` on a device with a real store (events, known faces, the
audit log): backup while the device writes, wipe, restore gives the same rows; a damaged,
tampered or newer backup is refused and changes nothing; scheduled backups rotate."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from edge.assembly import store_schemas, worker_classes
from edge.audit import AuditLog
from edge.backup import BackupError, list_backups, restore_backup, sources_for
from edge.cli_device import CliDevice
from edge.service_control import ServiceControl
from edge.store import DB_NAME, Store
from edge.testing.device import TestDevice
from edge.testing.waiting import wait_for
from services.doorbell.faces_store import FaceStore


def populate(device) -> None:
    """A store as a device in use has it: events, known faces, audit records, a kv value
    big enough (2 MB) that the backup shows its progress."""
    store = Store(device.state / DB_NAME, schemas=store_schemas(worker_classes()))
    audit = AuditLog(store, device.state / "audit.key", device.state / "audit.anchor")
    for n in range(50):
        store.record_event(f"ev{n}", "doorbell.ring", {"n": n})
        audit.append("test", "door.open", {"n": n})
    faces = FaceStore(store)
    rng = np.random.default_rng(1)
    faces.add("alice", [(f"alice_{i}.jpg", [rng.random(128)]) for i in range(3)], time.time())
    faces.add("bob", [("bob_0.jpg", [rng.random(128)])], time.time())
    store.kv_set("big", os.urandom(1 << 20).hex())
    store.close()
    (device.state / "snapshots").mkdir()
    (device.state / "snapshots" / "ev1.jpg").write_bytes(os.urandom(5000))


def rows(db: Path) -> dict[str, list[tuple]]:
    """Every user table's rows, in rowid order."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                         "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    conn.close()
    return out


def listing(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def in_use(device):
    populate(device)
    return device


def test_backup_while_running_then_wipe_and_restore_gives_the_same_rows_and_faces(in_use):
    device = in_use
    device.install("1.0.0")
    device.service("start")
    device.wait_serving("1.0.0")
    # a writer keeps committing while the backup copies the store: the online backup API
    # still takes one consistent snapshot
    writer = subprocess.Popen([sys.executable, "-m", "edge.testing.store_writer", str(device.state / DB_NAME)],
                              stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: writer.stdout.readline(), timeout=30)
        backup = device.root / "b.tar.gz"
        done = device.edge("backup", str(backup), "--with-secrets")
        assert done.returncode == 0, done.stderr
        assert "copying the store: 100%" in done.stderr and "writing the backup: 100% (" in done.stderr  # progress
    finally:
        writer.kill()
        writer.wait()
    manifest = json.load(tarfile.open(backup).extractfile("manifest.json"))
    assert manifest["schema"]["faces"] >= 1 and manifest["with_secrets"] is True
    members = {f["name"]: f for f in manifest["files"]}
    assert members["secrets/audit.key_file"]["mode"] == 0o600 and "state/snapshots/ev1.jpg" in members
    # what was in the backup's store, read from the backup itself
    with tarfile.open(backup) as tar:
        tar.extract("store/edge.sqlite3", device.root / "inside", filter="data")
    expected = rows(device.root / "inside" / "store" / "edge.sqlite3")
    assert len(expected["faces"]) == 4 and len(expected["audit"]) == 50
    assert len(expected["events"]) > 50  # the rings, and what the writer had committed by then

    device.service("stop")
    for path in device.state.iterdir():  # the SD card died: a new one, empty
        subprocess.run(["rm", "-rf", str(path)], check=True)
    done = device.edge("restore", str(backup), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True
    device.wait_serving("1.0.0")  # restore started the service again
    assert rows(device.state / DB_NAME) == expected
    store = Store(device.state / DB_NAME, schemas=store_schemas(worker_classes()))
    known = FaceStore(store).known()
    store.close()
    assert sorted(known) == ["alice", "bob"] and len(known["alice"]) == 3
    verify = device.edge("audit", "verify")
    assert verify.returncode == 0 and "50 records: ok" in verify.stdout, verify.stdout + verify.stderr
    assert hashlib.sha256((device.state / "snapshots" / "ev1.jpg").read_bytes()).hexdigest() == \
        members["state/snapshots/ev1.jpg"]["sha256"]


def rewrite(backup: Path, target: Path, change, extra: tuple[str, bytes] | None = None) -> None:
    """Copy a backup member by member, `change(name, data) -> data` on the way."""
    with tarfile.open(backup) as src, tarfile.open(target, "w:gz") as out:
        for member in src.getmembers():
            data = change(member.name, src.extractfile(member).read())
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))
        if extra:
            info = tarfile.TarInfo(extra[0])
            info.size = len(extra[1])
            out.addfile(info, io.BytesIO(extra[1]))


def newer_schema(backup: Path, tmp_path: Path):
    """A change that puts in the backup's store migrated to core v99, and says so in the
    manifest with the right checksum (as a newer release would have made it)."""
    db = tmp_path / "newer.sqlite3"
    db.write_bytes(tarfile.open(backup).extractfile("store/edge.sqlite3").read())
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO schema_migrations VALUES ('core', 99, 0)")
    conn.commit()
    conn.close()
    newer = db.read_bytes()

    def change(name: str, data: bytes) -> bytes:
        if name == "store/edge.sqlite3":
            return newer
        if name == "manifest.json":
            manifest = json.loads(data)
            manifest["schema"]["core"] = 99
            for entry in manifest["files"]:
                if entry["name"] == "store/edge.sqlite3":
                    entry["sha256"], entry["size"] = hashlib.sha256(newer).hexdigest(), len(newer)
            return json.dumps(manifest).encode()
        return data
    return change


def restore(device, path: Path):
    """Restore in this process, as `edge restore` does, with a service control that records
    what was asked of it (a real command, not a mock of one)."""
    from edge.store import CORE_SCHEMA

    device_cli = CliDevice(argparse.Namespace(config=None, sim=False), environ=device.env)
    config, classes = device_cli.load()
    sources = sources_for(config, classes, device.state, device.config)
    known = {s.component: len(s.scripts) for s in [CORE_SCHEMA, *store_schemas(classes)]}
    calls = device.root / "service-calls"
    return restore_backup(path, sources, known, ServiceControl(f"sh -c 'echo {{action}} >> {calls}'"))


def test_a_damaged_tampered_or_newer_backup_is_refused_and_changes_nothing(in_use, tmp_path):
    device = in_use
    backup = tmp_path / "good.tar.gz"
    done = device.edge("backup", str(backup), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["with_secrets"] is False
    # without --with-secrets no secret leaves the device (the audit key sits beside the store)
    assert not [n for n in tarfile.open(backup).getnames() if n.startswith("secrets/") or "audit.key" in n]

    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    tampered = tmp_path / "tampered.tar.gz"  # one row changed, the manifest left as it was
    rewrite(backup, tampered, lambda name, data: data.replace(b'"n":7', b'"n":8') if name.startswith("store/")
            else data)
    smuggled = tmp_path / "smuggled.tar.gz"  # a file the manifest does not list
    rewrite(backup, smuggled, lambda name, data: data, extra=("state/../../evil", b"x"))
    # a store from a release that knows a later core schema, made for real with SQLite
    newer = tmp_path / "newer.tar.gz"
    rewrite(backup, newer, newer_schema(backup, tmp_path))

    before = listing(device.state)
    for bad, says in ((damaged, "cannot be read as a backup"), (tampered, "does not match its checksum"),
                      (smuggled, "does not hold exactly the files its manifest lists"),
                      (newer, "the backup's store is newer than this release: core v99")):
        with pytest.raises(BackupError) as refused:
            restore(device, bad)
        assert says in str(refused.value) and "nothing was changed" in str(refused.value), bad.name
        assert listing(device.state) == before, bad.name
        assert not (device.root / "service-calls").exists(), "the service was not touched"
    done = device.edge("restore", str(tampered))  # and on the command line
    assert done.returncode == 1 and "edge restore: " in done.stderr and "checksum" in done.stderr

    # the good one restores; the audit key it did not carry stays, so the log still verifies
    key = (device.state / "audit.key").read_bytes()
    restore(device, backup)
    assert (device.root / "service-calls").read_text().split() == ["stop", "start"]
    assert (device.state / "audit.key").read_bytes() == key
    store = Store(device.state / DB_NAME, readonly=True)
    report = AuditLog(store, device.state / "audit.key", device.state / "audit.anchor", create_key=False).verify()
    store.close()
    assert report.ok and report.records == 50


def test_scheduled_backups_are_made_and_the_oldest_removed(tmp_path):
    from edge.backup_schedule import ScheduledBackup

    directory = tmp_path / "backups"
    dev = TestDevice(tmp_path / "state", [ScheduledBackup],
                     {"backup": {"enabled": True, "interval_h": 0.0003, "keep": 2, "directory": str(directory)}})
    with dev:
        wait_for(lambda: len(list_backups(directory)) == 2, timeout=30)
        first = list_backups(directory)[0]
        wait_for(lambda: first not in list_backups(directory), timeout=30, message="the oldest backup removed")
        assert len(list_backups(directory)) == 2
    manifest = json.load(tarfile.open(list_backups(directory)[-1]).extractfile("manifest.json"))
    assert manifest["files"][0]["name"] == "store/edge.sqlite3" and manifest["with_secrets"] is False


def test_printer_jobs_kept_outside_the_state_directory_are_backed_up_and_restored_where_the_config_says(device):
    """[printer] jobs_dir outside the state directory: `edge backup` takes its files, and
    `edge restore` makes that folder the backup's again (after a wipe: the same files and
    modes; files added since are put aside with the rest of the previous state), owned by
    the device's user like the state directory."""
    jobs = device.root / "srv" / "printer-jobs"
    device.config.write_text(device.config.read_text() + f'[printer]\njobs_dir = "{jobs}"\n')
    (jobs / "parts").mkdir(parents=True)
    (jobs / "benchy.gcode").write_text("G28\nG1 X10 Y10\n")
    (jobs / "parts" / "bracket.gcode").write_bytes(os.urandom(3000))
    (jobs / "parts" / "bracket.gcode").chmod(0o640)
    (device.state / "note").write_text("state")
    calls = device.root / "service-calls"
    device.env["EDGE_SERVICE_CONTROL"] = f"sh -c 'echo {{action}} >> {calls}'"

    def files(root: Path) -> dict[str, tuple[str, int]]:
        return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode & 0o777)
                for p in sorted(root.rglob("*")) if p.is_file()}

    backed_up = files(jobs)
    backup = device.root / "b.tar.gz"
    done = device.edge("backup", str(backup), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    names = tarfile.open(backup).getnames()
    assert {"extra/printer-jobs/benchy.gcode", "extra/printer-jobs/parts/bracket.gcode", "state/note"} <= set(names)

    # the SD card died, and the folder with it; the state directory's owner is the device's user
    subprocess.run(["rm", "-rf", str(jobs)], check=True)
    for path in device.state.iterdir():
        subprocess.run(["rm", "-rf", str(path)], check=True)
    if os.geteuid() == 0:
        os.chown(device.state, 4242, 4242)
    done = device.edge("restore", str(backup))
    assert done.returncode == 0, done.stdout + done.stderr
    assert files(jobs) == backed_up and (device.state / "note").read_text() == "state"
    assert calls.read_text().split() == ["stop", "start"]
    if os.geteuid() == 0:  # restored as root: the printer worker (the device's user) can read and add jobs
        assert {(p.stat().st_uid, p.stat().st_gid) for p in [jobs, *jobs.rglob("*")]} == {(4242, 4242)}

    # a job added since the backup goes aside with the previous state: the folder is the backup's
    (jobs / "since.gcode").write_text("G28\n")
    done = device.edge("restore", str(backup))
    assert done.returncode == 0, done.stdout + done.stderr
    assert files(jobs) == backed_up
    kept = device.state / ".pre-restore" / "outside" / str(jobs).lstrip("/") / "since.gcode"
    assert kept.read_text() == "G28\n"
