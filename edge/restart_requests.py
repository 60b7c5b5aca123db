"""How often a command may restart things (Home Assistant's restart buttons, or anyone who
can publish to the broker). A storm of `restart_runtime` once reached systemd's start limit
(10 starts in 600 s) and left the unit failed with the chime dead; six `restart_worker
doorbell` in 22 s made the doorbell FAILED. So: a worker may be restarted on request at most
`requested_restarts` times per window, the runtime only after it has been up
`runtime_restart_min_uptime_s` (monotonic time, so the limit holds across the restarts
themselves: at most two runtime restarts per 600 s with the default of 300 s), and the
button path (an essential, critical worker) never: it restarts itself when it fails.
Requested restarts count neither as crashes nor as failed boots (edge.supervisor,
edge.runtime). Every refusal says why and what to do instead, and is counted.

Not responsible for: doing the restart (edge.supervisor, edge.runtime).
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque

from edge.clock import Clock
from edge.commands import CommandRejected

RATE_LIMITED = "rate_limited"


class RestartRequests:
    def __init__(self, clock: Clock, *, per_worker: int, window_s: float, runtime_min_uptime_s: float):
        self._clock = clock
        self._started = clock.monotonic()
        self.per_worker = per_worker
        self.window_s = window_s
        self.runtime_min_uptime_s = runtime_min_uptime_s
        self._times: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg, clock: Clock) -> "RestartRequests":
        return cls(clock, per_worker=cfg.requested_restarts, window_s=cfg.requested_restarts_window_s,
                   runtime_min_uptime_s=cfg.runtime_restart_min_uptime_s)

    def allow_worker(self, name: str, *, button_path: bool) -> None:
        """Count a restart of `name`, or raise CommandRejected with the reason."""
        if button_path:
            raise CommandRejected(f"restart_worker: {name} is the button path and is not restarted on request "
                                  f"(it would silence the bell); it restarts itself when it fails", "unauthorized")
        now = self._clock.monotonic()
        with self._lock:
            times = self._times[name]
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if len(times) >= self.per_worker:
                wait = self.window_s - (now - times[0])
                raise CommandRejected(f"restart_worker: {name} was restarted on request {len(times)} times in the "
                                      f"last {self.window_s:g} s (the most allowed); try again in {wait:.0f} s",
                                      RATE_LIMITED)
            times.append(now)

    def allow_runtime(self) -> None:
        """Allow a restart of the whole runtime, or raise CommandRejected with the reason."""
        uptime = self._clock.monotonic() - self._started
        if uptime < self.runtime_min_uptime_s:
            raise CommandRejected(f"restart_runtime: the runtime started {uptime:.0f} s ago; a restart on request is "
                                  f"allowed {self.runtime_min_uptime_s:g} s after start (so no storm of commands "
                                  f"reaches systemd's start limit); try again in "
                                  f"{self.runtime_min_uptime_s - uptime:.0f} s, or run `sudo systemctl restart edge`",
                                  RATE_LIMITED)
