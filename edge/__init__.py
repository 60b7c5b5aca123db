"""Edge appliance runtime: supervisor, watchdog, store, bus, health and config for a
Raspberry Pi doorbell node. Workers live in `services/`, hardware in `hardware/`."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-appliance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
