"""What the node reports about itself: overall status, installed version, each worker's
state, restarts and availability, and each outside link's breaker, written to the state
board (which the link publishes) and as the per-worker availability map.

Reads the runtime (health, supervisor runners, breakers); writes nothing to disk. Not
responsible for publishing or for the entity configs (`discovery`).
"""

from __future__ import annotations

from typing import Any

from edge.breaker import CLOSED
from edge.health import DEGRADED, FAILED, HUNG

ONLINE, OFFLINE = "online", "offline"
PROBLEM_STATES = (DEGRADED, FAILED, HUNG)


def worker_availability(runner) -> str:
    """ONLINE while the worker's loop runs (`WorkerRunner.available`)."""
    return ONLINE if runner.available else OFFLINE


class NodeReport:
    def __init__(self, runtime: Any, states: Any, version: str):
        self.runtime = runtime
        self.states = states
        self.version = version

    def update(self) -> dict[str, str]:
        """Refresh the node's state-board values (unchanged values publish nothing: the
        board keeps the latest and ignores repeats); returns worker → availability."""
        rt = self.runtime
        safe_mode = rt.health.get("safe_mode") if rt.safe_mode else None
        self.states.set("node", {"state": rt.health.overall(), "summary": rt.health.summary(),
                                 "version": self.version, "safe_mode": rt.safe_mode,
                                 "safe_mode_reason": safe_mode.reason if safe_mode else None})
        availability = {}
        runners = rt.supervisor.runners if rt.supervisor is not None else []
        for r in runners:
            self.states.set(f"worker.{r.name}", {"state": r.state, "reason": r.reason, "restarts": r.restarts,
                                                 "problem": "ON" if r.state in PROBLEM_STATES else "OFF"})
            availability[r.name] = worker_availability(r)
        self.update_breakers()
        return availability

    def update_breakers(self) -> None:
        for name, breaker in self.runtime.breakers.all().items():
            self.states.set(f"breaker.{name}", "ON" if breaker.state == CLOSED else "OFF")
