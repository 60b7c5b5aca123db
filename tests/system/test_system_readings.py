"""System readings from recorded Raspberry Pi files (an injected /sys and /proc)."""

from __future__ import annotations

import logging
import shutil

from runtime_helpers import make_config

from edge.runtime import Runtime
from edge.testing.waiting import wait_for
from services.system.readings import Roots, decode_throttled, parse_throttled, read_all
from services.system.worker import SystemWorker


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def recorded_pi(tmp_path):
    """Files as a Raspberry Pi 4 shows them after an under-voltage event."""
    sys_root, proc_root = tmp_path / "sys", tmp_path / "proc"
    write(sys_root, "class/thermal/thermal_zone0/temp", "61835\n")
    write(sys_root, "devices/platform/soc/soc:firmware/get_throttled", "50005\n")
    write(proc_root, "loadavg", "0.52 0.58 0.59 1/211 12345\n")
    write(proc_root, "meminfo", "MemTotal:        3884328 kB\nMemFree:          2721208 kB\n"
                                "MemAvailable:    3359784 kB\nBuffers:           52344 kB\n")
    write(proc_root, "uptime", "86523.17 341234.12\n")
    write(proc_root, "4242/status", "Name:\tedge\nVmRSS:\t   48128 kB\n")
    write(proc_root, "4242/io", "rchar: 1000\nwchar: 123456\nwrite_bytes: 4096\n")
    return Roots(sys_root, proc_root)


def test_get_throttled_0x50005_decodes_to_under_voltage_and_throttled():
    flags = decode_throttled(parse_throttled("throttled=0x50005"))
    assert flags == {"under_voltage": True, "arm_freq_capped": False, "throttled": True, "soft_temp_limit": False,
                     "under_voltage_occurred": True, "arm_freq_capped_occurred": False,
                     "throttled_occurred": True, "soft_temp_limit_occurred": False}
    assert parse_throttled("50005\n") == 0x50005


def test_recorded_pi_files_are_read(tmp_path):
    values = read_all(recorded_pi(tmp_path), tmp_path, pid=4242)
    assert values["cpu_temp_c"] == 61.8
    assert values["throttled_raw"] == "0x50005" and values["under_voltage"] and values["throttled"]
    assert (values["load_1m"], values["load_5m"], values["load_15m"]) == (0.52, 0.58, 0.59)
    assert values["memory_used_pct"] == 13.5
    assert values["uptime_s"] == 86523
    assert values["rss_mb"] == 47.0
    assert values["bytes_written"] == 4096  # block-layer writes (SD-card wear): write_bytes
    assert values["io_wchar"] == 123456  # every write() call, sockets and log pipe included
    usage = shutil.disk_usage(tmp_path)  # the disk the readings were given, not a fixed path
    assert abs(values["disk_used_pct"] - 100 * usage.used / usage.total) < 1
    assert abs(values["disk_free_mb"] - usage.free / 2**20) < 64


ROUTE = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
         "eth0\t00000000\t0101A8C0\t0003\t0\t0\t202\t00000000\t0\t0\t0\n"
         "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t303\t00000000\t0\t0\t0\n"
         "eth0\t0001A8C0\t00000000\t0001\t0\t0\t202\t00FFFFFF\t0\t0\t0\n")
WIRELESS = ("Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
            " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
            " wlan0: 0000   53.  -57.  -256        0      0      0      0     0        0\n")


def test_ip_address_is_the_default_routes_and_wifi_signal_only_when_that_link_is_wireless(tmp_path):
    """A Pi on both cable and Wi-Fi (Raspberry Pi OS gives eth0 metric 202, wlan0 303):
    the cable wins, so no Wi-Fi signal; with the cable out, wlan0's address and -57 dBm."""
    roots = recorded_pi(tmp_path)
    roots.addresses = lambda: {"eth0": ["192.168.1.20"], "wlan0": ["192.168.1.31"], "lo": ["127.0.0.1"]}
    write(roots.proc, "net/route", ROUTE)
    write(roots.proc, "net/wireless", WIRELESS)
    values = read_all(roots, tmp_path, pid=4242)
    assert (values["interface"], values["ip_address"]) == ("eth0", "192.168.1.20")
    assert "wifi_signal_dbm" not in values
    write(roots.proc, "net/route", "\n".join(line for line in ROUTE.splitlines() if not line.startswith("eth0")))
    values = read_all(roots, tmp_path, pid=4242)
    assert (values["interface"], values["ip_address"], values["wifi_signal_dbm"]) == ("wlan0", "192.168.1.31", -57)


