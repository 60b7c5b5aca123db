"""Assembling a device from its parts: the config schema (the runtime's own sections plus
every worker's), the worker classes (installed entry points and `[runtime] plugins`), the
config file with its last known-good fallback, where state and config live, and the store
schemas. Shared by `edge run` (edge.runtime) and every CLI command (edge.cli_device), so
both see the same device.

Not responsible for: running anything (edge.runtime), validating values (edge.config).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from importlib import import_module
from pathlib import Path
from typing import Mapping

from edge import config as configmod
from edge.audit import AUDIT_SCHEMA, SECTION as AUDIT_SECTION
from edge.config import Config, ConfigError, Key, Section
from edge.health_http import SECTION as HEALTH_SECTION
from edge.safemode import SECTION as SAFE_MODE_SECTION
from edge.store import Schema
from edge.supervisor import SECTION as SUPERVISOR_SECTION
from edge.worker import Worker, discover_workers

log = logging.getLogger("edge.assembly")

LAST_GOOD = "last-good.toml"


INSTALLED_STATE_DIR = Path("/var/lib/edge")


def _default_node_id() -> str:
    return "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in socket.gethostname().lower()) or "edge"


def default_node_id(state_dir: Path, machine_id: Path = Path("/etc/machine-id")) -> str:
    """The host name for the installed device (one per machine); for any other state
    directory (simulators, a second device on the same machine) the host name and a short
    hash of the machine and that directory, so two devices on one broker never share a
    node id, MQTT topics or client id."""
    host = _default_node_id()
    if Path(state_dir) == INSTALLED_STATE_DIR:
        return host
    try:
        machine = machine_id.read_text().strip()
    except OSError:
        machine = host
    digest = hashlib.sha256(f"{machine}\0{Path(state_dir).resolve()}".encode()).hexdigest()[:4]
    return f"{host}-{digest}"


def _check_node(config, problems, warnings):
    node_id = config["node"].id
    if not node_id or any(not (ch.isalnum() or ch in "_-") for ch in node_id):
        problems.append(f"[node] id: {node_id!r} may contain only letters, digits, _ and - "
                        f"(it is part of MQTT topics and Home Assistant ids); for example: id = \"front-door\"")


NODE_SECTION = Section("node", (
    Key("id", str, _default_node_id(), "stable id used in MQTT topics and Home Assistant unique ids",
        example="front-door"),
    Key("name", str, "Edge node", "name shown in Home Assistant", example="Front door"),
    Key("area", str, "", "the Home Assistant area suggested for this device", example="Hallway"),
), "this device's identity", checks=(_check_node,))
LOGGING_SECTION = Section("logging", (
    Key("level", str, "info", "log level", choices=("debug", "info", "warning", "error")),
    Key("format", str, "auto", "json (for the journal), text (for a person), or auto: text on a terminal, "
        "json otherwise", choices=("auto", "json", "text")),
), "logs on stdout")
RUNTIME_SECTION = Section("runtime", (
    Key("plugins", list, [], "extra worker classes to load, as \"module:Class\"",
        example=["mycompany.edge_workers:GarageDoor"]),
), "the runtime itself")
CORE_SECTIONS = (NODE_SECTION, HEALTH_SECTION, SUPERVISOR_SECTION, SAFE_MODE_SECTION, LOGGING_SECTION,
                 RUNTIME_SECTION, AUDIT_SECTION)


def state_dir_for(sim: bool, environ: Mapping[str, str] = os.environ) -> Path:
    """`EDGE_STATE_DIR`, else a user directory in simulation, else /var/lib/edge."""
    if environ.get("EDGE_STATE_DIR"):
        return Path(environ["EDGE_STATE_DIR"])
    if sim:
        base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "edge"
    return INSTALLED_STATE_DIR


def config_path_for(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """`--config`, else `EDGE_CONFIG`, else /etc/edge/edge.toml when it exists, else
    None (built-in defaults for the profile)."""
    if explicit:
        return Path(explicit)
    if environ.get("EDGE_CONFIG"):
        return Path(environ["EDGE_CONFIG"])
    return configmod.DEFAULT_CONFIG_PATH if configmod.DEFAULT_CONFIG_PATH.exists() else None


def load_plugin(spec: str, origin: str = "") -> type[Worker]:
    """The worker class named by a `[runtime] plugins` entry ("module:Class"); a ConfigError
    that says what is wrong otherwise (never a traceback from `edge run`)."""
    where = f"[runtime] plugins{origin}"
    example = configmod._example(RUNTIME_SECTION, RUNTIME_SECTION.key("plugins"))
    module_name, colon, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not colon or not module_name.strip() or not attr.strip():
        raise ConfigError([f"{where}: {spec!r} is not \"module:Class\"; for example: {example}"])
    try:
        module = import_module(module_name.strip())
    except ImportError as exc:
        raise ConfigError([f"{where}: cannot import {module_name!r} ({exc}); for example: {example}"]) from None
    except Exception as exc:  # the plugin's own code raised while importing: report it, do not crash
        raise ConfigError([f"{where}: importing {module_name!r} failed ({type(exc).__name__}: {exc}); "
                           f"fix the module or remove the entry; for example: {example}"]) from None
    cls = getattr(module, attr.strip(), None)
    if cls is None:
        raise ConfigError([f"{where}: module {module_name!r} has no {attr!r}; for example: {example}"])
    if not (isinstance(cls, type) and issubclass(cls, Worker)):
        raise ConfigError([f"{where}: {spec!r} is not a worker class (a subclass of edge.worker.Worker); "
                           f"for example: {example}"])
    return cls


def worker_classes(plugins: list[str] = (), origin: str = "", source: str = "") -> list[type[Worker]]:
    """Discovered workers plus the plugins; every bad plugin entry is reported at once."""
    classes, problems = [e.cls for e in discover_workers()], []
    for spec in plugins:
        try:
            classes.append(load_plugin(spec, origin))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source)
    return classes


def all_sections(classes) -> list[Section]:
    sections = list(CORE_SECTIONS)
    for cls in classes:
        sections.extend(s for s in cls.sections if s.name not in {x.name for x in sections})
    return sections


def _plugins_from(path: Path | None, environ: Mapping[str, str]) -> tuple[list[str], str]:
    """Plugins must be known before the schema is complete, so read them first, leniently
    (a file that does not parse, or plugins that are not a list, is reported by the full
    validation). Returns the entries and where they came from, for messages."""
    if environ.get("EDGE_RUNTIME_PLUGINS"):
        return ([p.strip() for p in environ["EDGE_RUNTIME_PLUGINS"].split(",") if p.strip()],
                " (from EDGE_RUNTIME_PLUGINS)")
    if path is None:
        return [], ""
    try:
        runtime = configmod.parse_toml(configmod.read_config_text(path), str(path)).get("runtime", {})
        plugins = runtime.get("plugins", []) if isinstance(runtime, dict) else []
    except ConfigError:
        return [], ""
    return (list(plugins) if isinstance(plugins, list) else []), ""


def load_config(path: Path | None, sim: bool, environ: Mapping[str, str] = os.environ,
                classes: list[type[Worker]] | None = None,
                state_dir: Path | None = None) -> tuple[Config, list[type[Worker]]]:
    """Raises ConfigError for an invalid config, including a plugin that cannot be loaded.
    With `state_dir`, the node id defaults to the device's own (`default_node_id`)."""
    if classes is None:
        plugins, origin = _plugins_from(path, environ)
        classes = worker_classes(plugins, origin, source=str(path or "defaults"))
    defaults = {"node": {"id": default_node_id(state_dir)}} if state_dir is not None else None
    return configmod.load(all_sections(classes), path, environ, sim=sim, defaults=defaults), classes


