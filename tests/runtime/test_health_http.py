"""The health endpoint over real HTTP: status codes, token, metrics, sim routes."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.error
import urllib.request

import pytest
from runtime_helpers import make_config

from edge.health import FAILED, HealthRegistry
from edge.runtime import Runtime
from edge.testing.waiting import wait_for
from edge.testing.workers import CrashingCritical, IdleWorker


def get(url, token=None, method="GET", body=None):
    req = urllib.request.Request(url, method=method, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture
def runtime(tmp_path):
    made = []

    def make(classes, env=None, sim=False):
        env = {"EDGE_HEALTH_PORT": "0", "EDGE_SUPERVISOR_BACKOFF_INITIAL_S": "0.01",
               "EDGE_SUPERVISOR_MAX_RESTARTS": "1", **(env or {})}
        rt = Runtime(make_config(classes, env=env, sim=sim), classes, tmp_path / "state", sim=sim)
        rt._escalate = lambda name: None  # keep this process alive: the exit itself is tested elsewhere
        rt.start()
        made.append(rt)
        return rt, f"http://127.0.0.1:{rt.server.port}"
    yield make
    for rt in made:
        rt.stop()


def test_health_is_200_while_ok_and_503_when_a_critical_worker_failed(runtime):
    rt, base = runtime([IdleWorker, CrashingCritical])
    wait_for(lambda: rt.health.get("worker.critical_crasher").state == FAILED, timeout=5, message="FAILED")
    code, body = get(base + "/health")
    assert code == 503
    data = json.loads(body)
    assert data["state"] == "FAILED"
    assert data["components"]["worker.critical_crasher"]["critical"] is True
    assert data["components"]["worker.idle"]["state"] == "OK"
    assert get(base + "/live")[0] == 200
    assert get(base + "/ready")[0] == 503


def test_health_is_200_and_ready_when_all_is_well(runtime):
    rt, base = runtime([IdleWorker])
    code, body = get(base + "/health")
    assert code == 200 and json.loads(body)["state"] == "OK"
    assert get(base + "/ready")[0] == 200


def test_token_is_enforced_on_every_path(runtime):
    rt, base = runtime([IdleWorker], env={"EDGE_HEALTH_TOKEN": "correct-horse"})
    for path in ("/health", "/live", "/ready", "/metrics", "/nope"):
        assert get(base + path)[0] == 401, path
        assert get(base + path, token="wrong")[0] == 401, path
    assert get(base + "/health", token="correct-horse")[0] == 200
    assert get(base + "/metrics", token="correct-horse")[0] == 200


def test_metrics_show_components_breakers_and_restarts(runtime):
    rt, base = runtime([IdleWorker])
    rt.breakers.get("camera", failure_threshold=1).record_failure("unplugged")
    code, body = get(base + "/metrics")
    text = body.decode()
    assert code == 200
    assert 'edge_component_state{component="worker.idle",state="OK"} 1.0' in text
    assert 'edge_breaker_state{breaker="camera",state="open"} 1.0' in text
    assert 'edge_worker_restarts_total{worker="idle"} 0.0' in text
    assert rt.health.get("breaker.camera").state == "DEGRADED"
    assert "edge_store_pending_events 0.0" in text and "edge_store_lost_events_total 0.0" in text


def test_sim_routes_exist_only_in_simulation(runtime):
    rt, base = runtime([IdleWorker])
    assert get(base + "/sim/press", method="POST", body=b"{}")[0] == 404
    rt2, base2 = runtime([IdleWorker], sim=True)
    rt2.sim_controls.handlers["echo"] = lambda args: args["text"]
    code, body = get(base2 + "/sim/echo", method="POST", body=b'{"text": "hi"}')
    assert code == 200 and json.loads(body)["result"] == "hi"
    assert get(base2 + "/sim/echo", method="POST", body=b"[1]")[0] == 400
    assert get(base2 + "/sim/nope", method="POST", body=b"{}")[0] == 404


def test_overall_state_rules():
    h = HealthRegistry()
    h.set("worker.a", "OK", critical=True)
    h.set("breaker.mqtt", "DEGRADED", "open")
    assert h.overall() == "DEGRADED"
    h.set("worker.a", "HUNG", critical=True)
    assert h.overall() == "FAILED"
    assert h.summary() == "FAILED: breaker.mqtt degraded, worker.a hung"


def raw_request(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(data)
        return b"".join(iter(lambda: conn.recv(4096), b""))


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_a_bad_content_length_is_answered_400(runtime, length):
    rt, _ = runtime([IdleWorker], sim=True)
    rt.sim_controls.handlers["echo"] = lambda args: args
    answer = raw_request(rt.server.port, f"POST /sim/echo HTTP/1.0\r\nContent-Length: {length}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 400") and b"Content-Length must be a whole number" in answer


def test_thousands_of_idle_connections_cost_no_threads_and_health_still_answers(runtime):
    rt, base = runtime([IdleWorker])
    threads_before = threading.active_count()
    idle = []
    try:
        for _ in range(2000):
            idle.append(socket.create_connection(("127.0.0.1", rt.server.port), timeout=5))
        code, _ = get(base + "/health")  # urlopen's own 5 s timeout bounds this
        assert code == 200
        assert threading.active_count() <= threads_before + 2  # no thread per idle connection
        assert len(os.listdir("/proc/self/fd")) < 2000 + 400  # the server keeps at most 256 waiting
        assert rt.server._httpd.refused >= 2000 - 256
    finally:
        for conn in idle:
            conn.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(runtime):
    rt, _ = runtime([IdleWorker])
    rt.server._httpd.idle_timeout_s = 0.2
    with socket.create_connection(("127.0.0.1", rt.server.port), timeout=5) as conn:
        assert conn.recv(1) == b""  # closed by the server, not by our 5 s timeout
    # The server counts the connection just after closing it: the count may come a moment later.
    wait_for(lambda: rt.server._httpd.expired == 1, timeout=5, message="the expired connection to be counted")
