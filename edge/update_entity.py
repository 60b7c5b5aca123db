"""Home Assistant's firmware `update` entity, and the `[update]` config section.

The entity shows the installed version, the latest one from an update feed (`[update]
feed_url`: a small JSON document, `{"version", "url", "sha256", "release_notes_url",
"summary"}`, with `url` relative to the feed or absolute), the release notes link, and
whether an update is under way, with the outcome of the last one as its summary. Its
install action is the `install_update` command: dangerous (refused unless `[mqtt]
allow_dangerous_commands`), audited, and it does not install anything in this process.
The device's service runs unprivileged and cannot replace itself: the command leaves a
request in the state directory (`update-request.json`, the version only), which `edge
update --requested` carries out as root (a systemd path unit watching the file runs it):
it takes the release's URL and checksum from the feed named in the root-owned config,
never from the request, and installs with the same checks, health wait and rollback as
`edge update` from a shell.

The feed is an outside dependency with its own breaker; no feed, or none reachable, means
"latest = installed", never an error of the device.

Not responsible for: installing, switching or rolling back (edge.update).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from edge import __version__
from edge.breaker import BreakerOpen
from edge.commands import Command, CommandRejected
from edge.config import Key, Section
from edge.entities import Entity
from edge.releases import ReleaseError, check_version, write_atomically
from edge.store import StoreUnavailable
from edge.update import read_result
from edge.worker import Worker, WorkerContext

REQUEST_FILE = "update-request.json"
STATE = "update"
MAX_FEED_BYTES = 64 * 1024

SECTION = Section("update", (
    Key("enabled", bool, True, "the firmware entity in Home Assistant and its install action (with a feed_url); "
        "`edge update` works either way"),
    Key("feed_url", str, "", "JSON document naming the latest release (version, url, sha256, release_notes_url); "
        "empty: Home Assistant shows only the installed version", example="https://example.org/edge/latest.json"),
    Key("check_interval_h", float, 6.0, "hours between looks at the feed", min=0.001),
    Key("deadline_s", float, 120.0, "how long a new release has to become ready and healthy before it is rolled "
        "back", min=1),
    Key("settle_s", float, 10.0, "how long it must then stay ready and healthy before it is committed", min=0),
    Key("keep_releases", int, 3, "installed releases kept (the current, committed and previous are never removed)",
        min=2),
    Key("pip_args", list, [], "extra arguments for pip when the update is a wheel",
        example=["--find-links", "/var/cache/edge-wheels"]),
), "updates with automatic rollback")


def read_feed(url: str, timeout: float = 10.0) -> dict:
    """The feed's latest release; ValueError (with what is wrong) for a feed that is not one."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data = json.loads(resp.read(MAX_FEED_BYTES))
    if not isinstance(data, dict) or not isinstance(data.get("version"), str):
        raise ValueError(f"{url} is not an update feed (it needs at least {{\"version\": \"1.2.0\"}})")
    check_version(data["version"])
    if data.get("url"):
        data["url"] = urllib.parse.urljoin(url, data["url"])
    return data


def release_from_feed(feed_url: str, version: str) -> tuple[str, str | None]:
    """(URL, SHA-256) of `version` as the feed offers it now; ReleaseError otherwise."""
    if not feed_url:
        raise ReleaseError("no [update] feed_url in the config, so there is nothing to install on request")
    try:
        latest = read_feed(feed_url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ReleaseError(f"cannot read the update feed {feed_url} ({getattr(exc, 'reason', exc)})") from None
    if latest["version"] != version or not latest.get("url"):
        raise ReleaseError(f"the update feed offers {latest['version']}, not the requested {version}; nothing was "
                           f"installed")
    return latest["url"], latest.get("sha256")


class UpdateWorker(Worker):
    name = "update"
    sections = (SECTION,)
    essential = True  # the update path stays in safe mode, as ESPHome keeps OTA
    start_order = 80
    heartbeat_timeout_s = 60.0
    entities = (
        Entity("update", "firmware", "Firmware", state=STATE, command="install_update", device_class="firmware",
               entity_category="config", options={"payload_install": "{}", "title": "Edge appliance"}),
    )

    @classmethod
    def enabled(cls, config) -> bool:
        """Runs, and shows its entity, only with a feed to look at: without one it would always
        say "up to date", and the install action would have nothing to install."""
        return bool(config["update"].enabled and config["update"].feed_url)

    def run(self, ctx: WorkerContext) -> None:
        cfg = ctx.config
        self.ctx = ctx
        self.latest: dict = {}
        ctx.commands.register(Command("install_update", self._install, {}, optional={"version": str},
                                      dangerous=True, danger="installs other software on the device",
                                      refusal="set [mqtt] allow_dangerous_commands = true"))
        breaker = ctx.breakers.get("update_feed")
        next_check = 0.0
        while True:
            now = ctx.clock.monotonic()
            if now >= next_check:
                next_check = now + cfg.check_interval_h * 3600
                try:
                    self.latest = breaker.call(lambda: read_feed(cfg.feed_url))
                except BreakerOpen:
                    pass
                except (urllib.error.URLError, OSError, ValueError, ReleaseError) as exc:
                    ctx.log.warning("update feed %s: %s", cfg.feed_url, getattr(exc, "reason", exc))
            self._publish()
            if ctx.sleep(min(5.0, max(0.05, next_check - ctx.clock.monotonic()))):
                return

    def _publish(self) -> None:
        ctx = self.ctx
        result = read_result(ctx.state_dir) if ctx.state_dir else {}
        summary = ""
        if result.get("outcome") == "rolled-back":
            summary = f"The last update was rolled back: {result.get('reason', '')}"
        elif self.latest.get("summary"):
            summary = str(self.latest["summary"])
        value = {"installed_version": __version__, "latest_version": self.latest.get("version") or __version__,
                 "title": "Edge appliance", "release_summary": summary[:255] or None,
                 "release_url": self.latest.get("release_notes_url") or None,
                 "in_progress": bool(ctx.state_dir and (ctx.state_dir / REQUEST_FILE).exists())}
        ctx.states.set(STATE, {k: v for k, v in value.items() if v is not None})

    def _install(self, payload: dict, via: str) -> dict:
        """Leave a request for the privileged updater (see the module's docstring)."""
        ctx = self.ctx
        version = payload.get("version") or self.latest.get("version")
        if not version or not self.latest.get("url"):
            raise CommandRejected("install_update: no release to install (no [update] feed_url, or the feed was not "
                                  "read yet)", "invalid")
        if version != self.latest.get("version"):
            raise CommandRejected(f"install_update: the feed offers {self.latest.get('version')}, not {version}",
                                  "invalid")
        if version == __version__:
            raise CommandRejected(f"install_update: {version} is already installed", "invalid")
        request = {"version": version, "via": via, "wall": time.time()}
        try:
            if ctx.audit is None:
                raise StoreUnavailable("no audit log")
            ctx.audit.append(via, "update.requested", {"version": version, "url": self.latest["url"]})
        except StoreUnavailable as exc:
            raise CommandRejected(f"install_update: the audit log cannot be written ({exc}), and an update must be "
                                  f"audited; refused", "failed") from None
        write_atomically(Path(ctx.state_dir) / REQUEST_FILE, json.dumps(request).encode())
        self._publish()
        return {"requested": version}
