"""Updates that roll themselves back (blue-green, as Mender and RAUC do with boot slots):
install the new release beside the running one, stop the service, save the store, switch
the `current` link, start the service, and commit only when the new release answers ready
and healthy (and says it is that version) within a deadline and stays so for a settling
time. Otherwise stop it, put the saved store back if the new release migrated it, switch
back, start the old one, and say why.

Order, and what a power cut at each step leaves (edge.releases keeps every step atomic):
  installed       the new release sits unused beside the old: the old one boots
  stopped         the old one boots again
  store-saved     a copy of the store before any migration, in <state>/update-backup/
  recorded        update.json names the trial (version, from, the copy, the schema before)
  switched        `current` names the new release, `committed` still the old one
  started         the new release runs (and may migrate the store)
  committed       `committed` names the new release; update.json is cleared
At boot, `current` != `committed` with no updater alive means an interrupted trial: it is
rolled back (`recover_at_boot`, called by `edge run` before anything opens the store, and
by `edge update --boot-check`, which a unit can run privileged in ExecStartPre=+).

Migrations are reverted by putting the saved copy back (with the audit anchor saved beside
it, so the audit chain stays whole), and only when the schema changed: a trial that did
not migrate keeps what it recorded meanwhile (rings are not thrown away for nothing).

Not responsible for: unpacking releases (edge.release_install), the link layout
(edge.releases), how the service is stopped or started (edge.service_control).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

from edge import release_install
from edge.releases import ReleaseError, ReleaseLayout, prefix_for
from edge.service_control import ServiceControl, ServiceControlError
from edge.store import DB_NAME
from edge.store_copy import copy_store, remove_store_files, schema_versions

log = logging.getLogger("edge.update")

BACKUP_DIR = "update-backup"  # under the state directory
RESULT_FILE = "update-result.json"  # under the state directory: the last outcome, for Home Assistant
ANCHOR = "audit.anchor"
# store-<older>-before-<newer>.sqlite3, its .anchor, and the -migrated store a rollback kept
COPY_NAME = re.compile(r"^store-(?P<older>.+)-before-(?P<newer>.+?)(-migrated)?\.(sqlite3|anchor)$")
STEPS = ("installed", "stopped", "store-saved", "recorded", "switched", "started", "committed")


@dataclass
class Outcome:
    outcome: str  # committed, rolled-back, nothing
    version: str | None
    previous: str | None
    reason: str = ""
    store_restored: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class HealthProbe:
    """Asks the device's health endpoint whether it is ready, healthy and which version it is.
    `candidates()` returns (base URLs, bearer token), read anew each time (the endpoint
    file names the port the new process really got)."""

    def __init__(self, candidates: Callable[[], tuple[list[str], str | None]]):
        self.candidates = candidates

    def check(self, version: str) -> tuple[bool, str]:
        from edge.cli_device import http_json

        urls, token = self.candidates()
        problems = []
        for url in urls:
            try:
                ready, _ = http_json("GET", url + "/ready", None, token, 3.0)
                code, body = http_json("GET", url + "/health", None, token, 3.0)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
                problems.append(f"no answer at {url} ({getattr(exc, 'reason', exc)})")
                continue
            if body.get("version") != version:
                problems.append(f"{url} serves version {body.get('version')!r}, not {version}")
            elif ready != 200:
                problems.append(f"{url}/ready answers {ready}: not ready")
            elif code != 200:
                problems.append(f"{url}/health answers {code}: {body.get('state')} ({_first_problem(body)})")
            else:
                return True, ""
        return False, "; ".join(problems) or "no health endpoint known"


def _first_problem(body: dict) -> str:
    for name, component in (body.get("components") or {}).items():
        if isinstance(component, dict) and component.get("state") not in ("OK", "STARTING"):
            return f"{name}: {component.get('reason')}"
    return "no reason given"


class Updater:
    """`on_step(name)` is called after each step of STEPS (progress for a person; tests end
    the process there to play a power cut)."""

    def __init__(self, layout: ReleaseLayout, state_dir: Path, service: ServiceControl, probe: HealthProbe, *,
                 deadline_s: float = 120.0, settle_s: float = 5.0, keep: int = 3, pip_args: list[str] = (),
                 wheel_packages: list[str] = (), on_step: Callable[[str], None] = lambda step: None,
                 progress: release_install.Progress | None = None, poll_s: float = 0.25):
        self.layout = layout
        self.state_dir = Path(state_dir)
        self.service = service
        self.probe = probe
        self.deadline_s = deadline_s
        self.settle_s = settle_s
        self.keep = keep
        self.pip_args = list(pip_args)
        self.wheel_packages = list(wheel_packages)  # installed beside a wheel (edge.release_install.install)
        self.on_step = on_step
        self.progress = progress
        self.poll_s = poll_s

    # -- update ------------------------------------------------------------------------------
    def update(self, source: str, sha256: str | None = None) -> Outcome:
        with self.layout.updating():
            recovered = recover(self.layout, self.state_dir, "an earlier update was interrupted")
            if recovered:
                self.service.stop()
                self.service.start()
            previous = self.layout.current()
            if previous is None:
                raise ReleaseError(f"no release is installed under {self.layout.prefix} (no `current` link); "
                                   f"install the device with image/install.sh first, or set EDGE_PREFIX")
            if Path(source).is_dir():  # a release the installer put beside the current one
                version = release_install.adopt(self.layout, Path(source))
            else:
                artifact = release_install.fetch(source, sha256, self.layout.prefix / "downloads", self.progress)
                version = release_install.install(self.layout, artifact, self.pip_args, self.progress,
                                                  self.wheel_packages)
            self.on_step("installed")
            return self._trial(version, previous, "update")

    def rollback(self) -> Outcome:
        """Back to the release before the committed one, by hand, with the same checks."""
        with self.layout.updating():
            recover(self.layout, self.state_dir, "an earlier update was interrupted")
            state = self.layout.state()
            current, target = self.layout.current(), state.get("previous")
            if not target or target not in self.layout.versions():
                raise ReleaseError(f"no earlier release to go back to (installed: "
                                   f"{', '.join(self.layout.versions()) or 'none'}); `edge update FILE` installs one")
            outcome = self._trial(target, current, "rollback", restore_saved=True)
            return outcome

    def _trial(self, version: str, previous: str, why: str, restore_saved: bool = False) -> Outcome:
        if not self.layout.committed_link.is_symlink():
            self.layout.commit(previous)  # so a power cut from here on finds the old one committed
        self.service.stop()
        self.on_step("stopped")
        saved = self._save_store(version)
        self.on_step("store-saved")
        pending = {"version": version, "from": previous, "why": why, "started_wall": time.time(),
                   "store_copy": str(saved) if saved else None}
        self.layout.update_state(pending=pending)
        self.on_step("recorded")
        restored = False
        if restore_saved:
            # a hand rollback to an older release: put back the store it last ran on when
            # the newer one migrated it (the current store is kept in update-backup/)
            restored = restore_copy_if_migrated(self.state_dir, self._copy_for(version, previous))
        self.layout.switch_current(version)
        self.on_step("switched")
        try:
            self.service.start()
            self.on_step("started")
            ok, reason = self._wait_ready(version)
        except ServiceControlError as exc:
            ok, reason = False, str(exc)
        if ok:
            self.layout.commit(version)
            self.layout.update_state(pending=None, previous=previous,
                                     last={"outcome": "committed", "version": version, "from": previous,
                                           "why": why, "wall": time.time()})
            self.on_step("committed")
            self._prune()
            outcome = Outcome("committed", version, previous, store_restored=restored)
        else:
            self.service.stop()
            restored = roll_back(self.layout, self.state_dir, f"release {version} {reason}")
            self.service.start()
            back, _ = self._wait_ready(previous)
            reason = f"release {version} {reason}; switched back to {previous}" + (
                "" if back else " (which does not answer ready either: check `edge status`)")
            outcome = Outcome("rolled-back", version, previous, reason, restored)
        write_result(self.state_dir, outcome)
        return outcome

    def _prune(self) -> None:
        """Old releases beyond `keep`, and the store copies saved for updates between
        releases that are gone."""
        self.layout.prune(self.keep)
        installed = set(self.layout.versions())
        for copy in (self.state_dir / BACKUP_DIR).glob("store-*"):
            match = COPY_NAME.match(copy.name)
            if match and not {match["older"], match["newer"]} <= installed:
                copy.unlink(missing_ok=True)

    def _copy_for(self, older: str, newer: str) -> Path:
        return self.state_dir / BACKUP_DIR / f"store-{older}-before-{newer}.sqlite3"

    def _save_store(self, version: str) -> Path | None:
        store = self.state_dir / DB_NAME
        if not store.exists():
            return None
        target = self._copy_for(self.layout.current(), version)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_store(store, target)
        anchor = self.state_dir / ANCHOR
        if anchor.exists():
            shutil.copy2(anchor, target.with_suffix(".anchor"))
        _own_like(target.parent, self.state_dir)
        return target

    def _wait_ready(self, version: str) -> tuple[bool, str]:
        """Ready, healthy and this version, and still so `settle_s` later, within the deadline."""
        deadline = time.monotonic() + self.deadline_s
        good_since, reason = None, "did not answer"
        while time.monotonic() < deadline:
            ok, why = self.probe.check(version)
            now = time.monotonic()
            if ok:
                good_since = good_since or now
                if now - good_since >= self.settle_s:
                    return True, ""
            else:
                if good_since is not None:
                    reason = f"was ready, then not ({why})"
                    return False, reason
                reason = why
            time.sleep(self.poll_s)
        return False, f"was not ready and healthy within {self.deadline_s:g} s: {reason}"


def restore_copy_if_migrated(state_dir: Path, copy: Path) -> bool:
    """Put the saved store `copy` (and its anchor) back when the live store's schema is not
    the copy's (a trial migrated it); the migrated store is kept beside the copy."""
    store = Path(state_dir) / DB_NAME
    if not copy.exists() or not store.exists() or schema_versions(store) == schema_versions(copy):
        return False
    migrated = copy.with_name(copy.stem + "-migrated.sqlite3")
    copy_store(store, migrated)
    remove_store_files(store)
    shutil.copy2(copy, store)
    anchor = copy.with_suffix(".anchor")
    if anchor.exists():
        shutil.copy2(anchor, Path(state_dir) / ANCHOR)
    _own_like(store, state_dir)
    _own_like(Path(state_dir) / ANCHOR, state_dir)
    log.warning("the store was migrated by the trial release and is put back as saved before it (%s); the "
                "migrated one is kept as %s", copy, migrated)
    return True


