"""The [netbox] config section: where NetBox is, how to reach it, what this node is called
there, and how much the sync may create or prune. Off by default: a node writes into a
source of truth only when its owner asks for it.

Not responsible for: using the values (worker.py, client.py, sync.py).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from edge.config import Key, Section, is_loopback


def check_netbox(config, problems: list[str], warnings: list[str]) -> None:
    cfg = config["netbox"]
    if not cfg.enabled:
        return
    parts = urlsplit(cfg.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"[netbox] url: {cfg.url!r} is not a NetBox address; for example: "
                        f"url = \"https://netbox.example.org\"")
        return
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        warnings.append(f"[netbox] url: {cfg.url} is plain http to another host, so the API token travels "
                        f"unencrypted; use https://")
    if not cfg.secret("token"):
        problems.append("[netbox] token_file: no API token; put a NetBox API token (with write permission on "
                        "DCIM, IPAM and extras) in a file readable by the edge user, e.g. "
                        "token_file = \"/etc/edge/netbox-token\", or set EDGE_NETBOX_TOKEN")
    if not cfg.site:
        problems.append("[netbox] site: which NetBox site this node is in (its slug); for example: site = \"home\"")


SECTION = Section("netbox", (
    Key("enabled", bool, False, "keep this node and its peripherals registered in NetBox"),
    Key("url", str, "", "NetBox's address", example="https://netbox.example.org"),
    Key("token_file", str, "", "file holding the NetBox API token (never logged)", secret_file=True,
        example="/etc/edge/netbox-token"),
    Key("site", str, "", "slug of the NetBox site this node is in", example="home"),
    Key("role", str, "edge-node", "slug of the device role this node gets"),
    Key("tenant", str, "", "slug of the tenant this node belongs to (empty: none)"),
    Key("name", str, "", "the device's name in NetBox (empty: the hostname)"),
    Key("interval_s", float, 3600.0, "seconds between periodic syncs", min=60),
    Key("facts_check_s", float, 30.0, "how often local facts (addresses, peripherals) are looked at; a change "
        "syncs at once", min=0.1),
    Key("create_prerequisites", bool, False, "create a missing site, role, manufacturer, device type, platform, "
        "tag and custom fields (else they are reported with what to create)"),
    Key("prune_after_days", float, 0.0, "delete what the sync created and has not seen for this many days "
        "(0: never delete, only mark stale)", min=0),
    Key("verify_tls", bool, True, "check NetBox's TLS certificate"),
    Key("ca_file", str, "", "CA bundle for NetBox's certificate (empty: the system's)"),
    Key("connect_timeout_s", float, 5.0, "longest wait for a connection to NetBox", min=0.05, max=60),
    Key("read_timeout_s", float, 30.0, "longest wait for one NetBox answer (bulk writes are slow)", min=0.05,
        max=300),
    Key("retries", int, 3, "retries of one request after a connection error, timeout, 429 or 5xx", min=0, max=10),
    Key("chunk_size", int, 50, "objects per bulk write (NetBox takes ~0.15 s per interface)", min=1, max=500),
), "NetBox sync (off by default)", checks=(check_netbox,))
