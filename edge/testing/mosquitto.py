"""A real mosquitto broker for tests, on 127.0.0.1 and a free port, stopped by its owner."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from edge.testing.ports import free_port


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

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
