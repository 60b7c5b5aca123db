"""`edge faces` and `edge sim` as a person uses them: real processes, the shared face
photos, a running `edge run --sim` driven through its local control endpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from runtime_helpers import EDGE, edge_env, running_edge

from edge.store import DB_NAME, Store
from edge.testing.requirements import missing
from edge.testing.waiting import wait_for
from services.doorbell.faces_store import FACES_SCHEMA, FaceStore


def edge(env, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([EDGE, *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)


def test_enroll_shows_progress_rejects_photos_without_exactly_one_face_and_list_remove(tmp_path, photos):
    env = edge_env(tmp_path / "state")
    result = edge(env, "faces", "enroll", "obama", photos / "obama_1.jpg", photos / "multi_kit_rose.jpg",
                  photos / "noface_cat.png", photos / "obama_3.jpg")
    assert result.returncode == 1, result.stderr  # some photos were rejected
    err = result.stderr
    for step, name in enumerate(["obama_1.jpg", "multi_kit_rose.jpg", "noface_cat.png", "obama_3.jpg"], 1):
        assert f"enrolling {step}/4 {name}" in err
    assert "rejected: 2 faces found in multi_kit_rose.jpg; use a photo with exactly one face" in err
    assert "rejected: no face found in noface_cat.png" in err
    assert "enrolled obama: 2 photo(s)" in result.stdout

    again = edge(env, "faces", "enroll", "obama", photos / "obama_1.jpg")
    assert again.returncode == 0 and "0 photo(s) (1 already enrolled)" in again.stdout

    listed = edge(env, "faces", "list")
    assert listed.returncode == 0
    assert [line.split()[:2] for line in listed.stdout.splitlines()] == [["NAME", "PHOTOS"], ["obama", "2"]]

    # A snapshot labelled with obama goes when obama goes; others stay.
    snapshots = tmp_path / "state" / "snapshots"
    snapshots.mkdir()
    (snapshots / "00000001_20260101T000000Z_ring1.jpg").write_bytes(b"\xff\xd8")
    (snapshots / "00000002_20260101T000100Z_ring2.jpg").write_bytes(b"\xff\xd8")
    store = Store(tmp_path / "state" / DB_NAME, schemas=[FACES_SCHEMA])
    FaceStore(store).record_snapshot("ring1", "00000001_20260101T000000Z_ring1.jpg", ["obama"], 1.7e9)
    FaceStore(store).record_snapshot("ring2", "00000002_20260101T000100Z_ring2.jpg", [], 1.7e9)
    store.close()

    removed = edge(env, "faces", "remove", "obama")
    assert removed.returncode == 0, removed.stderr
    assert "removed obama: 2 photo(s) and 1 snapshot(s)" in removed.stdout
    assert [p.name for p in snapshots.iterdir()] == ["00000002_20260101T000100Z_ring2.jpg"]
    assert "no one is enrolled yet" in edge(env, "faces", "list").stdout
    missing = edge(env, "faces", "remove", "obama")
    assert missing.returncode == 1 and "no one named 'obama' is enrolled" in missing.stderr

    verify = edge(env, "audit", "verify")
    assert verify.returncode == 0 and "2 records: ok" in verify.stdout  # enrolled, removed


def test_enroll_explains_a_bad_name_or_a_missing_photo(tmp_path):
    env = edge_env(tmp_path / "state")
    bad = edge(env, "faces", "enroll", "../root", tmp_path / "x.jpg")
    assert bad.returncode == 2 and "cannot be used as a name" in bad.stderr
    missing = edge(env, "faces", "enroll", "alice", tmp_path / "nowhere.jpg")
    assert missing.returncode == 2 and "no such photo" in missing.stderr and "nowhere.jpg" in missing.stderr


def test_a_ring_with_a_chosen_face_in_the_simulator_from_the_command_line(tmp_path, photos):
    env = edge_env(tmp_path / "state", EDGE_DOORBELL_ENABLED="true", EDGE_DOORBELL_COOLDOWN_S="0")
    with running_edge(tmp_path, env) as (proc, _):
        shown = edge(env, "sim", "camera", "show", "--sim", photos / "obama_2.jpg")  # --sim anywhere
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["showing"].endswith("obama_2.jpg")
        enrolled = edge(env, "faces", "enroll", "obama", photos / "obama_1.jpg")  # while it runs
        assert enrolled.returncode == 0, enrolled.stderr

        def recognition_ready():
            status = edge(env, "sim", "status", "--json")
            return status.returncode == 0 and (json.loads(status.stdout)["recognition"] or {}).get("available")

        wait_for(recognition_ready, timeout=60, interval=0.5, message="the recognition child to start")

        pressed = edge(env, "sim", "press")
        assert pressed.returncode == 0, pressed.stderr
        ring = json.loads(pressed.stdout)
        assert ring["rang"] and ring["event_id"]

        def last_visitor():
            status = edge(env, "sim", "status", "--json")
            assert status.returncode == 0, status.stderr
            last = json.loads(status.stdout)["last_visitor"]
            return last if last and last["event_id"] == ring["event_id"] else None

        last = wait_for(last_visitor, timeout=60, interval=0.5, message="the visitor of the simulated ring")
        assert last["visitor"] == "obama"

        frozen = edge(env, "sim", "camera", "fault", "frozen")
        assert frozen.returncode == 0, frozen.stderr
        assert json.loads(frozen.stdout)["fault"] == "frozen"
        assert json.loads(edge(env, "sim", "status", "--json").stdout)["camera"]["fault"] == "frozen"
        cleared = edge(env, "sim", "camera", "fault", "none")
        assert cleared.returncode == 0 and json.loads(cleared.stdout)["fault"] is None
        unknown = edge(env, "sim", "camera", "fault", "smoke")
        assert unknown.returncode == 2 and "black, frozen, slow, none" in unknown.stderr

        assert edge(env, "sim", "camera", "unplug").returncode == 0
        unplugged = edge(env, "sim", "press")
        assert json.loads(unplugged.stdout)["rang"]  # no camera: the bell still rings
        bad = edge(env, "sim", "camera", "show", tmp_path / "nowhere.jpg")
        assert bad.returncode == 2 and "no such photo" in bad.stderr
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_remove_keeps_the_index_row_of_a_snapshot_it_could_not_delete_and_says_so(tmp_path, read_only):
    env = edge_env(tmp_path / "state")
    state = tmp_path / "state"
    snapshots = state / "snapshots"
    snapshots.mkdir(parents=True)
    stuck = "00000001_20260101T000000Z_ring1.jpg"
    (snapshots / stuck).write_bytes(b"\xff\xd8")
    store = Store(state / DB_NAME, schemas=[FACES_SCHEMA])
    FaceStore(store).add("alice", [("photo:a", [np.random.default_rng(1).normal(size=128)])], 1.7e9)
    FaceStore(store).record_snapshot("ring1", stuck, ["alice"], 1.7e9)
    store.close()

    with read_only(snapshots):
        refused = edge(env, "faces", "remove", "alice")
    assert refused.returncode == 1
    assert f"cannot delete the snapshot {stuck}" in refused.stderr and "run `edge faces remove alice` again" \
        in refused.stderr
    assert (snapshots / stuck).exists()
    store = Store(state / DB_NAME)
    faces = FaceStore(store)
    assert faces.known() == {} and faces.snapshot_files("alice") == [stuck]  # the row waits for the file
    store.close()

    again = edge(env, "faces", "remove", "alice")
    assert again.returncode == 0, again.stderr
    assert "removed alice: 0 photo(s) and 1 snapshot(s)" in again.stdout
    assert not (snapshots / stuck).exists()


def test_a_ring_answered_by_edge_sim_press_survives_a_kill_9_right_after(tmp_path):
    """Killed the instant `edge sim press` answers, the ring is already in the store (once 8
    of 12 were lost: the record was written later, by the doorbell's own thread)."""
    state = tmp_path / "state"
    env = edge_env(state, EDGE_DOORBELL_ENABLED="true", EDGE_FACES_ENABLED="false", EDGE_CAMERA_BACKEND="none",
                   EDGE_DOORBELL_COOLDOWN_S="0")
    answered = []
    for n in range(12):
        run = tmp_path / f"run{n}"
        run.mkdir()
        with running_edge(run, env) as (proc, _):
            endpoint = (state / "endpoint").read_text().strip()
            press = wait_for(lambda: _post_sim(endpoint, "press"), 10, message="a press the doorbell takes")
            proc.send_signal(signal.SIGKILL)  # at once: no clean stop, no flush
            proc.wait(10)
        assert press["rang"], press
        answered.append(press["event_id"])
    store = Store(state / DB_NAME, readonly=True)
    try:
        recorded = {e["event_id"] for e in store.recent_events("doorbell.ring", limit=100)}
    finally:
        store.close()
    assert set(answered) <= recorded, f"lost: {set(answered) - recorded}"


def _post_sim(endpoint: str, command: str, args: dict | None = None):
    request = urllib.request.Request(f"{endpoint}/sim/{command}", data=json.dumps(args or {}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.loads(answer.read())["result"]
    except urllib.error.HTTPError:
        return None  # still starting: asked again


def test_without_options_the_faces_commands_act_on_the_simulator_that_runs_and_say_so(tmp_path, photos):
    """As the README writes them (no --sim): with only a simulator running here, `edge faces`
    acts on its store, not on an empty /var/lib/edge, and says which device it changed."""
    if (Path("/var/lib/edge") / DB_NAME).exists():
        missing("an installed device's store exists in /var/lib/edge: the rule prefers it")
    xdg = tmp_path / "xdg"
    simulator = edge_env(tmp_path / "unused", EDGE_DOORBELL_ENABLED="true", EDGE_FACES_ENABLED="false")
    simulator.pop("EDGE_STATE_DIR")
    simulator["XDG_STATE_HOME"] = str(xdg)
    with running_edge(tmp_path, simulator) as (proc, _):
        enrolled = edge(simulator, "faces", "enroll", "obama", photos / "obama_1.jpg")
        assert enrolled.returncode == 0, enrolled.stderr
        assert f"(simulator), state in {xdg / 'edge'})" in enrolled.stdout
        listed = edge(simulator, "faces", "list")
        assert "obama" in listed.stdout
    store = Store(xdg / "edge" / DB_NAME, readonly=True)
    try:
        assert FaceStore(store).people()[0].name == "obama"
    finally:
        store.close()


def test_edge_sim_status_is_a_table_for_a_person(tmp_path):
    env = edge_env(tmp_path / "state", EDGE_DOORBELL_ENABLED="true", EDGE_FACES_ENABLED="false")
    with running_edge(tmp_path, env):
        wait_for(lambda: _post_sim((tmp_path / "state" / "endpoint").read_text().strip(), "press"), 10,
                 message="a ring")
        shown = edge(env, "sim", "status")
    assert shown.returncode == 0, shown.stderr
    rows = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert rows["button"].strip() in ("pressed", "released") and rows["rings"].strip().startswith("1 (1 presses")
    assert rows["recognition"].strip() == "off" and "showing an empty porch" in rows["camera"]
