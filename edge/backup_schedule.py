"""Scheduled local backups with rotation (`[backup] enabled = true`): every `interval_h` a
backup of the running device (edge.backup, the store through SQLite's online backup API)
into `directory`, keeping the newest `keep`. The time of the last backup is the newest
file's, so a restart neither skips one nor makes an extra one.

A backup on the same SD card protects against a bad update or a mistaken change, not
against the card dying: copy the directory elsewhere (or point it at a mounted USB stick
or network share) for that.

Not responsible for: what a backup holds (edge.backup).
"""

from __future__ import annotations

import time
from pathlib import Path

from edge.assembly import worker_classes
from edge.backup import backup_name, create_backup, list_backups, rotate, sources_for
from edge.config import Key, Section
from edge.health import DEGRADED
from edge.worker import Worker, WorkerContext

SECTION = Section("backup", (
    Key("enabled", bool, False, "make local backups on a schedule"),
    Key("interval_h", float, 24.0, "hours between backups", min=0.0003),
    Key("directory", str, "", "where they go (default: backups/ in the state directory)",
        example="/media/usb/edge-backups"),
    Key("keep", int, 7, "how many backups to keep (older ones are removed)", min=1),
    Key("with_secrets", bool, False, "include the secret files and the audit key (keep such backups safe)"),
), "scheduled local backups")


class ScheduledBackup(Worker):
    name = "backup"
    sections = (SECTION,)
    start_order = 85
    heartbeat_timeout_s = 600.0  # a large store takes a while to copy on an SD card

    def run(self, ctx: WorkerContext) -> None:
        cfg = ctx.config
        directory = Path(cfg.directory) if cfg.directory else Path(ctx.state_dir) / "backups"
        self.problem: str | None = None
        while True:
            backups = list_backups(directory)
            age_s = time.time() - backups[-1].stat().st_mtime if backups else None
            # clamped: a wall clock set back (a Pi has no RTC) must not postpone backups for long
            due_in = 0.0 if age_s is None else min(cfg.interval_h * 3600, max(0.0, cfg.interval_h * 3600 - age_s))
            if due_in <= 0:
                self._backup(ctx, directory, cfg)
                due_in = cfg.interval_h * 3600
            if ctx.sleep(min(due_in, 60.0)):
                return

    def _backup(self, ctx: WorkerContext, directory: Path, cfg) -> None:
        config = self.config
        sources = sources_for(config, worker_classes(), Path(ctx.state_dir),
                              Path(config.source) if config.text else None)
        target = directory / backup_name(ctx.node.id, time.time())
        try:
            manifest = create_backup(sources, target, with_secrets=cfg.with_secrets,
                                     progress=lambda *_: ctx.heartbeat())
            removed = rotate(directory, cfg.keep)
        except OSError as exc:
            self.problem = f"backup to {directory} failed: {exc}; check the space and permissions there"
            ctx.log.error("%s", self.problem)
            return
        self.problem = None
        ctx.log.info("backup %s: %d files, store schema %s; removed %d old", target.name, len(manifest["files"]),
                     manifest["schema"], len(removed))

    def health(self) -> tuple[str, str] | None:
        problem = getattr(self, "problem", None)
        return (DEGRADED, problem) if problem else None