def roll_back(layout: ReleaseLayout, state_dir: Path, reason: str) -> bool:
    """Switch `current` back to the committed release and revert the trial's migrations.
    The service must not be running. Returns whether the store was put back."""
    pending = layout.state().get("pending") or {}
    restored = False
    if pending.get("store_copy"):
        restored = restore_copy_if_migrated(state_dir, Path(pending["store_copy"]))
    committed = layout.committed()
    if committed and layout.current() != committed:
        layout.switch_current(committed)
    layout.update_state(pending=None, last={"outcome": "rolled-back", "version": pending.get("version"),
                                            "from": committed, "reason": reason, "wall": time.time()})
    log.error("update rolled back to %s: %s", committed, reason)
    return restored


def recover(layout: ReleaseLayout, state_dir: Path, reason: str) -> str | None:
    """An interrupted trial (current != committed, no updater alive) is rolled back; a stale
    record of a finished one is cleared. Returns the release rolled back to, or None."""
    if not layout.exists():
        return None
    current, committed = layout.current(), layout.committed()
    pending = layout.state().get("pending")
    if current == committed:
        if pending:
            layout.update_state(pending=None)  # interrupted before the switch or after the commit
        return None
    roll_back(layout, state_dir, f"{reason}: release {current} was never committed")
    write_result(state_dir, Outcome("rolled-back", current, committed, f"{reason}: release {current} was never "
                                    f"committed; switched back to {committed}"))
    return committed


