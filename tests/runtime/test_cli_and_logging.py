"""The CLI as a person uses it, and JSON logs."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import threading

from runtime_helpers import EDGE, edge_env, running_edge

from edge import jsonlog
from edge.testing.waiting import scaled


def test_status_without_a_running_device_says_so(tmp_path):
    env = edge_env(tmp_path / "state", EDGE_HEALTH_PORT="1")  # nothing listens on port 1
    result = subprocess.run([EDGE, "status", "--sim"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "no edge device is running at http://127.0.0.1:1" in result.stderr
    assert "start one with `edge run --sim`" in result.stderr


def test_status_shows_a_table_of_the_running_simulator(tmp_path):
    env = edge_env(tmp_path / "state")
    with running_edge(tmp_path, env) as (proc, _):
        result = subprocess.run([EDGE, "status", "--sim"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == "device: OK"
        assert lines[1].split() == ["COMPONENT", "STATE", "FOR", "REASON"]
        assert any(line.split()[:2] == ["worker.system", "OK"] for line in lines)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=scaled(10))
    assert b"edge simulator: node" in out and b"Ctrl-C stops it." in out


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["status", "--help"], ["config", "check", "--help"],
                 ["audit", "verify", "--help"], ["doctor", "--help"], ["sim", "--help"], ["sim", "press", "--help"],
                 ["faces", "--help"]):
        result = subprocess.run([EDGE, *args], capture_output=True, text=True)
        assert result.returncode == 0 and "usage: edge" in result.stdout, args


def test_log_lines_are_json_with_worker_component_and_event_id():
    stream = io.StringIO()
    jsonlog.setup("info", stream)
    try:
        token = jsonlog.current_worker.set("doorbell")
        logging.getLogger("edge.worker.doorbell").info("ring", extra={"event_id": "abc123"})
        jsonlog.current_worker.reset(token)
    finally:
        jsonlog.setup("warning")
    line = json.loads(stream.getvalue().splitlines()[0])
    assert line["worker"] == "doorbell" and line["component"] == "edge.worker.doorbell"
    assert line["event_id"] == "abc123" and line["level"] == "info" and line["msg"] == "ring"
    assert line["time"].endswith("Z")


def test_a_flood_of_the_same_warning_is_rate_limited_and_counted():
    now = [0.0]
    limiter = jsonlog.RepeatLimiter(burst=5, window_s=60, clock=lambda: now[0])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(jsonlog.JsonFormatter())
    handler.addFilter(limiter)
    log = logging.getLogger("test.flood")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        for n in range(5000):
            log.warning("command rejected (%s): %s", "malformed", n)
        log.info("an info line always passes")
        now[0] = 61.0
        log.warning("command rejected (%s): %s", "malformed", "after the window")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 7  # 5 warnings, the info line, and the first one after the window
    assert lines[-1]["suppressed"] == 4995 and lines[-1]["msg"].endswith("after the window")


def test_jsonlog_setup_rate_limits_repeated_warnings():
    stream = io.StringIO()
    jsonlog.setup("info", stream)
    try:
        for n in range(100):
            logging.getLogger("edge.commands").warning("command rejected (%s): %s", "invalid", n)
    finally:
        jsonlog.setup("warning")
    assert len(stream.getvalue().splitlines()) == 5


def test_every_command_says_what_it_does_in_its_own_help():
    for args in (["run"], ["status"], ["doctor"], ["config", "check"], ["audit", "verify"], ["safe-mode", "clear"],
                 ["faces", "remove"], ["sim", "press"]):
        result = subprocess.run([EDGE, *args, "--help"], capture_output=True, text=True)
        usage, _, rest = result.stdout.partition("\n\n")
        assert result.returncode == 0 and rest.split("\n\n")[0].strip() and not rest.startswith("options:"), args


def test_a_stopped_device_leaves_no_endpoint_for_the_cli_to_find(tmp_path):
    env = edge_env(tmp_path / "state")
    with running_edge(tmp_path, env) as (proc, _):
        assert (tmp_path / "state" / "endpoint").read_text().startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=scaled(10))
    assert not (tmp_path / "state" / "endpoint").exists()


def test_device_options_work_wherever_they_are_typed():
    from edge.cli import device_options_last

    assert device_options_last(["sim", "camera", "show", "--sim", "a.jpg"]) == ["sim", "camera", "show", "a.jpg",
                                                                                 "--sim"]
    assert device_options_last(["--config", "x.toml", "faces", "list"]) == ["faces", "list", "--config", "x.toml"]
    assert device_options_last(["faces", "enroll", "--config=x.toml", "Al", "a.jpg"]) == [
        "faces", "enroll", "Al", "a.jpg", "--config=x.toml"]


class Stranger:
    """Someone else's web server on a port (answers every request with a page, not JSON)."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, HTTPServer

        class Page(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"<html>a router's login page</html>")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Page)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def test_a_taken_health_port_moves_the_device_and_the_cli_still_finds_it(tmp_path):
    stranger = Stranger()
    try:
        env = edge_env(tmp_path / "state", EDGE_HEALTH_PORT=stranger.port, EDGE_NODE_ID="porch")
        with running_edge(tmp_path, env) as (proc, _):
            status = subprocess.run([EDGE, "status", "--sim"], env=env, capture_output=True, text=True)
            assert status.returncode == 0, status.stderr
            assert f"port {stranger.port} is taken; serving on" in status.stdout  # health_http DEGRADED
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=scaled(10))
        alone = subprocess.run([EDGE, "status", "--sim"], env=env, capture_output=True, text=True)
        assert alone.returncode == 1 and "Traceback" not in alone.stderr
        assert f"the server at http://127.0.0.1:{stranger.port} is not an edge device" in alone.stderr
    finally:
        stranger.close()


def test_the_cli_refuses_another_device_that_answers_on_its_port(tmp_path):
    front = edge_env(tmp_path / "front", EDGE_NODE_ID="front-door")
    with running_edge(tmp_path, front) as (proc, _):
        port = (tmp_path / "front" / "endpoint").read_text().strip().rsplit(":", 1)[1]
        back = edge_env(tmp_path / "back", EDGE_NODE_ID="back-door", EDGE_HEALTH_PORT=port)
        status = subprocess.run([EDGE, "status", "--sim"], env=back, capture_output=True, text=True)
        assert status.returncode == 1
        assert "is node 'front-door', not 'back-door'" in status.stderr


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_logs_are_readable_lines_on_a_terminal_and_json_for_the_journal(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    terminal = Terminal()
    jsonlog.setup("info", terminal)
    try:
        logging.getLogger("edge.worker.doorbell").warning("camera unavailable", extra={"event_id": "abc123"})
    finally:
        jsonlog.setup("warning")
    line = terminal.getvalue().strip()
    assert line.endswith("WARNING edge.worker.doorbell: camera unavailable  [abc123]"), line
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")  # what systemd sets for a service's stdout
    assert not jsonlog.wants_text(Terminal()) and jsonlog.wants_text(io.StringIO(), "text")
