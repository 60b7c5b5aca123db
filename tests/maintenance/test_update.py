"""`edge update` and `edge rollback` against real releases and a real device process: a good
release is committed, a bad one is rolled back by itself and the old one serves again, a
kill at any step of the switch leaves a device that starts a working release, and a real
wheel of this project installs with pip (or, with nowhere to get its dependencies from,
fails saying what to do)."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest

from edge import __version__, release_install
from edge.commands import CommandRejected
from edge.releases import ReleaseError
from edge.store import DB_NAME
from edge.testing.device import TestDevice
from edge.testing.ports import free_port
from edge.testing.releases import build_wheel, pip_env_without_config
from edge.testing.requirements import missing
from edge.testing.waiting import wait_for
from edge.update import STEPS, read_result
from edge.update_entity import REQUEST_FILE, UpdateWorker, release_from_feed


@pytest.fixture
def running(device):
    """Release 1.0.0 installed, committed and serving."""
    device.install("1.0.0")
    device.service("start")
    device.wait_serving("1.0.0")
    return device


def links(device) -> tuple[str | None, str | None]:
    return device.layout.current(), device.layout.committed()


def test_home_assistants_install_action_updates_from_the_feed_and_edge_rollback_goes_back(running, file_server,
                                                                                        tmp_path):
    """The update entity shows the feed's release; its install action is refused unless
    dangerous commands are allowed, then leaves an audited request that `edge update
    --requested` (the privileged side) carries out: download, checksum, switch, health,
    commit. `edge rollback` then goes back by hand, with the same checks."""
    www, base = file_server
    archive = running.release("1.1.0")
    shutil.copy(archive, www / archive.name)
    sha256 = archive.with_name(archive.name + ".sha256").read_text().split()[0]
    (www / "latest.json").write_text(json.dumps({"version": "1.1.0", "url": archive.name, "sha256": sha256,
                                                 "release_notes_url": "https://example.org/notes/1.1.0"}))
    ha_side = TestDevice(tmp_path / "ha-side", [UpdateWorker], {"update": {"feed_url": f"{base}/latest.json"}})
    with ha_side:
        value = wait_for(lambda: (v := ha_side.runtime.states.get("update")) and v["latest_version"] == "1.1.0" and v,
                         timeout=10)
        assert value["installed_version"] == __version__ and value["in_progress"] is False
        assert value["release_url"] == "https://example.org/notes/1.1.0"
        with pytest.raises(CommandRejected) as refused:
            ha_side.command("install_update", {}, via="mqtt", allow_dangerous=False)
        assert refused.value.code == "unauthorized" and "installs other software" in str(refused.value)
        assert ha_side.command("install_update", {}, via="mqtt") == {"requested": "1.1.0"}
        assert ha_side.runtime.states.get("update")["in_progress"] is True
        assert ha_side.runtime.audit.verify().ok
        records = ha_side.runtime.store.read("SELECT actor, action FROM audit WHERE action = 'update.requested'")
        assert [tuple(r) for r in records] == [("mqtt", "update.requested")]
    request = tmp_path / "ha-side" / REQUEST_FILE
    assert json.loads(request.read_text())["version"] == "1.1.0"
    shutil.copy(request, running.state / REQUEST_FILE)
    # the privileged side reads the feed from the device's own config, not the request
    feed = f"{base}/latest.json"
    running.config.write_text(running.config.read_text().replace("[update]\n", f'[update]\nfeed_url = "{feed}"\n'))
    with pytest.raises(ReleaseError, match="offers 1.1.0, not the requested 6.6.6"):
        release_from_feed(feed, "6.6.6")  # a request the feed does not back is not installed

    done = running.edge("update", "--requested")
    assert done.returncode == 0, done.stdout + done.stderr + running.log()[-2000:]
    assert "updated 1.0.0 -> 1.1.0: ready and healthy, committed" in done.stdout
    assert running.health()["version"] == "1.1.0"
    assert not (running.state / REQUEST_FILE).exists()
    status = json.loads(running.edge("update", "--status", "--json").stdout)
    assert (status["current"], status["committed"], status["pending"]) == ("1.1.0", "1.1.0", None)
    assert {r["version"]: r["previous"] for r in status["releases"]} == {"1.0.0": True, "1.1.0": False}

    done = running.edge("rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolled back 1.1.0 -> 1.0.0: ready and healthy, committed" in done.stdout
    assert running.health()["version"] == "1.0.0"
    assert links(running) == ("1.0.0", "1.0.0")


def test_a_damaged_artifact_is_refused_and_a_release_that_never_gets_ready_is_rolled_back_with_its_migration(
        running):
    """A damaged artifact is refused; a release that migrates the store and then never
    becomes ready (its critical worker fails; /ready answers 503) is rolled back with its
    migration. (One that crashes at start is rolled back under real systemd:
    test_nspawn_update.py.)"""
    # first an artifact that is not what its checksum says: refused before anything happens
    archive = running.release("1.1.0")
    sidecar = archive.with_name(archive.name + ".sha256")
    sidecar.write_text(f"{'0' * 64}  {archive.name}\n")
    done = running.edge("update", str(archive))
    assert done.returncode == 1 and "SHA-256 is" in done.stderr and "nothing was installed" in done.stderr
    sidecar.unlink()
    with pytest.raises(ReleaseError, match="no checksum for edge-1.1.0.tar.gz"):
        release_install.fetch(str(archive), None, running.prefix / "downloads")
    assert running.layout.versions() == ["1.0.0"]

    db = running.state / DB_NAME
    schema = "SELECT component, version FROM schema_migrations ORDER BY 1"
    before = sqlite3.connect(db).execute(schema).fetchall()
    done = running.edge("update", str(running.release("2.0.0", "migrate-and-fail")), "--deadline", "3")
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "ROLLED BACK" in done.stderr and "switched back to 1.0.0" in done.stderr, out
    assert "was not ready and healthy within 3 s" in done.stderr and "/ready answers 503" in done.stderr, out
    assert running.health()["version"] == "1.0.0", out  # the old release serves again
    assert links(running) == ("1.0.0", "1.0.0"), out
    assert read_result(running.state)["outcome"] == "rolled-back", out
    # the failed release migrated the store; its migration went with it
    assert "the store was put back as it was before the update" in done.stderr
    conn = sqlite3.connect(db)
    assert conn.execute(schema).fetchall() == before
    assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'trial_rows'").fetchall()
    migrated = list((running.state / "update-backup").glob("*-migrated.sqlite3"))  # kept, not thrown away
    assert migrated and sqlite3.connect(migrated[0]).execute(
        "SELECT 1 FROM schema_migrations WHERE component = 'trial_release'").fetchall()


KILL = """
import argparse, os, sys
from edge.cli_device import CliDevice
from edge.releases import ReleaseLayout, prefix_for
from edge.service_control import ServiceControl
from edge.update import HealthProbe, Updater