def recover_at_boot(environ: Mapping[str, str] = os.environ, state_dir: Path | None = None) -> Path | None:
    """Called by `edge run` before it opens the store. Rolls back an uncommitted release
    left by a power cut or a killed update; returns the `edge` program to run instead when
    this process is that release (None: carry on)."""
    layout = ReleaseLayout(prefix_for(environ))
    if not layout.exists() or layout.updater_running() or layout.current() == layout.committed():
        return None
    from edge.assembly import state_dir_for

    if not os.access(layout.prefix, os.W_OK):  # the unit's ProtectSystem=strict: nothing half done
        log.error("release %s was never committed (an update was interrupted), and %s is read-only here; the "
                  "unit's `ExecStartPre=+... edge update --boot-check` rolls it back, or run `sudo edge update "
                  "--boot-check`", layout.current(), layout.prefix)
        return None
    try:
        target = recover(layout, state_dir or state_dir_for(False, environ), "the device booted mid-update")
    except OSError as exc:
        log.error("an uncommitted release %s is running, and it cannot be rolled back from here (%s); run "
                  "`sudo edge update --boot-check` (the unit's ExecStartPre=+ does) or `sudo edge rollback`",
                  layout.current(), exc)
        return None
    if target is None:
        return None
    here = Path(sys.prefix).resolve()
    if here == layout.release(target).resolve():
        return None
    return layout.edge_binary(target)


def write_result(state_dir: Path, outcome: Outcome) -> None:
    """The last outcome, where the runtime (Home Assistant's update entity) can read it."""
    try:
        path = Path(state_dir) / RESULT_FILE
        path.write_text(json.dumps({**outcome.as_dict(), "wall": time.time()}))
        _own_like(path, state_dir)
    except OSError as exc:
        log.warning("cannot record the update's outcome in %s: %s", state_dir, exc)


def read_result(state_dir: Path) -> dict:
    try:
        data = json.loads((Path(state_dir) / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _own_like(path: Path, reference: Path) -> None:
    """Files the updater (root) writes into the state directory belong to the device's user,
    who owns that directory, or the device could not write its store after a rollback."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(reference)
        for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
            os.chown(p, st.st_uid, st.st_gid, follow_symlinks=False)
    except OSError as exc:
        log.warning("cannot give %s to the state directory's owner: %s", path, exc)
