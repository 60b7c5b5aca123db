"""Home Assistant discovery, checked key by key against HA's documentation.

HA drops a misspelled optional key silently (its discovery schemas use REMOVE_EXTRA), so a
typo would never show up in HA, only as a missing feature. Every key of every config is
checked against tests/mqtt/ha_documented_options.py, a table typed from HA's MQTT docs:
https://www.home-assistant.io/integrations/mqtt/ (discovery, device, origin, availability) and
each component's page, https://www.home-assistant.io/integrations/<component>.mqtt/ (the
`DOC_URLS` a failing check names; that file lists the commits read and the HA 2025.10 change
from `object_id` to `default_entity_id`).
"""

from __future__ import annotations

import json
import re

from edge.config import Key, Section
from edge.entities import Entity, connectivity, shown
from edge.mqtt.alerts import Alerts
from edge.mqtt.discovery import Discovery, NodeInfo, node_entities, owned
from edge.mqtt.link import MqttLink
from edge.mqtt.topics import Topics
from edge.assembly import load_config
from edge.testing.waiting import wait_for
from edge.worker import Worker, discover_workers
from mqtt.ha_documented_options import (AVAILABILITY_MODES, AVAILABILITY_OPTIONS, DEVICE_CLASSES, DEVICE_OPTIONS,
                                        DOC_URLS, DOCUMENTED_OPTIONS, ENTITY_CATEGORIES_ALLOWED, EXCLUSIVE_REQUIRED,
                                        ORIGIN_OPTIONS, ORIGIN_REQUIRED, REQUIRED_OPTIONS, SENSOR_STATE_CLASSES,
                                        SENSOR_UNITS)
from mqtt.helpers import NODE, running_runtime
from services.system.worker import SystemWorker

PREFIX = "homeassistant"


def check_config(topic: str, cfg: dict, node: str = NODE) -> None:
    """Everything HA's docs say about one single-component discovery config."""
    m = re.fullmatch(rf"{PREFIX}/([a-z_]+)/{re.escape(node)}/([a-zA-Z0-9_-]+)/config", topic)
    assert m, f"discovery topic {topic} is not <prefix>/<component>/<node_id>/<object_id>/config"
    component = m.group(1)
    doc = DOC_URLS[component]
    undocumented = set(cfg) - DOCUMENTED_OPTIONS[component]
    assert not undocumented, f"{topic}: {sorted(undocumented)} are not options of {doc}"
    assert "platform" not in cfg, f"{topic}: `platform` belongs only in device-based discovery ({DOC_URLS['mqtt']})"
    missing = REQUIRED_OPTIONS[component] - set(cfg)
    assert not missing, f"{topic}: required {sorted(missing)} missing ({doc})"
    if component in EXCLUSIVE_REQUIRED:
        assert len(EXCLUSIVE_REQUIRED[component] & set(cfg)) == 1, f"{topic}: exactly one of " \
            f"{sorted(EXCLUSIVE_REQUIRED[component])} ({doc})"
    assert cfg.get("unique_id"), f"{topic}: unique_id is needed for a device and for HA to keep the entity"
    assert re.fullmatch(rf"{component}\.[a-z0-9_]+", cfg["default_entity_id"]), cfg["default_entity_id"]

    device = cfg["device"]
    assert set(device) <= DEVICE_OPTIONS, f"{topic}: device keys {sorted(set(device) - DEVICE_OPTIONS)}"
    assert device.get("identifiers") and device.get("name"), f"{topic}: device needs identifiers and a name"
    origin = cfg["origin"]
    assert ORIGIN_REQUIRED <= set(origin) <= ORIGIN_OPTIONS, f"{topic}: origin {origin}"

    assert "availability_topic" not in cfg, "availability and availability_topic must not be used together"
    assert cfg["availability_mode"] in AVAILABILITY_MODES and cfg["availability_mode"] == "all"
    assert cfg["availability"] and all(set(a) <= AVAILABILITY_OPTIONS and a.get("topic") for a in cfg["availability"])
    assert cfg["availability"][0]["topic"] == f"edge/{node}/status", "the node's status comes first"

    if "device_class" in cfg and component in DEVICE_CLASSES:
        assert cfg["device_class"] in DEVICE_CLASSES[component], f"{topic}: device_class {cfg['device_class']}"
    if component == "sensor" and cfg.get("device_class") not in (None, "enum", "timestamp", "date"):
        assert cfg["device_class"] in SENSOR_UNITS, f"{topic}: add {cfg['device_class']}'s units to SENSOR_UNITS"
        assert cfg.get("unit_of_measurement") in SENSOR_UNITS[cfg["device_class"]], \
            f"{topic}: unit {cfg.get('unit_of_measurement')!r} is not one of {cfg['device_class']}'s"
    if "state_class" in cfg:
        assert component == "sensor" and cfg["state_class"] in SENSOR_STATE_CLASSES, f"{topic}: state_class"
    if "entity_category" in cfg:
        assert cfg["entity_category"] in ENTITY_CATEGORIES_ALLOWED[component], f"{topic}: entity_category"
    if "options" in cfg:  # sensor.mqtt: needs device_class enum, excludes state_class and unit
        assert cfg.get("device_class") == "enum" and "state_class" not in cfg and "unit_of_measurement" not in cfg
    if cfg.get("name"):
        assert not cfg["name"].lower().startswith(device["name"].lower()), \
            f"{topic}: entity name {cfg['name']!r} repeats the device name {device['name']!r}"
    for key, value in cfg.items():
        if key.endswith("_topic"):
            assert "+" not in value and "#" not in value, f"{topic}: {key} {value}"


