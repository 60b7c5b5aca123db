"""Prometheus metrics. Runtime state (health, breakers, restarts, bus drops, store) is read
at scrape time by one collector, so nothing has to remember to update a gauge; workers add
their own counters to the same registry (`ctx.metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge.health import DEGRADED, FAILED, HUNG, OK, STARTING, STOPPED

STATES = (OK, DEGRADED, FAILED, HUNG, STARTING, STOPPED)
BREAKER_STATES = ("closed", "open", "half_open")


class RuntimeCollector:
    def __init__(self, runtime):
        self.rt = runtime

    def collect(self):
        rt = self.rt
        comp = GaugeMetricFamily("edge_component_state", "1 for the component's current state",
                                 labels=["component", "state"])
        for c in rt.health.components():
            for s in STATES:
                comp.add_metric([c.name, s], 1.0 if c.state == s else 0.0)
        yield comp
        device = GaugeMetricFamily("edge_device_state", "1 for the device's overall state", labels=["state"])
        overall = rt.health.overall()
        for s in (OK, DEGRADED, FAILED):
            device.add_metric([s], 1.0 if overall == s else 0.0)
        yield device
        br = GaugeMetricFamily("edge_breaker_state", "1 for the breaker's current state", labels=["breaker", "state"])
        for name, b in rt.breakers.all().items():
            state = b.state
            for s in BREAKER_STATES:
                br.add_metric([name, s], 1.0 if state == s else 0.0)
        yield br
        if rt.supervisor is not None:
            restarts = CounterMetricFamily("edge_worker_restarts", "worker restarts", labels=["worker"])
            for r in rt.supervisor.runners:
                restarts.add_metric([r.name], r.restarts)
            yield restarts
        dropped = CounterMetricFamily("edge_bus_dropped_events", "events dropped from full queues", labels=["kind"])
        for kind, n in rt.bus.dropped.items():
            dropped.add_metric([kind], n)
        yield dropped
        if rt.store is not None:
            counters = rt.store.counters()
            yield CounterMetricFamily("edge_store_commits", "store transactions committed", value=counters["commits"])
            yield CounterMetricFamily("edge_store_changed_rows", "rows inserted, updated or deleted (SQLite "
                                      "total_changes)", value=counters["total_changes"])
            yield CounterMetricFamily("edge_store_failed_writes", "store writes refused by the disk",
                                      value=counters["failed_writes"])
            yield GaugeMetricFamily("edge_store_pending_events", "events (rings) kept in memory while the "
                                    "store refuses writes", value=counters["pending_events"])
            yield CounterMetricFamily("edge_store_lost_events", "events dropped from the full in-memory "
                                      "buffer while the store refused writes", value=counters["pending_dropped"])
        yield GaugeMetricFamily("edge_safe_mode", "1 while running in safe mode", value=1.0 if rt.safe_mode else 0.0)


def make_registry(runtime) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(runtime))
    return registry
