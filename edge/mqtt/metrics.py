"""The link's Prometheus metrics, read at scrape time from the running link and from
counters that outlive its restarts (a restarted link must not reset or re-register them).

    edge_mqtt_connected                      1 while connected to the broker
    edge_mqtt_connects_total                 successful connections (reconnects included)
    edge_mqtt_events_delivered_total         events acknowledged by the broker (PUBACK)
    edge_mqtt_outbox_pending / _inflight / _bytes
    edge_mqtt_outbox_dropped_total{reason,class}   ttl, cap, too_large, refused; keep/normal
    edge_mqtt_outbox_coalesced_total
    edge_mqtt_discovery_published_total      discovery configs sent (connects and HA births)
    edge_mqtt_discovery_cleared_total        stale configs of this node removed
    edge_mqtt_commands_accepted_total{command}
    edge_mqtt_commands_rejected_total{code}  oversized, unknown, malformed, invalid, unauthorized,
                                             failed, busy
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge.worker import Lasting


class LinkCounters:
    """Counters that survive link restarts; one per runtime (kept in ctx.lasting)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.values: Counter[str] = Counter()
        self.dropped: Counter[tuple[str, str]] = Counter()
        self.link: Any = None  # the running MqttLink, for gauges
        self.outbox: Any = None  # edge.mqtt.outbox.Outbox, which outlives link restarts too
        self.registry: Any = None  # edge.commands.CommandRegistry

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.values[name] += n

    def drop(self, reason: str, klass: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason, klass] += n


class LinkCollector:
    def __init__(self, counters: LinkCounters):
        self.c = counters

    def collect(self):
        c, link = self.c, self.c.link
        yield GaugeMetricFamily("edge_mqtt_connected", "1 while connected to the broker",
                                value=1.0 if link is not None and link.connected else 0.0)
        with c._lock:
            values, dropped = dict(c.values), Counter(c.dropped)
        if c.outbox is not None:
            dropped.update(c.outbox.drops())
            values["outbox_coalesced"] = c.outbox.coalesced
        for name, help_text in (("connects", "successful connections to the broker"),
                                ("events_delivered", "events acknowledged by the broker"),
                                ("outbox_coalesced", "unsent events replaced by a newer one with the same key"),
                                ("discovery_published", "Home Assistant discovery configs sent"),
                                ("discovery_cleared", "stale discovery configs of this node removed")):
            yield CounterMetricFamily(f"edge_mqtt_{name}", help_text, value=values.get(name, 0))
        counts = link.outbox_counts() if link is not None else {}
        for name in ("pending", "inflight", "bytes"):
            yield GaugeMetricFamily(f"edge_mqtt_outbox_{name}", f"outbox {name}", value=counts.get(name, 0))
        drops = CounterMetricFamily("edge_mqtt_outbox_dropped", "events dropped from the outbox",
                                    labels=["reason", "class"])
        for (reason, klass), n in sorted(dropped.items()):
            drops.add_metric([reason, klass], n)
        yield drops
        accepted = CounterMetricFamily("edge_mqtt_commands_accepted", "commands run", labels=["command"])
        rejected = CounterMetricFamily("edge_mqtt_commands_rejected", "commands refused, by reason", labels=["code"])
        if c.registry is not None:
            for name, n in sorted(c.registry.accepted.items()):
                accepted.add_metric([name], n)
            for code, n in sorted(c.registry.rejected.items()):
                rejected.add_metric([code], n)
        yield accepted
        yield rejected


def counters_for(lasting: Lasting, registry: Any) -> LinkCounters:
    """The runtime's LinkCounters, created (and its collector registered) on first use."""
    def create() -> LinkCounters:
        counters = LinkCounters()
        if registry is not None:
            registry.register(LinkCollector(counters))
        return counters
    return lasting.get("mqtt.counters", create)
