"""The NetBox worker: when to sync, and what the outcome means for health and Home Assistant.

Triggers: at start-up, every `interval_s`, when the local facts change (looked at every
`facts_check_s`: an interface got another address, the printer was plugged in), and on
demand (the "Sync NetBox" button, command `netbox_sync`). A sync is skipped while the NetBox
breaker is open; it runs again when the breaker lets a trial through, or after a 429's
Retry-After, so the worker catches up on its own when NetBox comes back.

Outcomes: NetBox down, slow, 5xx or 429 → DEGRADED with the reason, breaker open, retried
with backoff; a 403, a conflict, missing prerequisites, a 400 or an untested NetBox version
→ a problem with the reason (connectivity stays on), not retried in a loop: the next try is
the next trigger. The last successful sync (time, device id, what it kept, the peripherals
it saw) stays in the store, so `edge netbox sync` and a restarted worker start from it.

Off by default, not essential, never critical: nothing here can touch the doorbell, and a
bug in one sync is contained (logged once, reported) instead of restarting the worker.

Not responsible for: what a sync reads and writes (sync.py), facts (facts.py), HTTP
(client.py).
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from edge.breaker import CircuitBreaker
from edge.commands import Command
from edge.containment import StepGuard
from edge.entities import Entity, connectivity
from edge.health import DEGRADED
from edge.store import StoreUnavailable
from edge.worker import Worker, WorkerContext
from services.netbox import client
from services.netbox.doctor import checks
from services.netbox.facts import Facts, Peripheral, read_facts
from services.netbox.sections import SECTION
from services.netbox.matching import Conflict
from services.netbox.sync import MissingPrerequisites, Rejected, Sync

STATE = "netbox"                 # state-board key of the outcome (HA entities read it)
LAST_SYNC_KEY = "netbox.last_sync"  # store key of the last successful sync
WAIT_STEP_S = 0.5


def load_last_sync(store) -> dict | None:
    """The last successful sync as the store keeps it (None: never, or no store)."""
    if store is None:
        return None
    try:
        return store.kv_get(LAST_SYNC_KEY)
    except StoreUnavailable:
        return None


def stored_peripherals(last: dict | None) -> tuple[Peripheral, ...] | None:
    if not last or last.get("peripherals") is None:
        return None
    return tuple(Peripheral(**p) for p in last["peripherals"])


def signature(facts: Facts) -> tuple:
    """What, when it changes, is worth a sync now (not the runtime's clock or load)."""
    return (facts.hostname, facts.identity, facts.serial, facts.model, facts.os, facts.runtime_version,
            facts.interfaces, facts.peripherals)


class NetboxWorker(Worker):
    name = "netbox"
    sections = (SECTION,)
    start_order = 80
    # One request is bounded by (connect + read timeout) × (retries + 1) plus backoff; every
    # answer heartbeats (a response hook), so this only has to cover one request.
    heartbeat_timeout_s = 180.0
    entities = (
        connectivity("netbox", "NetBox"),
        Entity("sensor", "netbox_last_sync", "NetBox last sync", state=STATE,
               value_template="{{ value_json.last_success }}", device_class="timestamp",
               entity_category="diagnostic", icon="mdi:sync"),
        Entity("sensor", "netbox_changed", "NetBox objects changed", state=STATE,
               value_template="{{ value_json.changed }}", entity_category="diagnostic", icon="mdi:database-edit"),
        Entity("binary_sensor", "netbox_sync_problem", "NetBox sync problem", state=STATE,
               value_template="{{ 'ON' if value_json.problem else 'OFF' }}", device_class="problem",
               entity_category="diagnostic", attributes=STATE),
        Entity("button", "netbox_sync", "Sync NetBox", command="netbox_sync", icon="mdi:database-sync",
               entity_category="config", requires=("netbox.enabled",)),
    )

    @classmethod
    def doctor(cls, config):
        return checks(config)

    def __init__(self, config, *, root: Path = Path("/"), interfaces=None):
        super().__init__(config)
        self.root = root
        self.interfaces = interfaces  # None: psutil (tests inject recorded interfaces)
        self._wanted = threading.Event()
        self._api = None
        self._health: tuple[str, str] | None = None
        self.last: dict | None = None

    # -- the loop ------------------------------------------------------------------------------
    def run(self, ctx: WorkerContext) -> None:
        cfg = ctx.config
        guard = StepGuard(ctx.log, "netbox", "the next trigger tries again")
        breaker = ctx.breakers.get("netbox", failure_threshold=1, reset_timeout=max(1.0, cfg.connect_timeout_s),
                                   max_reset_timeout=cfg.interval_s)
        ctx.commands.register(Command("netbox_sync", self._on_demand, fields={},
                                      authorized=lambda: bool(cfg.enabled), refusal="set [netbox] enabled = true"))
        token = cfg.secret("token") or ""
        self._api = client.make_api(cfg, token)
        self._api.http_session.hooks["response"].append(lambda response, *a, **kw: ctx.heartbeat())
        self.last = load_last_sync(ctx.store)
        synced_signature = None
        # The first sync waits one facts check, so the workers started before this one have
        # published their peripherals (else a camera not yet reported would be marked stale).
        next_periodic = ctx.clock.monotonic() + cfg.facts_check_s
        not_before = 0.0
        next_facts = 0.0
        catching_up = False
        facts = None
        self._publish(ctx, problem=None, reason="waiting for the first sync")
        try:
            while not ctx.stopping.is_set():
                now = ctx.clock.monotonic()
                if now >= next_facts or self._wanted.is_set():
                    facts = guard.run("facts", self._facts, ctx) or facts
                    next_facts = now + cfg.facts_check_s
                changed = facts is not None and synced_signature is not None and signature(facts) != synced_signature
                due = self._wanted.is_set() or now >= next_periodic or changed or catching_up
                # While NetBox is down the breaker's backoff paces the retries.
                if facts is not None and due and now >= not_before and breaker.allow():
                    self._wanted.clear()
                    outcome = guard.run("sync", self._sync_once, ctx, facts, breaker, default=None)
                    if outcome is None:  # a bug of ours, contained and logged by the guard
                        reason = guard.faults().get("sync", "")
                        self._health = (DEGRADED, f"NetBox sync failed: {reason}")
                        self._publish(ctx, problem="internal", reason=reason)
                        breaker.record_success()
                    # NetBox's trouble: try again when it lets us; ours (403, conflict, ...): wait
                    # for the next trigger instead of asking again in a loop.
                    catching_up = outcome is not None and outcome.kind in client.TRANSIENT
                    synced_signature = signature(facts)
                    if outcome is not None and outcome.retry_after_s:
                        not_before = ctx.clock.monotonic() + outcome.retry_after_s
                    next_periodic = ctx.clock.monotonic() + cfg.interval_s
                self._wait(ctx)
        finally:
            self._api.http_session.close()

    def _wait(self, ctx: WorkerContext) -> None:
        """Until the next look (an on-demand request wakes it at once, unless one is already
        waiting for the breaker or a Retry-After: then this is a plain pause, not a spin)."""
        ctx.heartbeat()
        (ctx.stopping if self._wanted.is_set() else self._wanted).wait(WAIT_STEP_S)

    def interrupt(self) -> None:
        if self._api is not None:
            # The request in flight runs to its timeout; none is sent after it (TimeoutAdapter).
            self._api.http_session.close()

    def health(self) -> tuple[str, str] | None:
        return self._health

    def _on_demand(self, payload: dict, via: str) -> dict:
        self._wanted.set()
        return {"queued": True}

    def _facts(self, ctx: WorkerContext) -> Facts:
        kwargs = {"interfaces": self.interfaces} if self.interfaces is not None else {}
        return read_facts(self.root, states=ctx.states.snapshot(), **kwargs)

    # -- one sync ------------------------------------------------------------------------------
    def _sync_once(self, ctx: WorkerContext, facts: Facts, breaker: CircuitBreaker) -> client.Failure:
        cfg = ctx.config
        run_id = uuid.uuid4().hex[:8]
        cached = (self.last or {}).get("device_id")
        try:
            client.check_version(self._api)
            result = Sync(self._api, cfg, facts, run_id=run_id, node=ctx.node.id if ctx.node else facts.hostname,
                          cached_device_id=cached).run()
        except (Conflict, MissingPrerequisites, Rejected) as exc:
            breaker.record_success()  # NetBox answered: the link is fine, the data is not
            kind = {Conflict: client.CONFLICT, MissingPrerequisites: client.MISSING}.get(type(exc), client.REJECTED)
            return self._failed(ctx, client.Failure(kind, str(exc)))
        except Exception as exc:  # noqa: BLE001 - classified below; anything else is re-raised to the guard
            failure = client.classify(exc)
            if failure is None:
                raise
            if failure.kind in client.TRANSIENT:
                breaker.record_failure(failure.message)
            else:
                breaker.record_success()
            return self._failed(ctx, failure)
        breaker.record_success()
        now = datetime.fromtimestamp(ctx.clock.wall(), timezone.utc).isoformat(timespec="seconds")
        self.last = {"time": now, "device_id": result.device_id, "run": run_id, "changed": len(result.changes),
                     "ids": result.ids,
                     "peripherals": [asdict(p) for p in facts.peripherals] if facts.peripherals is not None else None}
        self._save(ctx)
        if result.changes:
            ctx.log.info("NetBox sync %s: %d change(s): %s", run_id, len(result.changes),
                         "; ".join(f"{c.action} {c.label}" for c in result.changes[:10]))
        for note in result.notes:
            ctx.log.info("NetBox sync %s: %s", run_id, note)
        self._health = None
        self._publish(ctx, problem=None, reason=f"in sync ({len(result.changes)} change(s) in the last run)",
                      changed=len(result.changes))
        return client.Failure("ok", "")

    def _failed(self, ctx: WorkerContext, failure: client.Failure) -> client.Failure:
        transient = failure.kind in client.TRANSIENT
        prefix = "NetBox unavailable" if transient else "NetBox sync problem"
        self._health = (DEGRADED, f"{prefix}: {failure.message}")
        (ctx.log.warning if transient else ctx.log.error)("%s (%s): %s", prefix, failure.kind, failure.message)
        self._publish(ctx, problem=failure.kind, reason=failure.message, changed=0)
        return failure

    def _save(self, ctx: WorkerContext) -> None:
        store = ctx.store
        if store is None:
            return
        try:
            store.kv_set(LAST_SYNC_KEY, self.last)
        except StoreUnavailable as exc:
            ctx.log.warning("the last NetBox sync could not be saved (%s); the next start matches by serial "
                            "and name again", exc)

    def _publish(self, ctx: WorkerContext, problem: str | None, reason: str, changed: int | None = None) -> None:
        last = self.last or {}
        ctx.states.set(STATE, {"problem": problem, "reason": reason, "last_success": last.get("time"),
                               "changed": changed if changed is not None else last.get("changed"),
                               "device_id": last.get("device_id")})
