"""A real mosquitto broker for tests, on 127.0.0.1 and a free port, stopped by its owner."""

from __future__ import annotations

import subprocess
from pathlib import Path

from edge.testing.ports import free_port, wait_listening


class Mosquitto:
    def __init__(self, workdir: Path, program: str = "mosquitto", port: int | None = None,
                 persistence: bool = False, extra_conf: str = ""):
        self.workdir = Path(workdir)
        self.program = program
        self.port = port or free_port()
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "mosquitto.log"

    def conf(self) -> str:
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 f"persistence {'true' if self.persistence else 'false'}",
                 f"persistence_location {self.workdir}/", "log_dest stderr", "log_type error", "log_type warning"]
        return "\n".join(lines) + "\n" + self.extra_conf

    def start(self, timeout: float = 10.0) -> "Mosquitto":
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.conf())
        self.proc = subprocess.Popen([self.program, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "ab"))
        try:
            wait_listening(self.proc, self.port, "mosquitto", self.log_path, timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
