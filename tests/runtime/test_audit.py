"""The audit log detects every kind of tampering."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess

import pytest
from runtime_helpers import EDGE, edge_env

from edge.audit import GENESIS, AuditLog, _canonical
from edge.store import Store


@pytest.fixture
def audit(tmp_path):
    store = Store(tmp_path / "edge.sqlite3")
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
    store = Store(state / "edge.sqlite3")
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