device = CliDevice(argparse.Namespace(config=None, sim=False))
def on_step(step):
    if step == sys.argv[2]:
        os._exit(137)  # as abrupt as a power cut for this process: no cleanup; the kernel drops its lock
Updater(ReleaseLayout(prefix_for()), device.state_dir, ServiceControl.from_env(),
        HealthProbe(device.health_candidates), deadline_s=20, settle_s=0.5, on_step=on_step).update(sys.argv[1])
"""


def test_a_kill_at_each_step_of_the_switch_leaves_a_device_that_starts_a_working_release(running):
    source = running.release("1.1.0")
    for step in STEPS:
        done = subprocess.run([sys.executable, "-c", KILL, str(source), step], env=running.env,
                              capture_output=True, text=True, timeout=60)
        source = running.layout.release("1.1.0")  # from now on, the release unpacked beside the current one
        assert done.returncode == 137, f"{step}: {done.stderr}"
        if step == "switched":  # what the unit's privileged ExecStartPre=+ does at boot
            check = running.edge("update", "--boot-check")
            assert "rolled back to 1.0.0" in check.stdout, check.stdout + check.stderr
        # the device reboots: the service starts again, and `edge run` checks its release first
        running.service("restart")
        expected = "1.1.0" if step == "committed" else "1.0.0"
        running.wait_serving(expected)
        assert links(running) == (expected, expected), step
        if step == "started":  # the trial release itself was started, found itself uncommitted, and gave way
            assert "never committed" in read_result(running.state)["reason"]
            assert "starting the committed release instead" in running.log()


WHEEL_VERSION = "1.2.0"


@pytest.fixture(scope="module")
def wheel_and_wheelhouse(tmp_path_factory):
    """A real wheel of this project at WHEEL_VERSION, and a folder with the wheels of its
    dependencies (the installer tests' cached wheelhouse)."""
    from image.debian_root import wheelhouse

    try:
        wheels = wheelhouse()
    except (OSError, RuntimeError) as exc:
        missing(f"the wheels of the project's dependencies (tests/image/debian_root.py's wheelhouse in "
                f"$EDGE_CI_CACHE) are not there and cannot be downloaded: {exc}")
    return build_wheel(WHEEL_VERSION, tmp_path_factory.mktemp("wheel"), wheels), wheels


def test_a_wheel_update_is_checksum_verified_installs_with_pip_from_a_wheel_folder_and_commits(
        running, wheel_and_wheelhouse):
    """`edge update FILE.whl` on a device without network: its dependencies come from the
    folder [update] pip_args names; the release is a venv of its own made like the current
    one, running the wheel's code; `current` switches and `edge update --status` lists it."""
    wheel, wheels = wheel_and_wheelhouse
    running.env = pip_env_without_config(running.env)  # no pip.conf or index of this machine
    done = running.edge("update", str(wheel), "--sha256", "f" * 64)
    assert done.returncode == 1 and "SHA-256 is" in done.stderr and "nothing was installed" in done.stderr
    assert running.layout.versions() == ["1.0.0"] and not running.layout.release(WHEEL_VERSION).exists()

    running.config.write_text(running.config.read_text().replace(
        "[update]\n", f"[update]\npip_args = [\"--no-index\", \"--find-links\", \"{wheels}\"]\n"))
    done = running.edge("update", str(wheel), timeout=240)  # the checksum from FILE.whl.sha256 beside it
    assert done.returncode == 0, done.stdout + done.stderr + running.log()[-2000:]
    # minutes on a Pi: each step and pip's own lines are shown while they happen
    assert f"installing {wheel.name}: creating the release's venv" in done.stderr, done.stderr
    assert re.search(r"^pip: (Processing|Installing collected packages) ", done.stderr, re.M), done.stderr
    assert f"updated 1.0.0 -> {WHEEL_VERSION}: ready and healthy, committed" in done.stdout
    assert running.health()["version"] == WHEEL_VERSION
    assert links(running) == (WHEEL_VERSION, WHEEL_VERSION)
    release = running.layout.release(WHEEL_VERSION)
    # the wheel's code runs, from the release's own venv, not this checkout
    where = subprocess.run([str(release / "bin" / "python"), "-I", "-c", "import edge; print(edge.__file__)"],
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(release / "lib")), where
    # made like the current release (a test release: no system site-packages)
    assert "include-system-site-packages = false" in (release / "pyvenv.cfg").read_text()

    status = json.loads(running.edge("update", "--status", "--json").stdout)
    assert (status["current"], status["committed"], status["pending"]) == (WHEEL_VERSION, WHEEL_VERSION, None)
    assert {r["version"]: r["previous"] for r in status["releases"]} == {"1.0.0": True, WHEEL_VERSION: False}
    text = running.edge("update", "--status").stdout
    assert re.search(rf"^{re.escape(WHEEL_VERSION)} +current, committed$", text, re.M), text


def test_a_wheel_update_without_its_dependencies_or_the_face_libraries_at_hand_fails_saying_what_to_do(
        running, wheel_and_wheelhouse):
    """Offline, with no [update] pip_args: pip reaches no package index (here one on a
    loopback port nothing listens on, tried once), so the update fails before anything is
    stopped, says how to give the device its dependencies, and leaves no half release. A
    device that recognises faces needs the face libraries too, which are no dependency of
    the wheel: a wheel folder without them is not enough, and the error names them."""
    wheel, wheels = wheel_and_wheelhouse
    offline = pip_env_without_config(running.env, PIP_INDEX_URL=f"http://127.0.0.1:{free_port()}/simple/",
                                     PIP_RETRIES="0")
    running.env = {**offline, "EDGE_DOORBELL_ENABLED": "true", "EDGE_FACES_ENABLED": "true"}
    config = running.config.read_text()
    running.config.write_text(config.replace(
        "[update]\n", f"[update]\npip_args = [\"--no-index\", \"--find-links\", \"{wheels}\"]\n"))
    done = running.edge("update", str(wheel), timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"needs (dlib-bin|face.recognition.models), which pip found in no package index", done.stderr), \
        done.stderr
    assert f"pip download -d DIR {wheel.name} dlib-bin face_recognition_models" in done.stderr
    assert not running.layout.release(WHEEL_VERSION).exists()

    running.env = offline
    running.config.write_text(config)
    done = running.edge("update", str(wheel), timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"edge_appliance-{re.escape(WHEEL_VERSION)}-py3-none-any.whl needs \S+, which pip found in "
                     r"no package index and no wheel folder \(is the device offline\?\)", done.stderr), done.stderr
    assert '[update] pip_args = ["--no-index", "--find-links", "DIR"]' in done.stderr
    assert "release archive (.tar.gz)" in done.stderr and "nothing was installed" in done.stderr
    assert running.layout.versions() == ["1.0.0"] and not running.layout.release(WHEEL_VERSION).exists()
    assert links(running) == ("1.0.0", "1.0.0")
    assert running.health()["version"] == "1.0.0"  # never stopped