def test_missing_sources_are_skipped_not_errors(tmp_path):
    values = read_all(Roots(tmp_path / "nosys", tmp_path / "noproc"), tmp_path / "nowhere", pid=1)
    assert values == {}


def test_garbage_in_one_source_skips_that_reading_only(tmp_path, caplog):
    roots = recorded_pi(tmp_path)
    write(roots.sys, "devices/platform/soc/soc:firmware/get_throttled", "throttled=0xZZ\n")
    write(roots.proc, "loadavg", "0.52\n")  # short
    write(roots.proc, "uptime", "soon\n")
    write(roots.sys, "class/thermal/thermal_zone0/temp", "\x00\x01\n")
    write(roots.proc, "4242/io", "rchar: 1000\nwchar: lots\nwrite_bytes: 4096\n")
    reported = set()
    with caplog.at_level(logging.WARNING, logger="edge.worker.system"):
        values = read_all(roots, tmp_path, pid=4242, reported=reported)
        read_all(roots, tmp_path, pid=4242, reported=reported)  # the next sample does not log them again
    for skipped in ("throttled_raw", "under_voltage", "load_1m", "uptime_s", "cpu_temp_c", "bytes_written"):
        assert skipped not in values
    assert values["memory_used_pct"] == 13.5 and values["rss_mb"] == 47.0  # the good sources still count
    skipped_logs = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert reported == {"get_throttled", "loadavg", "uptime", "thermal_zone0/temp", "io"}
    assert len(skipped_logs) == len(reported)  # once each


def test_system_worker_survives_a_garbage_get_throttled(tmp_path):
    roots = recorded_pi(tmp_path)
    write(roots.sys, "devices/platform/soc/soc:firmware/get_throttled", "garbage\n")
    env = {"EDGE_HEALTH_PORT": "0", "EDGE_SYSTEM_SYS_ROOT": str(roots.sys), "EDGE_SYSTEM_PROC_ROOT": str(roots.proc)}
    rt = Runtime(make_config([SystemWorker], env=env), [SystemWorker], tmp_path / "state")
    rt.start()
    try:
        state = wait_for(lambda: rt.states.get("system"), timeout=5, message="system state")
        assert state["cpu_temp_c"] == 61.8 and "under_voltage" not in state
        runner = rt.supervisor.runner("system")
        assert runner.crashes == 0 and runner.state == "OK"
    finally:
        rt.stop()


def test_system_worker_puts_readings_on_the_state_board(tmp_path):
    roots = recorded_pi(tmp_path)
    env = {"EDGE_HEALTH_PORT": "0", "EDGE_SYSTEM_SYS_ROOT": str(roots.sys), "EDGE_SYSTEM_PROC_ROOT": str(roots.proc)}
    rt = Runtime(make_config([SystemWorker], env=env), [SystemWorker], tmp_path / "state")
    rt.start()
    try:
        state = wait_for(lambda: rt.states.get("system"), timeout=5, message="system state")
        assert state["cpu_temp_c"] == 61.8 and state["under_voltage"] is True
    finally:
        rt.stop()


def test_cpu_usage_is_the_busy_share_between_two_samples_and_last_boot_a_time(tmp_path):
    from edge.clock import FakeClock

    roots = recorded_pi(tmp_path)
    #                      user nice system idle iowait irq softirq steal
    write(roots.proc, "stat", "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n")
    env = {"EDGE_HEALTH_PORT": "0", "EDGE_SYSTEM_SYS_ROOT": str(roots.sys), "EDGE_SYSTEM_PROC_ROOT": str(roots.proc),
           "EDGE_SYSTEM_INTERVAL_S": "30"}

    class QuickSystem(SystemWorker):
        heartbeat_timeout_s = 0.3  # ctx.sleep looks at the fake clock every 0.1 s

    clock = FakeClock(wall=1_800_000_000.0)
    rt = Runtime(make_config([QuickSystem], env=env), [QuickSystem], tmp_path / "state", clock=clock)
    rt.start()
    try:
        first = wait_for(lambda: rt.states.get("system"), timeout=5, message="the first sample")
        assert first["cpu_usage_pct"] is None  # one sample says nothing about usage
        assert first["last_boot"] == "2027-01-14T07:57:57+00:00"  # wall clock minus /proc/uptime
        write(roots.proc, "stat", "cpu  200 0 200 1200 200 0 0 0 0 0\n")  # +200 busy of +800 in all
        clock.advance(30)
        second = wait_for(lambda: (lambda s: s if s.get("cpu_usage_pct") is not None else None)(
            rt.states.get("system")), timeout=5, message="the second sample")
        assert second["cpu_usage_pct"] == 25.0
    finally:
        rt.stop()