class PrinterLink(Worker):
    """Stands in for a worker with a child device, an event entity and a config section."""

    name = "printer"
    sections = (Section("printer", (Key("enabled", bool, True, "run it"),)),)
    entities = (
        connectivity("printer", "Connection", device="printer"),
        Entity("sensor", "nozzle_temperature", "Nozzle temperature", state="printer.temperatures",
               value_template="{{ value_json.nozzle }}", device_class="temperature", state_class="measurement",
               unit="°C", device="printer"),
        Entity("event", "print_job", "Print job", event="printer.job", device="printer",
               options={"event_types": ["started", "finished"]}),
    )

    def run(self, ctx):
        while not ctx.sleep(0.1):
            pass


def all_declarations(classes) -> list:
    names = [c.name for c in classes]
    declared = node_entities(names)
    for cls in classes:
        declared += owned(cls.entities, cls.name)
    config, _ = load_config(None, sim=True, environ={}, classes=[MqttLink])
    return declared + owned(Alerts.from_config(config["alerts"]).entities(), "system")


def test_every_registered_workers_entities_make_documented_configs():
    """All installed workers (entry points: doorbell, system, mqtt, ...) plus the node's own
    entities: every declaration becomes a config that passes the documented-options check."""
    classes = [e.cls for e in discover_workers() if e.name != PrinterLink.name] + [PrinterLink]  # one "printer"
    declared = all_declarations(classes)
    configs = Discovery(NodeInfo(NODE, "Test node", "1.0"), Topics(NODE)).build(declared)
    assert len(configs) == len(declared), "a declaration was rejected (see the log)"
    for topic, cfg in configs.items():
        check_config(topic, cfg)
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(unique_ids) == len(set(unique_ids))
    # A child device hangs off the node.
    printer = configs[f"{PREFIX}/binary_sensor/{NODE}/printer_connected/config"]
    assert printer["device"]["via_device"] == f"edge_{NODE}"
    assert printer["device"]["name"] == "Test node 3D printer" and printer["name"] == "Connection"


def test_the_system_workers_readings_are_sensors_on_one_state_topic():
    configs = Discovery(NodeInfo(NODE, "Test node", "1.0"), Topics(NODE)).build(owned(SystemWorker.entities, "system"))
    by_id = {cfg["unique_id"].removeprefix(f"{NODE}_"): cfg for cfg in configs.values()}
    assert set(by_id) == {"cpu_temperature", "load_1m", "memory_used", "disk_used", "uptime", "runtime_memory",
                          "bytes_written", "throttled", "last_boot", "cpu_usage", "ip_address", "wifi_signal"}
    assert {cfg["state_topic"] for cfg in by_id.values()} == {f"edge/{NODE}/state/system"}
    assert by_id["cpu_temperature"]["value_template"] == "{{ value_json.get('cpu_temp_c') }}"
    assert by_id["throttled"]["device_class"] == "problem"


