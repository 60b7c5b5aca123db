"""Safe mode after quick failed boots; an invalid config falls back to the last good one."""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest
from runtime_helpers import EDGE, edge_env, make_config, running_edge, spawn_edge

from edge.clock import FakeClock
from edge.config import ConfigError
from edge.assembly import LAST_GOOD, load_config_with_fallback, save_last_good
from edge.runtime import EXIT_NO_CONFIG, Runtime
from edge.safemode import BootCounter
from edge.testing.waiting import scaled, wait_for
from edge.testing.workers import CrashingCritical, IdleEssential, IdleWorker
from edge.worker import Worker

CLASSES = [IdleEssential, IdleWorker]


def start_runtime(state_dir):
    rt = Runtime(make_config(CLASSES, env={"EDGE_HEALTH_PORT": "0"}), CLASSES, state_dir)
    rt.start()
    return rt


def test_safe_mode_after_k_failed_boots_starts_only_essential_workers(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    BootCounter(state / "boot-count")._write(3)  # three boots that died within their first minute
    rt = start_runtime(state)
    try:
        assert rt.safe_mode
        assert [r.name for r in rt.supervisor.runners] == ["idle_essential"]
        assert rt.health.get("safe_mode").state == "DEGRADED"
    finally:
        rt.stop()


def test_fewer_failed_boots_start_everything_and_count_this_boot(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    BootCounter(state / "boot-count")._write(2)
    rt = start_runtime(state)
    try:
        assert not rt.safe_mode
        assert sorted(r.name for r in rt.supervisor.runners) == ["idle", "idle_essential"]
        assert BootCounter(state / "boot-count").read() == 3
    finally:
        rt.stop()
    assert BootCounter(state / "boot-count").read() == 0  # a clean stop is not a failed boot


def test_boot_counter_clears_after_a_healthy_window(tmp_path):
    from edge.clock import FakeClock
    clock = FakeClock()
    state = tmp_path / "state"
    rt = Runtime(make_config(CLASSES, env={"EDGE_HEALTH_PORT": "0"}), CLASSES, state, clock=clock)
    rt.start()
    try:
        assert rt.boot_counter.read() == 1
        rt._track_good_boot(clock.monotonic())
        clock.advance(59)
        rt._track_good_boot(clock.monotonic())
        assert rt.boot_counter.read() == 1
        clock.advance(1)
        rt._track_good_boot(clock.monotonic())
        assert rt.boot_counter.read() == 0
    finally:
        rt.stop()


def test_invalid_config_falls_back_to_last_good(tmp_path):
    state = tmp_path / "state"
    good = tmp_path / "edge.toml"
    good.write_text('[node]\nid = "front-door"\n')
    config, _, error = load_config_with_fallback(good, True, state, {}, CLASSES)
    assert error is None
    state.mkdir()
    save_last_good(config, state)  # what the runtime does after a healthy boot on it
    assert (state / LAST_GOOD).read_text() == good.read_text()

    good.write_text('[node]\nid = "front door!"\n')  # a person edits it badly
    config, _, error = load_config_with_fallback(good, True, state, {}, CLASSES)
    assert config["node"].id == "front-door"
    assert error is not None and "[node] id" in error.problems[0]


def with_last_good(tmp_path):
    """A state directory whose last known-good config names the node "front-door", and the
    path of a config file still to be written."""
    state = tmp_path / "state"
    state.mkdir()
    (state / LAST_GOOD).write_text('[node]\nid = "front-door"\n')
    return state, tmp_path / "edge.toml"


def test_invalid_config_is_reported_loudly_in_health(tmp_path):
    state, bad = with_last_good(tmp_path)
    bad.write_text('[nod]\nid = "x"\n')
    config, classes, error = load_config_with_fallback(bad, True, state, {"EDGE_HEALTH_PORT": "0"}, CLASSES)
    rt = Runtime(config, classes, state, config_error=error)
    rt.start()
    try:
        comp = rt.health.get("config")
        assert comp.state == "DEGRADED" and "did you mean [node]?" in comp.reason
    finally:
        rt.stop()


def test_invalid_config_without_last_good_raises(tmp_path):
    bad = tmp_path / "edge.toml"
    bad.write_text("[health]\nport = 'eighty'\n")
    with pytest.raises(ConfigError):
        load_config_with_fallback(bad, True, tmp_path / "state", {}, CLASSES)


BAD_PLUGIN = '[runtime]\nplugins = ["nosuch.module:Thing"]\n'
BAD_PLUGIN_MESSAGE = ("[runtime] plugins: cannot import 'nosuch.module' (No module named 'nosuch'); "
                      "for example: plugins = [\"mycompany.edge_workers:GarageDoor\"]")


NOT_UTF8 = '[node]\nname = "Caf\xe9"\n'.encode("latin-1")  # saved by an editor in Latin-1
NOT_UTF8_MESSAGE = "not UTF-8 text: byte 0xe9 on line 2 cannot be decoded; save the file as UTF-8"


@pytest.mark.parametrize("text, message", [
    ("[supervisor]\nmax_restarts = 'many'\n", "[supervisor] max_restarts: expected a whole number"),
    (BAD_PLUGIN, BAD_PLUGIN_MESSAGE),
    (NOT_UTF8, NOT_UTF8_MESSAGE),
], ids=["bad_value", "bad_plugin", "not_utf8"])
def test_edge_run_without_usable_config_exits_with_distinct_code(tmp_path, text, message):
    bad = tmp_path / "edge.toml"
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    proc = spawn_edge(["run", "--sim", "--config", str(bad)], edge_env(tmp_path / "state"))
    try:
        out, _ = proc.communicate(timeout=scaled(30))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == EXIT_NO_CONFIG, out.decode()[-2000:]
    assert message.encode() in out.replace(b'\\"', b'"')  # the JSON log escapes quotes
    assert b"Traceback" not in out


def test_edge_run_on_last_good_config_still_starts(tmp_path):
    state, bad = with_last_good(tmp_path)
    bad.write_text("[supervisor]\nmax_restarts = 'many'\n")
    with running_edge(tmp_path, edge_env(state), args=("run", "--sim", "--config", str(bad))) as (proc, listener):
        assert "config degraded" in listener.wait_for("READY=1")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=scaled(10))
        assert proc.returncode == 0
        assert b"running on the last known-good config" in out


def test_a_config_that_is_not_utf8_falls_back_to_last_good_and_fails_config_check_with_78(tmp_path):
    state, bad = with_last_good(tmp_path)
    bad.write_bytes(NOT_UTF8)
    config, _, error = load_config_with_fallback(bad, True, state, {}, CLASSES)
    assert config["node"].id == "front-door" and NOT_UTF8_MESSAGE in error.problems[0]
    check = subprocess.run([EDGE, "config", "check", "--config", str(bad)], env=edge_env(state),
                           capture_output=True, text=True)
    assert check.returncode == EXIT_NO_CONFIG and "Traceback" not in check.stderr
    assert NOT_UTF8_MESSAGE in check.stderr


def test_config_with_a_bad_plugin_falls_back_to_last_good(tmp_path):
    state, bad = with_last_good(tmp_path)
    bad.write_text(BAD_PLUGIN)
    config, classes, error = load_config_with_fallback(bad, True, state, {})
    assert config["node"].id == "front-door" and config["runtime"].plugins == []
    assert error.problems == [BAD_PLUGIN_MESSAGE] and error.source == str(bad)
    assert (state / LAST_GOOD).read_text() == '[node]\nid = "front-door"\n'  # not replaced by the bad one


class CrashesOnRequest(Worker):
    """A critical worker that crashes whenever the test sets `crash`."""

    name = "crashes_on_request"
    critical = True
    heartbeat_timeout_s = 60.0
    crash = threading.Event()

    def run(self, ctx):
        while not ctx.stopping.wait(0.01):
            ctx.heartbeat()
            if self.crash.is_set():
                self.crash.clear()
                raise RuntimeError("scripted crash")


def test_slow_critical_crash_loop_does_not_clear_the_boot_counter(tmp_path):
    clock = FakeClock()
    classes = [IdleEssential, CrashesOnRequest]
    env = {"EDGE_HEALTH_PORT": "0", "EDGE_SUPERVISOR_BACKOFF_INITIAL_S": "0.01", "EDGE_SUPERVISOR_MAX_RESTARTS": "100"}
    rt = Runtime(make_config(classes, env=env), classes, tmp_path / "state", clock=clock)
    rt.start()
    runner = rt.supervisor.runner("crashes_on_request")
    try:
        assert rt.boot_counter.read() == 1
        for _ in range(4):  # a crash every 30 s: never FAILED, DEGRADED only while it backs off
            rt._track_good_boot(clock.monotonic())
            clock.advance(30)
            restarts = runner.restarts
            CrashesOnRequest.crash.set()
            wait_for(lambda: runner.restarts == restarts + 1 and runner.state == "OK", timeout=5,
                     message="crashed and restarted")
            assert rt.health.overall() != "FAILED"
            rt._track_good_boot(clock.monotonic())
            assert rt.boot_counter.read() == 1, "a minute with critical crashes is not a healthy minute"
        clock.advance(30)
        rt._track_good_boot(clock.monotonic())  # 30 s without a crash: not yet
        assert rt.boot_counter.read() == 1
        clock.advance(30)
        rt._track_good_boot(clock.monotonic())  # a whole minute without one
        assert rt.boot_counter.read() == 0
    finally:
        rt.stop()


def test_a_clean_stop_in_safe_mode_leaves_safe_mode(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    BootCounter(state / "boot-count")._write(3)
    rt = start_runtime(state)
    assert rt.safe_mode
    rt.stop()  # the person fixed the cause and restarted the service
    assert BootCounter(state / "boot-count").read() == 0
    rt = start_runtime(state)
    try:
        assert not rt.safe_mode
    finally:
        rt.stop()


def test_safe_mode_leaves_out_the_non_critical_worker_that_ended_the_boots_and_says_so(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    counter = BootCounter(state / "boot-count")
    counter._write(3)
    counter.blame("idle_essential", "crashed: ValueError('bad')")
    rt = start_runtime(state)
    try:
        assert rt.safe_mode and [r.name for r in rt.supervisor.runners] == []
        reason = rt.health.get("safe_mode").reason
        assert "ended by idle_essential: crashed: ValueError('bad')" in reason
    finally:
        rt.stop()


def test_a_critical_worker_that_fails_the_boot_is_recorded_as_its_cause(tmp_path):
    state = tmp_path / "state"
    rt = Runtime(make_config([CrashingCritical], env={"EDGE_HEALTH_PORT": "0", "EDGE_SUPERVISOR_MAX_RESTARTS": "1",
                                                     "EDGE_SUPERVISOR_BACKOFF_INITIAL_S": "0.01"}),
                 [CrashingCritical], state)
    rt.start()
    try:
        wait_for(lambda: rt.exit_code == 70, 10, message="the critical worker to fail")
    finally:
        rt.stop()
    assert BootCounter(state / "boot-count").cause()["worker"] == "critical_crasher"


def test_edge_safe_mode_clear_resets_the_counter_and_says_where(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    BootCounter(state / "boot-count")._write(4)
    BootCounter(state / "boot-count").blame("doorbell", "5 restarts within 60s")
    result = subprocess.run([EDGE, "safe-mode", "clear"], env=edge_env(state), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"cleared 4 failed boot(s) (the last ended by doorbell: 5 restarts within 60s) in {state}" in result.stdout
    assert BootCounter(state / "boot-count").read() == 0 and BootCounter(state / "boot-count").cause() is None


def test_a_config_becomes_last_good_only_after_a_healthy_boot(tmp_path):
    clock = FakeClock()
    state = tmp_path / "state"
    path = tmp_path / "edge.toml"
    path.write_text('[node]\nid = "front-door"\n[health]\nport = 0\n')
    config, classes, error = load_config_with_fallback(path, True, state, {}, CLASSES)
    assert error is None and not (state / LAST_GOOD).exists()  # valid is not yet good
    rt = Runtime(config, classes, state, clock=clock)
    rt.start()
    try:
        rt._track_good_boot(clock.monotonic())
        clock.advance(59)
        rt._track_good_boot(clock.monotonic())
        assert not (state / LAST_GOOD).exists()
        clock.advance(1)
        rt._track_good_boot(clock.monotonic())
        assert (state / LAST_GOOD).read_text() == path.read_text()
    finally:
        rt.stop()
