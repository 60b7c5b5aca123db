"""An installed device in a temporary directory: a release prefix (`EDGE_PREFIX`) with real
release venvs (edge.testing.releases), a config, a state directory, and its service run
by edge.testing.service in place of systemd. `edge` commands run as subprocesses with the
device's environment, as a person would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.releases import ReleaseLayout
from edge.testing.releases import build_release, install_first
from edge.testing.waiting import wait_for

EDGE = Path(sys.prefix) / "bin" / "edge"
CONFIG = """
[node]
id = "maint-test"
[health]
port = 0
[doorbell]
enabled = false
[mqtt]
enabled = false
[system]
enabled = false
[update]
settle_s = 0.5
deadline_s = 20
"""


class Device:
    def __init__(self, root: Path):
        self.root = root
        self.prefix = root / "opt"
        self.state = root / "state"
        self.service_dir = root / "service"
        self.artifacts = root / "artifacts"
        self.config = root / "edge.toml"
        self.config.write_text(CONFIG)
        self.state.mkdir()
        self.layout = ReleaseLayout(self.prefix)
        self.env = {**os.environ, "EDGE_PREFIX": str(self.prefix), "EDGE_STATE_DIR": str(self.state),
                    "EDGE_CONFIG": str(self.config), "EDGE_SERVICE_CONTROL":
                    f"{sys.executable} -m edge.testing.service --dir {self.service_dir} {{action}}"}
        self.env.pop("NOTIFY_SOCKET", None)

    def release(self, version: str, behaviour: str = "good") -> Path:
        return build_release(self.prefix, version, self.artifacts / behaviour, behaviour)

    def install(self, version: str) -> None:
        install_first(self.prefix, self.release(version))

    def edge(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
        return subprocess.run([str(EDGE), *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def service(self, action: str) -> None:
        subprocess.run([sys.executable, "-m", "edge.testing.service", "--dir", str(self.service_dir), action],
                       env=self.env, check=True, timeout=60)

    def health(self) -> dict | None:
        """The running device's /health, or None when nothing answers."""
        try:
            url = (self.state / "endpoint").read_text().strip()
            with urllib.request.urlopen(url + "/health", timeout=10) as resp:
                return json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def wait_serving(self, version: str, timeout: float = 30) -> dict:
        return wait_for(lambda: (h := self.health()) and h.get("version") == version and h, timeout=timeout,
                        interval=0.1, message=lambda: f"version {version} serving; /health says {self.health()}; "
                                                      f"log: {self.log()[-1500:]}")

    def log(self) -> str:
        try:
            return (self.service_dir / "service.log").read_text()
        except OSError:
            return ""


@pytest.fixture
def device(tmp_path):
    dev = Device(tmp_path)
    yield dev
    dev.service("stop")


@pytest.fixture
def file_server(tmp_path):
    """Serves `tmp_path / "www"` over HTTP on 127.0.0.1 (an update feed and its releases)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="test-file-server")
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
