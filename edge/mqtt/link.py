# About 520 lines, in one file on purpose: the link's run loop and paho's callbacks share one
# locked connection state (connected, birth timer, dirty states); the parts that stand alone
# are already modules of their own (connection, discovery, forwarding, outbox, commands).
"""The MQTT link worker: everything the runtime knows reaches Home Assistant, and no event is
lost while the broker or the network is away.

A worker like any other, started last (start_order 90), not critical but essential (it runs
in safe mode, so Home Assistant still sees rings). A lost broker opens the "mqtt" breaker
(health DEGRADED; "Events waiting" grows); it is not a crash of the link and never slows
the button path (the express lane, see Threads below, hands a ring over only when it can go
at once).

Threads: the worker's own (`run`: sending, acks, states, commands, the node report), an
ingest thread (bus → outbox, so a burst of events is written in one transaction while
sending goes on), and paho's network thread (`connection`); a ring that can go at once is
handed to paho in the thread that pressed (the bus's express lane, see `forwarding`). All
three end with `run`; in the simulator the embedded broker's thread lives until the runtime
stops.

What goes where:
- Events: see `forwarding` (every bus event except "internal.*", through the durable
  outbox, QoS 1, never retained; pictures in memory only).
- States: the state board (in memory, latest wins) on `edge/<node>/state/<key>`, retained,
  published on change and all again on every (re)connect and Home Assistant birth.
- On every (re)connect: retained `online` first, then discovery, then worker statuses,
  then states; then events resume, those in flight at the cut first.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from typing import Any

from edge import __version__
from edge.breaker import CLOSED
from edge.config import is_loopback
from edge.entities import Entity, shown
from edge.health import DEGRADED
from edge.mqtt import alerts as alertsmod
from edge.mqtt.connection import (BrokerConnection, ConnectionSettings, ConnectionSetupError, PublishRefused,
                                  default_client_id)
from edge.mqtt.doctor import broker_check
from edge.mqtt.discovery import PICTURE_COMPONENTS, Declared, Discovery, NodeInfo, node_entities, owned
from edge.mqtt.embedded_broker import EmbeddedBrokerError
from edge.mqtt.sim_broker import start_sim_broker
from edge.mqtt.forwarding import EventForwarder, to_json
from edge.mqtt.metrics import counters_for
from edge.mqtt.node_states import ONLINE, NodeReport
from edge.mqtt.outbox import OUTBOX_SCHEMA, Outbox
from edge.mqtt.remote_commands import RemoteCommands, is_button_path, register_node_commands
from edge.mqtt.settings import SECTION
from edge.mqtt.topics import Topics
from edge.node_facts import NodeFacts
from edge.worker import Worker, WorkerContext, boot_subscription

log = logging.getLogger("edge.mqtt.link")

INGEST_BATCH = 500
# Every callback, new event, state or health change wakes the link at once. Idle, it wakes
# this often only to heartbeat and to see a stop (an idle device must not spin); every
# REPORT_EVERY_S it refreshes the node report, which catches what changes without telling
# (a breaker going half-open), and the outbox counts (a read, never a write).
IDLE_WAKE_S = 0.5
REPORT_EVERY_S = 5.0
INGEST_POLL_S = 0.5
EXPIRE_EVERY_S = 60.0
SETUP_RETRY_S = 30.0
EVENTS_WAITING = "mqtt.events_waiting"  # state: events in the outbox, not yet acknowledged by the broker
EMBEDDED = "mqtt.embedded_broker"  # ctx.lasting key: the simulator's broker outlives link restarts
OUTBOX = "mqtt.outbox"  # ctx.lasting key: the outbox too (its memory part is all there is without a store)


def _state_payload(value: Any) -> bytes:
    """Text as is (a binary sensor's "ON"), anything else as JSON."""
    return value.encode() if isinstance(value, str) else to_json(value)


class MqttLink(Worker):
    name = "mqtt"
    sections = (SECTION, alertsmod.SECTION)
    schemas = (OUTBOX_SCHEMA,)
    # Runs in safe mode too (unless it ended the failed boots itself), so Home Assistant
    # still sees rings and why the device is in safe mode.
    essential = True
    start_order = 90
    heartbeat_timeout_s = 30.0
    # Not a broker "connectivity" sensor: Home Assistant can only ever see it on (or the whole
    # device unavailable). What a person can act on is how much waits to be delivered.
    entities = (Entity("sensor", "events_waiting", "Events waiting", state=EVENTS_WAITING, state_class="measurement",
                       entity_category="diagnostic", icon="mdi:tray-full"),)
    # Every bus event, from boot on: a runtime that honours this subscribes before starting
    # any worker and keeps the queue in ctx.lasting (edge.worker.boot_subscription);
    # otherwise the link subscribes when it starts (last), and events raised before that
    # are not published.
    bus_patterns_from_boot = ("*",)

    @classmethod
    def doctor(cls, config):
        return [broker_check(config)]

    def __init__(self, config):
        super().__init__(config)
        self._wake = threading.Event()
        self._interrupted = threading.Event()
        self._report_now = threading.Event()
        self.subscribed = threading.Event()     # commands and HA's birth reach us (SUBACK seen)
        self._lock = threading.Lock()           # connection state and reason, dirty states, birth timer
        self._publish_lock = threading.Lock()   # states and statuses: read the latest and publish as one step
        self._connected = False
        self._disconnect_reason = "not connected yet"
        self._birth_due: float | None = None
        self._dirty: set[str] = set()
        self._availability: dict[str, str] = {}
        self._setup_error: str | None = None
        self._ingest_error: BaseException | None = None
        self._rng = random.Random()
        self.conn: BrokerConnection | None = None
        self.outbox: Outbox | None = None
        self.events: EventForwarder | None = None
        self.configs: dict[str, dict] = {}
        self.broker_description = ""

    # -- the worker -------------------------------------------------------------------------
    def run(self, ctx: WorkerContext) -> None:
        subscription = self._subscription(ctx)  # first: every event from here on is ours
        cfg = ctx.config
        self.ctx = ctx
        self.runtime = ctx.runtime
        node = self.config["node"]
        self.topics = Topics(node.id, cfg.discovery_prefix)
        self.counters = counters_for(ctx.lasting, ctx.metrics)
        self.counters.link = self
        self.breaker = ctx.breakers.get("mqtt", failure_threshold=1)
        # Kept across link restarts, like the bus queue: with no store, or while the disk
        # refuses writes, its memory holds the only copy of the unsent events.
        self.outbox = ctx.lasting.get(OUTBOX, lambda: Outbox.open(ctx.store, ctx.clock, cfg.outbox_max_bytes,
                                                                  cfg.outbox_ttl_s))
        self.counters.outbox = self.outbox
        self.outbox.release_inflight()  # a new client: everything unacknowledged goes again, in order
        self.alerts = alertsmod.Alerts.from_config(self.config["alerts"])
        declared = self._declarations()
        facts = NodeFacts.read()
        health = self.config["health"]
        url = None if is_loopback(health.host) else f"http://{health.host}:{health.port}/health"
        self.discovery = Discovery(NodeInfo(node.id, node.name, __version__, model=facts.model, serial=facts.serial,
                                            macs=facts.macs, area=node.area, configuration_url=url), self.topics)
        self.configs = self.discovery.build(declared)
        self.events = EventForwarder(
            self.outbox, self.topics, ctx.bus.is_never_drop, self.counters, window=cfg.max_inflight,
            keep_kinds={d.entity.event for d in declared if d.entity.event},
            picture_kinds={d.entity.event for d in declared
                           if d.entity.event and d.entity.component in PICTURE_COMPONENTS},
            wake=self._wake.set, connection=lambda: (self.conn, self.connected))
        self.report = NodeReport(self.runtime, ctx.states, __version__) if self.runtime is not None else None
        registry = ctx.commands.registry
        self.counters.registry = registry
        self.commands = RemoteCommands(registry, self.topics, cfg.allow_dangerous_commands)
        if self.runtime is not None:
            register_node_commands(ctx.commands, self.runtime)
        with contextlib.ExitStack() as undo:  # undone in reverse order, whatever happens
            undo.callback(self._finish, ctx)
            undo.callback(ctx.states.listen(self._on_state))
            health_listeners = getattr(ctx.health, "listeners", [])
            health_listeners.append(self._on_health)
            undo.callback(health_listeners.remove, self._on_health)
            ctx.register_sim("emit", self._sim_emit)
            stop_ingest = threading.Event()
            ingest = threading.Thread(target=self._ingest, args=(subscription, stop_ingest),
                                      name="mqtt-ingest", daemon=True)
            ingest.start()
            undo.callback(ingest.join, 5)
            undo.callback(stop_ingest.set)
            subscription.express(self.events.express)
            undo.callback(subscription.express, None)
            self._update_report()
            self._setup_connection(cfg)
            self._loop(ctx, cfg, ingest)

    def _finish(self, ctx: WorkerContext) -> None:
        final = ctx.shutdown.is_set()  # not a restart on request: the runtime stops
        if self.conn is not None:
            # On the way out of the runtime say so; a link restart just reconnects.
            self.conn.stop(last_words=(self.topics.status, "offline") if final else None)
        with self._lock:
            self._connected = False
        if final:
            ctx.lasting.discard(EMBEDDED)
            ctx.lasting.discard(f"{self.name}.subscription")
        if self.counters.link is self:
            self.counters.link = None

    def _subscription(self, ctx: WorkerContext):
        """All bus events, in one queue that outlives restarts of the link: events raised
        while it restarts wait there instead of being missed."""
        return boot_subscription(type(self), ctx.lasting, ctx.bus)

    def _loop(self, ctx: WorkerContext, cfg, ingest: threading.Thread) -> None:
        clock = ctx.clock
        next_report = next_expire = clock.monotonic()
        next_setup = clock.monotonic() + SETUP_RETRY_S
        while not ctx.stopping.is_set():
            ctx.heartbeat()
            woken = self._wake.wait(self._wait_s(clock.monotonic()))
            self._wake.clear()
            if self._interrupted.is_set():
                log.warning("MQTT link interrupted: restarting it")
                return
            if self._ingest_error is not None or not ingest.is_alive():
                raise RuntimeError(f"MQTT ingest thread died: {self._ingest_error!r}")
            now = clock.monotonic()
            if now >= next_report or self._report_now.is_set():
                self._report_now.clear()
                self._update_report()
                self.events.changed.set()  # refresh the cached counts now and then
                next_report = now + REPORT_EVERY_S
            self._maybe_rebirth(now)
            if self.outbox.durable is None and ctx.store is not None:  # the store opened late
                if self.outbox.attach(ctx.store, clock, cfg.outbox_max_bytes, cfg.outbox_ttl_s):
                    self.events.outbox_grew()
            if now >= next_expire:
                if self.outbox.expire():
                    self.events.changed.set()
                next_expire = now + EXPIRE_EVERY_S
            if self.conn is None and now >= next_setup:
                self._setup_connection(cfg)
                next_setup = now + SETUP_RETRY_S
            if not woken and not self.events.changed.is_set():
                continue  # nothing happened: no store query, no publish
            if self.commands is not None:
                self.commands.run_pending(self._publish_reply)
            self._publish_dirty()
            self.events.pump(self.conn, self.connected)

    def _wait_s(self, now: float) -> float:
        """Until something needs doing: woken by every callback, else the birth timer or
        the heartbeat (every IDLE_WAKE_S, well inside heartbeat_timeout_s)."""
        with self._lock:
            due = self._birth_due
        return IDLE_WAKE_S if due is None else max(0.0, min(IDLE_WAKE_S, due - now))

    def health(self) -> tuple[str, str] | None:
        if self._setup_error:
            return DEGRADED, self._setup_error
        # Not yet connected at start is not a fault; a failure (the breaker opened) is.
        if self.conn is not None and not self.connected and self.breaker.state != CLOSED:
            waiting = self.events.counts["pending"] + self.events.counts["inflight"]
            return DEGRADED, (f"broker {self.broker_description} unreachable ({self._disconnect_reason}); "
                              f"{waiting} events wait in the outbox")
        if self.outbox is not None and self.outbox.degraded:
            return DEGRADED, self.outbox.degraded
        return None

    def interrupt(self) -> None:
        self._interrupted.set()
        self._wake.set()

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def outbox_counts(self) -> dict[str, int]:
        return dict(self.events.counts) if self.events is not None else {}

    # -- setup --------------------------------------------------------------------------------
    def _declarations(self) -> list[Declared]:
        """The entities this device shows: the node's own, and those of every enabled
        worker class (a disabled worker's old configs are then cleared as stale)."""
        if self.runtime is None:
            return owned(type(self).entities, self.name)
        config = self.runtime.config
        enabled = [c for c in self.runtime.classes if c.enabled(config)]
        names = [c.name for c in enabled]
        declared = node_entities(names, frozenset(c.name for c in enabled if is_button_path(c)))
        for cls in enabled:
            declared += owned([e for e in cls.entities if shown(e, config)], cls.name)
        if alertsmod.SOURCE_WORKER in names:
            declared += owned(self.alerts.entities(), alertsmod.SOURCE_WORKER)
        return declared

    def _settings(self, cfg) -> ConnectionSettings:
        host, port, protocol = cfg.host, cfg.port, cfg.protocol
        if not host and self.ctx.sim is not None:
            broker = self._embedded_broker(cfg.port)
            host, port, protocol = broker.host, broker.port, "3.1.1"  # amqtt speaks 3.1.1 only
        if not host:
            raise ConnectionSetupError("no broker configured: set [mqtt] host (or EDGE_MQTT_HOST), "
                                       "or enabled = false")
        node_id = self.config["node"].id
        return ConnectionSettings(
            host=host, port=port, client_id=cfg.client_id or default_client_id(node_id, seed_path=self._client_seed_path()),
            will_topic=self.topics.status, protocol=protocol, keepalive_s=cfg.keepalive_s,
            username=cfg.username, password=cfg.secret("password"), tls=cfg.tls, tls_ca=cfg.tls_ca,
            tls_cert=cfg.tls_cert, tls_key=cfg.tls_key, reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s)

    def _client_seed_path(self):
        state_dir = self.ctx.state_dir
        return state_dir / "mqtt-client-seed" if state_dir is not None else None

    def _setup_connection(self, cfg) -> None:
        try:
            settings = self._settings(cfg)
            self.broker_description = settings.describe()
            self.conn = BrokerConnection(settings, self, self._rng)
        except (ConnectionSetupError, EmbeddedBrokerError) as exc:
            if str(exc) != self._setup_error:
                log.error("MQTT link cannot connect: %s", exc)
            self._setup_error = str(exc)
            self.breaker.record_failure(str(exc))
            self.conn = None
            return
        self._setup_error = None
        log.info("MQTT link connecting to %s as %s", self.broker_description, settings.client_id)
        self.conn.start()

    def _embedded_broker(self, port: int):
        lasting = self.ctx.lasting
        if lasting.peek(EMBEDDED) is None:
            broker = lasting.get(EMBEDDED, lambda: start_sim_broker(port), close=lambda b: b.stop())
            line = broker.describe()
            log.warning("simulator: %s", line)
            # For the person at the terminal (stderr, like the simulator's banner, which is
            # usually printed before this broker is up; stdout is the JSON log).
            self.ctx.announce(f"mqtt:    {line}")
        return lasting.peek(EMBEDDED)

    # -- connection callbacks (paho's thread) ----------------------------------------------------
    def on_connected(self) -> None:
        with self._lock:
            self._birth_due = None  # this connect announces everything anyway
        self.breaker.record_success()
        if self.report is not None:
            self.report.update_breakers()  # so the states below say the broker is connected
        self._put(self.topics.status, "online", qos=1, retain=True)
        self._announce_all()
        self.conn.subscribe([self.topics.commands, self.topics.birth, self.topics.configs])
        self.events.on_connected()  # before we count as connected: paho re-sends the cut's first
        with self._lock:
            self._connected = True
        self.counters.add("connects")
        log.info("MQTT link connected to %s", self.broker_description)
        self._wake.set()

    def on_subscribed(self) -> None:
        self.subscribed.set()

    def on_disconnected(self, reason: str) -> None:
        self.subscribed.clear()
        with self._lock:
            was, self._connected = self._connected, False
            self._disconnect_reason = reason
        if was:
            log.warning("MQTT link lost the broker: %s; events wait in the outbox", reason)
        self.breaker.record_failure(reason)
        self._wake.set()

    def on_acked(self, mid: int, error: str | None) -> None:
        self.events.on_acked(mid, error)
        self._wake.set()

    def on_message(self, topic: str, payload: bytes, properties, retain: bool = False) -> None:
        if topic == self.topics.birth:
            # A retained birth is an old one, replayed by the broker on every subscribe: the
            # announcement on connect already covers it (HA's own birth is not retained).
            if payload.strip() == b"online" and not retain:
                self._schedule_rebirth()
            return
        if self.topics.is_own_config(topic):
            if payload and topic not in self.configs:
                # A config this device no longer produces (a disabled worker, a removed
                # entity): an empty retained payload deletes it in HA and on the broker.
                self._put(topic, b"", qos=1, retain=True)
                self.counters.add("discovery_cleared")
                log.info("cleared stale discovery config %s", topic)
            return
        name = self.topics.command_name(topic)
        if name is not None and self.commands is not None:
            self.commands.offer(name, payload, properties)
            self._wake.set()

    # -- publishing --------------------------------------------------------------------------
    def _put(self, topic: str, payload: bytes | str, qos: int, retain: bool, properties=None) -> None:
        """Publish a status, config, state or reply; one that paho refuses is logged and
        skipped, never allowed to stop the rest (an event goes through `_send` instead)."""
        try:
            self.conn.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except PublishRefused as exc:
            log.error("cannot publish %s", exc)

    def _announce_all(self) -> None:
        """Discovery, every worker status and every state: on each (re)connect and after
        Home Assistant's birth."""
        self._publish_discovery()
        with self._publish_lock:
            self._publish_statuses(all_of_them=True)
            self._publish_states(self.ctx.states.snapshot())

    def _publish_discovery(self) -> None:
        for topic, cfg in self.configs.items():
            self._put(topic, to_json(cfg), qos=1, retain=True)
        self.counters.add("discovery_published", len(self.configs))

    def _publish_statuses(self, all_of_them: bool = False, changed: dict[str, str] | None = None) -> None:
        """Worker availability (retained). Call with `_publish_lock` held."""
        statuses = dict(self._availability if all_of_them else (changed or {}))
        if all_of_them and self.runtime is not None:
            for cls in self.runtime.classes:  # disabled workers: no stale "online" left behind
                statuses.setdefault(cls.name, "")
        for worker, status in statuses.items():
            try:
                topic = self.topics.worker_status(worker)
            except ValueError:
                continue  # logged by discovery, which skips that worker's entities too
            self._put(topic, status, qos=1, retain=True)

    def _publish_states(self, values: dict[str, Any]) -> None:
        """States: retained, QoS 0 (latest wins; re-published on reconnect). Call with
        `_publish_lock` held."""
        for key, value in values.items():
            self._put(self.topics.state(key), _state_payload(value), qos=0, retain=True)

    def _publish_dirty(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            connected = self._connected
        if alertsmod.SOURCE_STATE in dirty:
            reading = self.ctx.states.get(alertsmod.SOURCE_STATE)
            if isinstance(reading, dict):
                for key, value in self.alerts.evaluate(reading, self.ctx.clock.monotonic()).items():
                    self.ctx.states.set(key, value)  # our listener marks them dirty: published next round
        if not connected or not dirty:
            return
        with self._publish_lock:
            snapshot = self.ctx.states.snapshot()
            self._publish_states({k: snapshot[k] for k in dirty if k in snapshot})

    def _publish_reply(self, topic: str, body: bytes, properties) -> None:
        if self.conn is not None and self.connected:
            self._put(topic, body, qos=1, retain=False, properties=properties)

    def _update_report(self) -> None:
        counts = self.events.counts
        self.ctx.states.set(EVENTS_WAITING, counts["pending"] + counts["inflight"])
        if self.report is None:
            return
        availability = self.report.update()
        availability[self.name] = ONLINE  # we are running: this is us talking
        with self._publish_lock:
            changed = {w: s for w, s in availability.items() if self._availability.get(w) != s}
            self._availability = availability
            if changed and self.conn is not None and self.connected:
                self._publish_statuses(changed=changed)

    # -- Home Assistant birth ------------------------------------------------------------------
    def _schedule_rebirth(self) -> None:
        """HA restarted: re-announce after a random 1-5 s (HA's docs ask for a random delay,
        so a house full of devices does not answer at once); births during the wait fold
        into one re-announcement."""
        cfg = self.ctx.config
        with self._lock:
            if self._birth_due is None:
                self._birth_due = self.ctx.clock.monotonic() + self._rng.uniform(cfg.birth_delay_min_s,
                                                                                 cfg.birth_delay_max_s)
        self._wake.set()

    def _maybe_rebirth(self, now: float) -> None:
        with self._lock:
            due = self._birth_due is not None and now >= self._birth_due and self._connected
            if due:
                self._birth_due = None
        if not due:
            return
        log.info("Home Assistant came online: re-publishing discovery and states")
        self._announce_all()

    # -- events: bus → outbox → broker ------------------------------------------------------------
    def _ingest(self, sub, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                event = sub.get(timeout=INGEST_POLL_S)
                if event is None:
                    continue
                batch = [event]
                while len(batch) < INGEST_BATCH:
                    more = sub.get(timeout=0)
                    if more is None:
                        break
                    batch.append(more)
                self.events.take(batch)
                sub.done()
        except BaseException as exc:  # reported by the worker's loop, which then restarts the link
            self._ingest_error = exc
            self._wake.set()

    # -- listeners (other threads) ------------------------------------------------------------------
    def _on_state(self, name: str, value: Any) -> None:
        with self._lock:
            self._dirty.add(name)
        self._wake.set()

    def _on_health(self, component) -> None:
        self._report_now.set()  # a worker's state or a breaker changed: report it now
        self._wake.set()

    # -- simulator ----------------------------------------------------------------------------------
    def _sim_emit(self, args: dict) -> dict:
        """POST /sim/emit {"kind": "...", "data": {...}, "count": n} (simulator only): put
        test events on the bus, to watch them reach the broker."""
        kind = args.get("kind", "sim.test")
        data = args.get("data", {})
        count = args.get("count", 1)
        if not isinstance(kind, str) or not kind or not isinstance(data, dict) or not isinstance(count, int) \
                or not 1 <= count <= 10_000:
            raise ValueError('expected {"kind": "text", "data": {...}, "count": 1..10000}')
        ids = [self.ctx.bus.emit(kind, dict(data, n=i) if count > 1 else dict(data)).event_id for i in range(count)]
        return {"event_ids": ids}