def load_config_with_fallback(path: Path | None, sim: bool, state_dir: Path,
                              environ: Mapping[str, str] = os.environ,
                              classes: list[type[Worker]] | None = None
                              ) -> tuple[Config, list[type[Worker]], ConfigError | None]:
    """The config to run on: the given one when valid, else the last known-good with the
    error returned for loud reporting. Raises ConfigError when neither is usable. A valid
    config becomes last known-good only after a healthy boot (`save_last_good`, called by
    the runtime): a config that validates but makes a worker crash-loop is not "good"."""
    try:
        config, classes = load_config(path, sim, environ, classes, state_dir)
    except ConfigError as error:
        good = state_dir / LAST_GOOD
        if not good.exists():
            raise
        try:
            config, classes = load_config(good, sim, environ, classes, state_dir)
        except ConfigError:
            raise error from None
        return config, classes, error
    return config, classes, None


def save_last_good(config: Config, state_dir: Path) -> None:
    """Keep `config`'s file text as the last known-good (after a healthy boot on it)."""
    if not config.text:
        return
    try:
        tmp = state_dir / (LAST_GOOD + ".tmp")
        tmp.write_text(config.text)
        tmp.replace(state_dir / LAST_GOOD)
    except OSError as exc:
        log.warning("cannot save the last known-good config: %s", exc)


def store_schemas(classes) -> list[Schema]:
    """Every table the device's store holds: the audit log's and each worker's (enabled or
    not: a worker switched on later finds its tables, and the CLI opens the same store)."""
    schemas = [AUDIT_SCHEMA]
    for cls in classes:
        schemas.extend(s for s in cls.schemas if s not in schemas)
    return schemas
