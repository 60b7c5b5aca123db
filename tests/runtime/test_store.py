"""The SQLite store: crash safety, migrations, TTL on monotonic time, full disk."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from runtime_helpers import fill_disk, make_config, remount, small_tmpfs

from edge.clock import FakeClock
from edge.runtime import Runtime
from edge.store import Schema, Store, StoreUnavailable
from edge.testing.waiting import wait_for
from edge.testing.workers import IdleWorker


def test_kill_9_mid_write_keeps_every_reported_commit(tmp_path):
    db = tmp_path / "edge.sqlite3"
    proc = subprocess.Popen([sys.executable, "-m", "edge.testing.store_writer", str(db)], stdout=subprocess.PIPE)
    reported: list[int] = []
    try:
        while len(reported) < 300:
            line = proc.stdout.readline()
            assert line, "writer died"
            reported.append(int(line))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        reported += [int(x) for x in proc.stdout.read().split()]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    store = Store(db)
    try:
        assert store.integrity_check() == "ok"
        ids = {r[0] for r in store.read("SELECT id FROM events")}
        assert set(reported) <= ids
        assert store.read("PRAGMA journal_mode")[0][0] == "wal"
    finally:
        store.close()


def test_migrations_are_versioned_and_applied_once(tmp_path):
    v1 = Schema("test_component", ("CREATE TABLE test_component_things (x INTEGER);",))
    store = Store(tmp_path / "a.sqlite3", schemas=[v1])
    try:
        rows = store.read("SELECT component, version FROM schema_migrations ORDER BY component")
        assert ("test_component", 1) in [tuple(r) for r in rows]
        assert store.migrate([v1]) == []  # nothing left to apply
    finally:
        store.close()
    v2 = Schema("test_component", (*v1.scripts, "ALTER TABLE test_component_things ADD COLUMN y TEXT;"))
    store = Store(tmp_path / "a.sqlite3", schemas=[v2])
    try:
        cols = [r[1] for r in store.read("PRAGMA table_info(test_component_things)")]
        assert cols == ["x", "y"]
    finally:
        store.close()


def test_kv_ttl_uses_monotonic_time_and_survives_wall_clock_jumps(tmp_path):
    clock = FakeClock()
    store = Store(tmp_path / "kv.sqlite3", clock=clock)
    try:
        store.kv_set("weather", {"t": 3}, ttl_s=60)
        clock.jump_wall(-86400 * 365 * 50)  # NTP sets the clock from 1970 to today... or back
        assert store.kv_get("weather") == {"t": 3}
        clock.jump_wall(86400 * 365 * 100)
        assert store.kv_get("weather") == {"t": 3}
        clock.advance(59)
        assert store.kv_get("weather") == {"t": 3}
        clock.advance(1)
        assert store.kv_get("weather") is None
        store.kv_set("forever", 1)
        clock.advance(10**6)
        assert store.kv_get("forever") == 1
    finally:
        store.close()


def test_full_disk_degrades_and_recovers_without_raising_anything_else(tmp_path):
    health = []
    store = Store(tmp_path / "full.sqlite3", on_health=lambda ok, reason: health.append((ok, reason)))
    try:
        pages = store.read("PRAGMA page_count")[0][0]
        store.read(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full" (SQLITE_FULL)
        with pytest.raises(StoreUnavailable, match="state disk is full"):
            for n in range(1000):
                store.record_event(f"e{n}", "test", {"pad": "x" * 4000})
        assert health[-1] == (False, "state disk is full: free space under the state directory")
        assert not store.healthy and store.failed_writes == 1
        store.read("PRAGMA max_page_count = 1000000")
        store.record_event("later", "test", {})
        assert store.healthy and health[-1] == (True, "")
    finally:
        store.close()


def test_an_idle_device_writes_nothing_to_its_store_in_half_an_hour(tmp_path):
    """A running device (the system worker sampling every 30 s, the doorbell idle), watched
    over half an hour of the injected clock: no commit, no changed row, the database and its WAL
    untouched. Periodic states live in memory only (SD-card wear)."""
    from services.doorbell.worker import DoorbellWorker
    from services.system.worker import SystemWorker

    class SystemOnFakeTime(SystemWorker):
        heartbeat_timeout_s = 0.3  # ctx.sleep looks at the (fake) clock every 0.1 s real time

    clock = FakeClock()
    classes = [SystemOnFakeTime, DoorbellWorker]
    proc = tmp_path / "proc"  # an injected /proc whose load the test moves, so each sample differs
    proc.mkdir()
    (proc / "loadavg").write_text("0.00 0.00 0.00 1/100 1\n")
    env = {"EDGE_HEALTH_PORT": "0", "EDGE_SYSTEM_INTERVAL_S": "30", "EDGE_SYSTEM_PROC_ROOT": str(proc),
           "EDGE_FACES_ENABLED": "false", "EDGE_CAMERA_BACKEND": "none"}
    rt = Runtime(make_config(classes, env=env), classes, tmp_path / "state", clock=clock)
    rt.start()
    for runner in rt.supervisor.runners:
        # Each 30 s jump of the fake clock would race the worker's next heartbeat against the
        # watchdog (on a slow emulated CPU the watchdog won: a HUNG worker restarted after a
        # backoff on the fake clock, which the test does not move). Not what this test watches.
        runner.check = lambda now: None
    try:
        wait_for(lambda: rt.states.get("system"), 5, message="the first sample")
        files = [rt.store.path, rt.store.path.with_name(rt.store.path.name + "-wal")]
        before = (rt.store.counters(), [(f.stat().st_size, f.stat().st_mtime_ns) for f in files])
        for step in range(1, 61):  # half an hour, in the worker's own 30 s steps
            load = f"{step / 100:.2f}"
            (proc / "loadavg").write_text(f"{load} 0.00 0.00 1/100 1\n")
            clock.advance(30)
            rt._track_good_boot(clock.monotonic())
            wait_for(lambda: rt.states.get("system", {}).get("load_1m") == float(load), 5,
                     message=f"the sample after {30 * step} s")
        after = (rt.store.counters(), [(f.stat().st_size, f.stat().st_mtime_ns) for f in files])
        assert after == before
    finally:
        rt.stop()


def test_read_only_database_degrades(tmp_path):
    db = tmp_path / "ro.sqlite3"
    Store(db).close()
    store = Store(db)
    try:
        # Reopen the same connection read-only, as SQLite does when the card remounts read-only.
        store._conn.close()
        store._conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
        with pytest.raises(StoreUnavailable, match="read-only"):
            store.record_event("e", "test", {})
        wait_for(lambda: not store.healthy, timeout=1, message="degraded")
    finally:
        store.close()


def get_health(rt):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rt.server.port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def assert_degraded_but_running(rt, store_reason):
    assert rt.health.get("store").state == "DEGRADED" and store_reason in rt.health.get("store").reason
    assert rt.health.overall() == "DEGRADED"
    code, body = get_health(rt)
    assert code == 200 and body["state"] == "DEGRADED"
    assert body["components"]["store"]["state"] == "DEGRADED"
    runner = rt.supervisor.runner("idle")
    beat = runner.last_heartbeat
    wait_for(lambda: runner.last_heartbeat > beat, timeout=5, message="the worker heartbeating on")
    rt.supervisor.tick()
    assert runner.state == "OK" and runner.crashes == 0 and runner.thread.is_alive()


def test_full_state_disk_degrades_the_store_and_the_device_but_workers_keep_running(tmp_path):
    with small_tmpfs(tmp_path / "state") as state:
        rt = Runtime(make_config([IdleWorker], env={"EDGE_HEALTH_PORT": "0"}), [IdleWorker], state)
        rt.start()
        try:
            assert rt.health.get("store").state == "OK"
            fill_disk(state)
            with pytest.raises(StoreUnavailable, match="state disk is full"):
                for n in range(1000):  # SQLite reuses free pages first: write until the disk says no
                    rt.store.record_event(f"e{n}", "test", {"pad": "x" * 4000})
            with pytest.raises(StoreUnavailable):
                rt.audit.append("remote", "door_opened", {"seconds": 1})
            assert_degraded_but_running(rt, "state disk is full: free space under the state directory")
        finally:
            rt.stop()


def test_read_only_state_disk_at_boot_degrades_the_device_but_workers_run(tmp_path):
    with small_tmpfs(tmp_path / "state") as state:
        Store(state / "edge.sqlite3").close()  # a device that ran before...
        remount(state, "ro")  # ...and whose SD card the kernel remounted read-only after errors
        rt = Runtime(make_config([IdleWorker], env={"EDGE_HEALTH_PORT": "0"}), [IdleWorker], state)
        rt.start()
        try:
            assert rt.store is None and rt.audit is None
            assert_degraded_but_running(rt, f"{state} is read-only: check the SD card and remount it read-write")
        finally:
            rt.stop()


def test_a_cli_process_creates_every_components_tables_whatever_it_imported(tmp_path):
    """Which tables exist does not depend on import order: a fresh process that imports no
    worker module opens the store through the CLI's one place and finds every component's
    tables (the doorbell's faces, the MQTT outbox, the audit log)."""
    code = ("import argparse, json; from edge.cli_device import CliDevice; "
            "store = CliDevice(argparse.Namespace(sim=True, config=None)).open_store(); "
            "print(json.dumps(sorted(r[0] for r in store.read('SELECT component FROM schema_migrations'))))")
    env = {**os.environ, "EDGE_STATE_DIR": str(tmp_path / "state")}
    env.pop("EDGE_CONFIG", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert {"audit", "core", "faces", "outbox"} <= set(json.loads(out))


def test_kept_events_wait_in_memory_while_the_disk_is_full_and_are_written_in_order(tmp_path):
    health = []
    store = Store(tmp_path / "full.sqlite3", on_health=lambda ok, reason: health.append((ok, reason)))
    try:
        pages = store.read("PRAGMA page_count")[0][0]
        store.read(f"PRAGMA max_page_count = {pages}")
        for n in range(50):
            store.keep_event(f"ring{n}", "doorbell.ring", {"pad": "x" * 4000})  # never raises
        waiting = store.pending_events
        assert waiting > 0 and not store.healthy
        assert f"{waiting} event(s) wait in memory to be recorded" in health[-1][1]
        store.read("PRAGMA max_page_count = 1000000")
        assert store.flush_pending() == 0
        ids = [e["event_id"] for e in reversed(store.recent_events("doorbell.ring", limit=100))]
        assert ids == [f"ring{n}" for n in range(50)] and store.healthy
    finally:
        store.close()


def test_events_beyond_the_memory_buffer_are_dropped_oldest_first_and_reported(tmp_path, monkeypatch):
    monkeypatch.setattr("edge.store.MAX_PENDING_EVENTS", 5)
    health = []
    store = Store(tmp_path / "full.sqlite3", on_health=lambda ok, reason: health.append((ok, reason)))
    try:
        pages = store.read("PRAGMA page_count")[0][0]
        store.read(f"PRAGMA max_page_count = {pages}")
        for n in range(40):
            store.keep_event(f"ring{n}", "doorbell.ring", {"pad": "x" * 4000})
        counters = store.counters()
        assert counters["pending_events"] == 5
        assert counters["pending_dropped"] >= 35 - 5  # some may have fitted on the disk before it filled
        assert f"{counters['pending_dropped']} event(s) lost: more than 5 waited in memory" in health[-1][1]
        store.read("PRAGMA max_page_count = 1000000")
        assert store.flush_pending() == 0
        assert [e["event_id"] for e in store.recent_events("doorbell.ring", limit=5)] == \
            [f"ring{n}" for n in range(39, 34, -1)]  # the newest kept
    finally:
        store.close()


class StoreWatcher(IdleWorker):
    """Remembers the store its context shows while it runs."""

    name = "idle"
    seen: list = []

    def run(self, ctx):
        while not ctx.sleep(0.05):
            StoreWatcher.seen.append(ctx.store)


def test_a_store_that_failed_at_boot_is_retried_and_called_full_when_the_disk_is_full(tmp_path):
    with small_tmpfs(tmp_path / "state") as state:
        filler = fill_disk(state)  # full before the device starts
        StoreWatcher.seen = []
        rt = Runtime(make_config([StoreWatcher], env={"EDGE_HEALTH_PORT": "0"}), [StoreWatcher], state)
        rt.start()
        try:
            assert rt.store is None
            assert_degraded_but_running(rt, "state disk is full")
            filler.unlink()  # space is back
            rt.retry_store(rt.clock.monotonic() + 3600)
            assert rt.store is not None and rt.audit is not None
            assert rt.health.get("store").state == "OK"
            wait_for(lambda: StoreWatcher.seen and StoreWatcher.seen[-1] is rt.store, 5,
                     message="the running worker to see the store without a restart")
            assert rt.supervisor.runner("idle").restarts == 0
        finally:
            rt.stop()
