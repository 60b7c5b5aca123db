"""Benchmark of the intercom (prints JSON).

(a) Press → INVITE at the answering peer, p50/p99 over `--calls` calls, beside the same
    INVITE sent by hand over baresip's control link in the same run (the baseline: what
    baresip and kamailio cost without the worker); the ratio is what the worker adds
    (the bus hop from the doorbell, the call logic). Goal: p99 ≤ 100 ms.
(b) DTMF end → relay pulse: a baresip house phone keys the code; from the moment its
    `sndcode` is sent to the relay pin turning on, beside the doorbell's own `open_door`
    called in-process (the baseline).
(c) Memory: RSS of the baresip child, and of this process before the device started and
    with the device (the doorbell without recognition, and the intercom) running.

The answering peer of (a) is a few lines of UDP here (it notes the INVITE's arrival and
answers 486, so each call ends at once): written by hand because only the arrival time is
wanted, which SIPp does not report per message. Everything runs on 127.0.0.1 and free ports
against a real kamailio.

    python tests/bench/bench_sip.py [--calls 50] [--codes 10]
"""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path

from edge.testing.waiting import wait_for
from services.doorbell.testing import NO_FACES, SimulatedDoorbell
from services.doorbell.worker import DoorbellWorker
from services.sip.backend import REGISTERED
from services.sip.baresip import free_sip_port
from services.sip.testing import HousePhone, Kamailio
from services.sip.worker import SipWorker
from measures import bench_parser, percentiles, rss_mb

DOOR_PW, HOUSE_PW = "bench-door-pw", "bench-house-pw"


class BusyPeer:
    """Notes when each INVITE arrives and answers it 486 Busy Here."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", free_sip_port()))
        self.port = self.sock.getsockname()[1]
        self.arrivals: list[float] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            text = data.decode(errors="replace")
            if not text.startswith("INVITE "):
                continue
            self.arrivals.append(time.perf_counter())
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            keep = [h for h in head[1:] if re.match(r"(?i)(via|from|call-id|cseq):", h)]
            to = next(h for h in head if h.lower().startswith("to:"))
            reply = "\r\n".join(["SIP/2.0 486 Busy Here", *keep, f"{to};tag=bench", "Content-Length: 0", "", ""])
            self.sock.sendto(reply.encode(), addr)

    def close(self) -> None:
        self.sock.close()


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--calls", type=int, default=50, help="calls for press → INVITE (default 50)")
    parser.add_argument("--codes", type=int, default=10, help="answered calls for DTMF → relay (default 10)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sip-") as tmp:
        print(json.dumps(run(Path(tmp), args), indent=2))


def run(tmp: Path, args) -> dict:
    peer = BusyPeer()
    kamailio = Kamailio(tmp / "kamailio", {"door": DOOR_PW, "house": HOUSE_PW}, max_expires=60,
                        routes={"busy": peer.port}).start()
    house = HousePhone(tmp / "house", "house", HOUSE_PW, kamailio.port).start()
    rss_before = rss_mb(os.getpid())
    config = {**NO_FACES, "doorbell": {"allow_remote_open": True, "cooldown_s": 0, "relay_pulse_s": 0.1},
              "sip": {"enabled": True, "registrar": f"127.0.0.1:{kamailio.port}", "username": "door",
                      "listen": f"127.0.0.1:{free_sip_port()}", "targets": ["busy"], "open_code": "9",
                      "hangup_after_open_s": 0}}
    bell = SimulatedDoorbell(tmp / "door", config, classes=(DoorbellWorker, SipWorker),
                             watch=("doorbell.*", "sip.*"), env={"EDGE_SIP_PASSWORD": DOOR_PW}).start()
    try:
        worker = bell.runtime.supervisor.runner("sip").worker
        wait_for(lambda: worker.line_state == REGISTERED, 10, message="the door to register")
        wait_for(house.registered, 10, message="the house phone to register")
        result = {"press_to_invite": press_to_invite(bell, peer, args.calls),
                  "dial_to_invite_baseline": dial_to_invite(bell, worker, peer, kamailio.port, args.calls)}
        result["invite_ratio_p50"] = round(result["press_to_invite"]["p50_ms"]
                                           / result["dial_to_invite_baseline"]["p50_ms"], 2)
        result["goal_p99_ms"] = 100
        result["dtmf_to_relay"] = dtmf_to_relay(bell, house, args.codes)
        result["open_door_baseline"] = open_door_direct(bell, args.codes)
        result["memory"] = {"baresip_rss_mb": rss_mb(worker.backend.pid()), "process_rss_before_mb": rss_before,
                            "process_rss_with_device_mb": rss_mb(os.getpid())}
        return result
    finally:
        bell.stop()
        house.stop()
        kamailio.stop()
        peer.close()


def _next_call(bell, seen: int, timeout: float = 10) -> None:
    wait_for(lambda: len(bell.events("sip.call")) > seen, timeout, message="the call to end")


def press_to_invite(bell, peer: BusyPeer, calls: int) -> dict:
    samples = []
    for _ in range(calls):
        seen, arrived = len(bell.events("sip.call")), len(peer.arrivals)
        started = time.perf_counter()
        bell.press()
        # The first INVITE is challenged (407); the one that reaches the peer is the second.
        wait_for(lambda: len(peer.arrivals) > arrived, 10, message="the INVITE at the peer")
        samples.append((peer.arrivals[arrived] - started) * 1000)
        _next_call(bell, seen)
    return percentiles(samples)


def dial_to_invite(bell, worker, peer: BusyPeer, kamailio_port: int, calls: int) -> dict:
    samples = []
    for _ in range(calls):
        arrived = len(peer.arrivals)
        started = time.perf_counter()
        worker.backend.link.command("dial", "sip:busy@127.0.0.1")
        wait_for(lambda: len(peer.arrivals) > arrived, 10, message="the INVITE at the peer")
        samples.append((peer.arrivals[arrived] - started) * 1000)
        time.sleep(0.05)  # the 486 ends the call; a quiet gap so calls do not overlap
    return percentiles(samples)


def relay_on_after(bell, started_at: float) -> float:
    relay = bell.relay
    wait_for(lambda: relay.state, 10, interval=0.0005, message="the relay pulse")
    return (time.perf_counter() - started_at) * 1000


def dtmf_to_relay(bell, house, calls: int) -> dict:
    samples = []
    cfg = bell.runtime.supervisor.runner("sip").worker.cfg
    for _ in range(calls):
        seen = len(bell.events("sip.call"))
        house.seen.clear()
        bell.runtime.commands.call("sip_call", {"target": "house"}, via="cli")
        house.wait_event("CALL_ESTABLISHED")
        wait_for(lambda: not bell.relay.state, 5, message="the relay to be off")
        started = time.perf_counter()
        house.send_dtmf("9")
        samples.append(relay_on_after(bell, started))
        _next_call(bell, seen)
    assert cfg.open_code == "9"
    return percentiles(samples)


def open_door_direct(bell, calls: int) -> dict:
    samples = []
    for _ in range(calls):
        wait_for(lambda: not bell.relay.state, 5, message="the relay to be off")
        started = time.perf_counter()
        bell.command("open_door", {})
        samples.append(relay_on_after(bell, started))
    return percentiles(samples)


if __name__ == "__main__":
    main()
