"""The audit log detects every kind of tampering."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import signal
import sqlite3
import subprocess
import threading

import pytest
from runtime_helpers import EDGE, edge_env, running_edge

from edge.audit import AUDIT_SCHEMA, GENESIS, AuditLog, _canonical
from edge.store import Store, StoreUnavailable
from edge.testing.waiting import scaled


@pytest.fixture
def audit(tmp_path):
    store = Store(tmp_path / "edge.sqlite3", schemas=[AUDIT_SCHEMA])
    log = AuditLog(store, tmp_path / "audit.key", tmp_path / "audit.anchor")
    for n in range(1, 6):
        log.append("mqtt", "door.open", {"n": n}, event_id=f"e{n}")
    yield log, store
    store.close()


def sql(store, statement, params=()):
    store.write(lambda c: c.execute(statement, params))


def test_untouched_log_verifies(audit):
    log, _ = audit
    report = log.verify()
    assert report.ok and report.records == 5 and report.problems == []


def test_edited_record_is_detected(audit):
    log, store = audit
    sql(store, "UPDATE audit SET detail='{\"n\":99}' WHERE seq=3")
    report = log.verify()
    assert not report.ok and report.problems == ["record 3: MAC does not match (the record or one before it was "
                                                 "edited, inserted or re-hashed without the key)"]


def test_inserted_record_is_detected(audit):
    log, store = audit
    # make room at 3 (via negative numbers: seq is unique), then forge a record there
    sql(store, "UPDATE audit SET seq=-seq WHERE seq>=3")
    sql(store, "UPDATE audit SET seq=1-seq WHERE seq<0")
    sql(store, "INSERT INTO audit VALUES (3, 0, 'evil', 'door.open', '{}', NULL, ?)", ("0" * 64,))
    report = log.verify()
    assert not report.ok and any(p.startswith("record 3: MAC") for p in report.problems)


def test_reordered_records_are_detected(audit):
    log, store = audit
    rows = {r["seq"]: r for r in log.records()}
    for a, b in ((2, 4), (4, 2)):
        r = rows[b]
        sql(store, "UPDATE audit SET ts_wall=?, actor=?, action=?, detail=?, event_id=?, mac=? WHERE seq=?",
            (r["ts_wall"], r["actor"], r["action"], r["detail"], r["event_id"], r["mac"], a))
    report = log.verify()
    assert not report.ok and any("record 2" in p for p in report.problems)


def test_deleted_middle_record_is_detected(audit):
    log, store = audit
    sql(store, "DELETE FROM audit WHERE seq=2")
    report = log.verify()
    assert not report.ok and report.problems[0].startswith("record 3: expected sequence number 2")


def test_deleting_the_newest_records_is_detected(audit):
    log, store = audit
    sql(store, "DELETE FROM audit WHERE seq>=4")
    report = log.verify()
    assert report.problems == ["the anchored newest record 5 is gone (records at the end of the log were deleted)"]


def test_chain_rehashed_from_an_edited_record_without_the_key_is_detected(audit):
    log, store = audit
    # The attacker knows the algorithm but not the key (it lives outside the database).
    wrong_key = b"attacker-guess"
    prev = log.records()[1]["mac"]
    for r in log.records()[2:]:
        detail = '{"n":0}' if r["seq"] == 3 else r["detail"]
        mac = hmac.new(wrong_key, prev.encode() + _canonical(r["seq"], r["ts_wall"], r["actor"], r["action"],
                                                              detail, r["event_id"]), hashlib.sha256).hexdigest()
        sql(store, "UPDATE audit SET detail=?, mac=? WHERE seq=?", (detail, mac, r["seq"]))
        prev = mac
    (log._anchor).write_text(json.dumps({"seq": 5, "mac": prev}))
    report = log.verify()
    assert not report.ok and report.problems[0].startswith("record 3: MAC does not match")


def test_crash_between_commit_and_anchor_is_not_tampering(audit, tmp_path):
    log, store = audit
    anchor = log._anchor.read_text()
    log.append("cli", "faces.enroll", {"name": "alice"})
    log._anchor.write_text(anchor)  # as if the process died before the anchor write
    report = log.verify()
    assert report.ok and report.unanchored == 1


def test_edge_audit_verify_command(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    store = Store(state / "edge.sqlite3", schemas=[AUDIT_SCHEMA])
    log = AuditLog(store, state / "audit.key", state / "audit.anchor")
    log.append("mqtt", "door.open", {})
    log.append("mqtt", "door.open", {})
    env = edge_env(state)
    ok = subprocess.run([EDGE, "audit", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "2 records: ok" in ok.stdout
    store.write(lambda c: c.execute("DELETE FROM audit WHERE seq=2"))
    store.close()
    bad = subprocess.run([EDGE, "audit", "verify"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "TAMPERED: the anchored newest record 2 is gone" in bad.stdout


def test_genesis_is_fixed():
    assert GENESIS == "0" * 64


def test_concurrent_appends_from_several_threads_all_succeed_and_verify(tmp_path):
    store = Store(tmp_path / "edge.sqlite3", schemas=[AUDIT_SCHEMA])
    log = AuditLog(store, tmp_path / "audit.key", tmp_path / "audit.anchor")
    errors, seqs = [], []
    start = threading.Barrier(8)

    def appender(n):
        try:
            start.wait(5)
            for i in range(25):
                seqs.append(log.append(f"thread{n}", "door.open", {"i": i}))
        except Exception as exc:  # the test fails on any, below
            errors.append(exc)

    threads = [threading.Thread(target=appender, args=(n,)) for n in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == [] and sorted(seqs) == list(range(1, 201))
        report = log.verify()
        assert report.ok and report.records == 200 and report.unanchored == 0, report.problems
        assert json.loads(log._anchor.read_text())["seq"] == 200
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    finally:
        store.close()


def test_anchor_that_cannot_be_written_degrades_the_store_and_the_record_still_counts(tmp_path):
    health = []
    store = Store(tmp_path / "edge.sqlite3", on_health=lambda ok, reason: health.append((ok, reason)),
                  schemas=[AUDIT_SCHEMA])
    log = AuditLog(store, tmp_path / "audit.key", tmp_path / "gone" / "audit.anchor")  # no such directory
    try:
        assert log.append("mqtt", "door.open", {}) == 1  # no exception: the record is committed
        assert not store.healthy and health[-1][0] is False
        assert "cannot write the audit anchor" in health[-1][1]
        assert [r["seq"] for r in log.records()] == [1]
    finally:
        store.close()


def test_truncating_the_log_and_rewriting_the_anchor_without_the_key_is_detected(audit):
    log, store = audit
    real_anchor = json.loads(log._anchor.read_text())
    kept = log.records()[2]  # keep records 1-3, delete 4 and 5
    sql(store, "DELETE FROM audit WHERE seq>=4")
    for forged in ({"seq": 3, "mac": kept["mac"]},
                   {"seq": 3, "mac": kept["mac"], "anchor_mac": real_anchor["anchor_mac"]}):
        log._anchor.write_text(json.dumps(forged))
        report = log.verify()
        assert not report.ok and report.records == 3
        assert report.problems == [f"anchor file {log._anchor} is not authentic (its MAC does not match the audit "
                                   f"key): it was rewritten without the key, e.g. to hide deleted newest records"]


def test_corrupt_anchor_file_is_reported_not_raised(audit):
    log, _ = audit
    for text in ("{not json", "[1, 2]", '{"seq": "five", "mac": 1}', ""):
        log._anchor.write_text(text)
        report = log.verify()
        assert not report.ok and len(report.problems) == 1, text
        assert report.problems[0].startswith(f"anchor file {log._anchor} is corrupt ("), text


def test_missing_key_is_reported_as_audit_key_missing_and_never_recreated(audit, tmp_path):
    log, store = audit
    key = tmp_path / "audit.key"
    key.unlink()
    report = AuditLog(store, key, log._anchor, create_key=False).verify()
    assert not report.ok and not report.checked and report.records == 5
    assert report.problems == [f"audit key missing: {key} does not exist, so none of the 5 records can be "
                               f"checked; restore it from a backup (a new key would make every record look edited)"]
    with pytest.raises(StoreUnavailable, match="audit key missing"):
        AuditLog(store, key, log._anchor)  # the device does not paper over it either
    assert not key.exists()


def test_edge_audit_verify_neither_migrates_the_store_nor_creates_a_key(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    store = Store(state / "edge.sqlite3", schemas=[AUDIT_SCHEMA])
    AuditLog(store, state / "audit.key", state / "audit.anchor").append("mqtt", "door.open", {})
    # as if written by an older version: only the audit table, no migration bookkeeping
    store.close()
    with contextlib.closing(sqlite3.connect(state / "edge.sqlite3")) as conn:
        # every other table, whichever components this test process registered migrations for
        others = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                             "AND name NOT IN ('audit', 'sqlite_sequence')")]
        conn.executescript("".join(f"DROP TABLE {name};" for name in others))

    def tables():
        with contextlib.closing(sqlite3.connect(state / "edge.sqlite3")) as conn:
            return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"))

    before = tables()
    env = edge_env(state)
    ok = subprocess.run([EDGE, "audit", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "1 records: ok" in ok.stdout, ok.stdout + ok.stderr
    assert "audit" in before and "kv" not in before and tables() == before
    (state / "audit.key").unlink()
    missing = subprocess.run([EDGE, "audit", "verify"], env=env, capture_output=True, text=True)
    assert missing.returncode == 1
    assert "CANNOT VERIFY: audit key missing" in missing.stdout and "1 records: FAILED" in missing.stdout
    assert not (state / "audit.key").exists() and tables() == before


def test_a_wiped_log_rows_and_anchor_gone_fails_verify(audit):
    log, store = audit
    sql(store, "DELETE FROM audit")
    log._anchor.unlink()
    report = log.verify()
    assert not report.ok and report.records == 0
    assert report.problems == [f"anchor file {log._anchor} is missing although the key exists: the log was wiped "
                               f"or its anchor deleted"]


def test_a_dropped_audit_table_fails_verify(audit):
    log, store = audit
    sql(store, "DROP TABLE audit")
    report = log.verify()
    assert not report.ok and "the audit table is gone (it was dropped)" in report.problems


def test_an_empty_new_log_verifies_from_its_genesis_anchor(tmp_path):
    store = Store(tmp_path / "edge.sqlite3", schemas=[AUDIT_SCHEMA])
    try:
        log = AuditLog(store, tmp_path / "audit.key", tmp_path / "audit.anchor")
        assert json.loads((tmp_path / "audit.anchor").read_text())["seq"] == 0
        assert log.verify().ok
    finally:
        store.close()


def test_deleting_every_row_but_the_anchor_stays_detected_after_new_records(audit):
    log, store = audit
    sql(store, "DELETE FROM audit")
    for _ in range(8):  # the anchor was at 5: new records chain on from it, never from genesis
        log.append("mqtt", "door.open", {})
    report = log.verify()
    assert not report.ok
    assert "record 6: expected sequence number 1 (a record was deleted, inserted or reordered)" in report.problems


def test_a_device_that_finds_the_key_but_no_anchor_refuses_to_audit(audit, tmp_path):
    log, store = audit
    sql(store, "DELETE FROM audit")
    log._anchor.unlink()
    device = AuditLog(store, tmp_path / "audit.key", log._anchor)  # the next start of the runtime
    with pytest.raises(StoreUnavailable, match="the log was wiped or its anchor deleted"):
        device.append("mqtt", "door_opened", {})
    assert device.records() == [] and not store.healthy


def test_an_anchor_written_before_count_and_first_were_kept_still_verifies(audit):
    log, _ = audit
    seq, mac = 5, log.records()[-1]["mac"]
    legacy = hmac.new(log._key, b"edge-audit-anchor-v1\0" + json.dumps([seq, mac], separators=(",", ":")).encode(),
                      hashlib.sha256).hexdigest()
    log._anchor.write_text(json.dumps({"seq": seq, "mac": mac, "anchor_mac": legacy}))
    assert log.verify().ok
    log.append("mqtt", "door.open", {})
    assert log.verify().ok


def test_the_key_can_live_outside_the_state_directory(tmp_path):
    """[audit] key_file: the runtime and `edge audit verify` use the key there (e.g. under the
    root-owned /etc/edge, out of reach of whoever can write the database)."""
    state, etc = tmp_path / "state", tmp_path / "etc"
    etc.mkdir()
    config = tmp_path / "edge.toml"
    config.write_text(f'[audit]\nkey_file = "{etc / "audit.key"}"\n[health]\nport = 0\n')
    env = edge_env(state, EDGE_CONFIG=config)
    with running_edge(tmp_path, env) as (proc, _):
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=scaled(10))
    assert (etc / "audit.key").exists() and not (state / "audit.key").exists()
    store = Store(state / "edge.sqlite3", schemas=[AUDIT_SCHEMA])
    AuditLog(store, etc / "audit.key", state / "audit.anchor").append("cli", "door.open", {})
    store.close()
    ok = subprocess.run([EDGE, "audit", "verify"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "1 records: ok" in ok.stdout, ok.stdout + ok.stderr