def test_entities_that_need_a_config_switch_are_announced_only_when_it_is_on():
    button = Entity("button", "open_door", "Open door", command="open_door",
                    requires=("doorbell.allow_remote_open", "mqtt.allow_dangerous_commands"))
    classes = [e.cls for e in discover_workers()]

    def shown_with(**env):
        config, _ = load_config(None, sim=True, environ=env, classes=classes)
        return shown(button, config)
    assert not shown_with()
    assert not shown_with(EDGE_DOORBELL_ALLOW_REMOTE_OPEN="true")
    assert shown_with(EDGE_DOORBELL_ALLOW_REMOTE_OPEN="true", EDGE_MQTT_ALLOW_DANGEROUS_COMMANDS="true")


def test_every_declared_requirement_names_a_boolean_config_key():
    """A typo in `requires` would hide an entity for good: each must be a real bool key."""
    classes = [e.cls for e in discover_workers()]
    keys = {f"{s.name}.{k.name}": k for cls in classes for s in cls.sections for k in s.keys}
    for cls in classes:
        for entity in cls.entities:
            for key in entity.requires:
                assert key in keys and keys[key].type is bool, f"{cls.name}/{entity.object_id}: requires {key!r}"


def test_bad_declarations_are_skipped_not_fatal(caplog):
    declared = owned([Entity("sensor", "ok_one", "Fine", state="x"), Entity("sensor", "ok_one", "Again", state="x"),
                      Entity("sensor", "bad id!", "Bad", state="x")], "w")
    configs = Discovery(NodeInfo(NODE, "Test node", "1.0"), Topics(NODE)).build(declared)
    assert list(configs) == [f"{PREFIX}/sensor/{NODE}/ok_one/config"]
    assert "already used" in caplog.text and "must match" in caplog.text


def test_discovery_on_the_broker_is_retained_documented_and_stale_configs_are_cleared(tmp_path, mosquitto,
                                                                                       recorders):
    classes = (SystemWorker, PrinterLink, MqttLink)
    live = recorders(mosquitto.port, f"{PREFIX}/#", f"edge/{NODE}/#")
    with running_runtime(tmp_path / "state", mosquitto.port, classes=classes) as rt:
        link = rt.supervisor.runner("mqtt").worker
        wait_for(lambda: link.configs and all(live.of(t) for t in link.configs), 10, message="every config")
        first_run = dict(link.configs)
        live.wait_latest(f"edge/{NODE}/printer/status", b"online")
    printer_topics = [t for t, c in first_run.items() if "printer" in json.dumps(c)]
    assert len(printer_topics) == 6  # its 3 entities, and the node's problem, restarts, restart button for it

    # Second run: the printer worker is disabled, so its configs are stale and must go.
    with running_runtime(tmp_path / "state", mosquitto.port, classes=classes,
                         env={"EDGE_PRINTER_ENABLED": "false"}) as rt:
        link = rt.supervisor.runner("mqtt").worker
        wait_for(lambda: all(live.latest(t) == b"" for t in printer_topics), 10, message="stale configs cleared")
        live.wait_latest(f"edge/{NODE}/printer/status", b"")
        wait_for(lambda: all(live.of(t) for t in link.configs), 10, message="every config of the second run")
        fresh = recorders(mosquitto.port, f"{PREFIX}/#")  # sees only what the broker retains
        wait_for(lambda: len(fresh.of()) >= len(link.configs), 10, message="retained configs")
        retained = {t: (payload, retain) for _, t, payload, retain in fresh.of()}
        assert set(retained) == set(link.configs), "exactly the configs this device produces are retained"
        configs = {}
        for topic, (payload, retain) in retained.items():
            assert retain, f"{topic} was not retained"
            configs[topic] = json.loads(payload)
            check_config(topic, configs[topic])
        unique_ids = [c["unique_id"] for c in configs.values()]
        assert len(unique_ids) == len(set(unique_ids))
        # A worker's own entities are also gated on its status; the node's only on the node's.
        cpu = configs[f"{PREFIX}/binary_sensor/{NODE}/alert_cpu_temperature/config"]
        assert [a["topic"] for a in cpu["availability"]] == [f"edge/{NODE}/status", f"edge/{NODE}/system/status"]
        problem = configs[f"{PREFIX}/binary_sensor/{NODE}/system_problem/config"]
        assert [a["topic"] for a in problem["availability"]] == [f"edge/{NODE}/status"]
        # Discovery is not re-sent with states: a state change publishes the state only.
        before = len(live.of(prefix=f"{PREFIX}/"))
        rt.states.set("system", {"cpu_temp_c": 51.0})
        live.wait_latest(f"edge/{NODE}/state/system", b'{"cpu_temp_c":51.0}')
        assert len(live.of(prefix=f"{PREFIX}/")) == before
