# About 640 lines, one file on purpose: it is one fake of one server. The object store,
# NetBox's validation rules (the behaviours listed in ../shared/data/netbox/README.md) and the
# HTTP handler that serves them read as one list to check against that README; the handler
# is a thin layer over the store's methods, and nothing outside the tests imports any part.
"""A fake NetBox 4.4 served over real HTTP on 127.0.0.1, for tests and benchmarks of the
NetBox sync (used through pynetbox, never a mock of pynetbox's calls).

It answers in the shapes of NetBox's own OpenAPI schema (`openapi.json` from a stock NetBox
4.4.10, found under EDGE_TEST_DATA): the filters and request fields of each endpoint, the
required fields, the response fields. Like NetBox, it silently ignores unknown query
parameters and request fields, but it *records* them (`unknown_filters`,
`unknown_fields`) so a test can prove the sync uses none.

Behaviours of a real NetBox it reproduces (../shared/data/netbox/README.md):
- serial numbers are not unique; device names are unique per site (400);
- top-level inventory items may repeat a name on one device, nested ones may not;
  `asset_tag` is globally unique;
- `custom_fields` in a PATCH are merged, `tags` replace the whole list; an unknown custom
  field or tag is a 400 naming it;
- IP addresses are unique in the global table (400 "Duplicate IP address found in global
  table"); the `address` filter matches without a mask;
- MAC addresses are `dcim/mac-addresses` objects stored upper-case; an interface's
  `mac_address` mirrors its `primary_mac_address` (read-only);
- 400 bodies name the field; 403 `{"detail": "Invalid token"}`; 404 on a missing id;
- `API-Version` and `X-Request-ID` on every response; `changelog_message` is kept with
  each change (`changelog`); bulk writes are all-or-nothing (and can be made slow).

Faults a test can switch on: `down()` (the port refuses connections), `delay_s` (a slow
server), `fail_next(n, status, retry_after=None)` (500s, 429 with Retry-After),
`token` (a wrong token gets 403), `api_version`. Counters: `requests`, `writes`, bytes.

Written by hand: no NetBox fake exists on PyPI, and running NetBox itself needs
PostgreSQL and Redis, which the tests cannot have.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# endpoint → (request schema, response schema) in the OpenAPI file; what the sync touches.
ENDPOINTS = {
    "dcim/sites": ("WritableSiteRequest", "Site"),
    "dcim/device-roles": ("DeviceRoleRequest", "DeviceRole"),
    "dcim/manufacturers": ("ManufacturerRequest", "Manufacturer"),
    "dcim/device-types": ("WritableDeviceTypeRequest", "DeviceType"),
    "dcim/platforms": ("PlatformRequest", "Platform"),
    "dcim/devices": ("WritableDeviceWithConfigContextRequest", "DeviceWithConfigContext"),
    "dcim/interfaces": ("WritableInterfaceRequest", "Interface"),
    "dcim/mac-addresses": ("MACAddressRequest", "MACAddress"),
    "dcim/inventory-items": ("WritableInventoryItemRequest", "InventoryItem"),
    "ipam/ip-addresses": ("WritableIPAddressRequest", "IPAddress"),
    "extras/tags": ("TagRequest", "Tag"),
    "extras/custom-fields": ("WritableCustomFieldRequest", "CustomField"),
    "tenancy/tenants": ("TenantRequest", "Tenant"),
}
# Request fields that reference another object (stored as an id, answered nested).
FOREIGN = {
    "device_type": "dcim/device-types", "role": "dcim/device-roles", "site": "dcim/sites",
    "tenant": "tenancy/tenants", "platform": "dcim/platforms", "manufacturer": "dcim/manufacturers",
    "device": "dcim/devices", "primary_ip4": "ipam/ip-addresses", "primary_ip6": "ipam/ip-addresses",
    "primary_mac_address": "dcim/mac-addresses",
}
ASSIGNABLE = {"dcim.interface": "dcim/interfaces"}
# The object type names custom fields and tags are declared for.
OBJECT_TYPES = {"dcim/devices": "dcim.device", "dcim/interfaces": "dcim.interface",
                "dcim/inventory-items": "dcim.inventoryitem", "dcim/mac-addresses": "dcim.macaddress",
                "ipam/ip-addresses": "ipam.ipaddress", "dcim/sites": "dcim.site"}
# NetBox 4.4 takes a change message in the body of any write; its schema does not list it.
CHANGELOG_FIELD = "changelog_message"
API_VERSION = "4.4"
PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000


def openapi_path(data_dir: Path) -> Path:
    return data_dir / "netbox" / "openapi.json"


class Schema:
    """What the fake (and the sync's own check) needs from the OpenAPI file."""

    def __init__(self, path: Path):
        doc = json.loads(path.read_text())
        self.version = doc["info"]["version"]
        schemas = doc["components"]["schemas"]
        self.filters: dict[str, set[str]] = {}
        self.request_fields: dict[str, set[str]] = {}
        self.required: dict[str, set[str]] = {}
        self.response_fields: dict[str, list[str]] = {}
        for endpoint, (request, response) in ENDPOINTS.items():
            op = doc["paths"][f"/api/{endpoint}/"]["get"]
            self.filters[endpoint] = {p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
            self.request_fields[endpoint] = set(schemas[request]["properties"])
            self.required[endpoint] = set(schemas[request].get("required", ()))
            self.response_fields[endpoint] = list(schemas[response]["properties"])


class BadRequest(Exception):
    def __init__(self, body: dict):
        super().__init__(json.dumps(body))
        self.body = body


@dataclass
class Counters:
    requests: int = 0
    writes: int = 0          # POST/PATCH/PUT/DELETE requests that were answered 2xx
    objects_written: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


class FakeNetbox:
    def __init__(self, schema: Schema, token: str = "0123456789abcdef0123456789abcdef01234567",
                 host: str = "127.0.0.1", port: int = 0):
        self.schema = schema
        self.token = token
        self.api_version = API_VERSION
        self.delay_s = 0.0
        self.bulk_delay_per_object_s = 0.0
        self.counters = Counters()
        self.unknown_filters: set[tuple[str, str]] = set()
        self.unknown_fields: set[tuple[str, str]] = set()
        self.used_filters: set[tuple[str, str]] = set()
        self.written_fields: set[tuple[str, str]] = set()
        self.changelog: list[dict] = []
        self.objects: dict[str, dict[int, dict]] = {e: {} for e in ENDPOINTS}
        self._next_id = 1
        self._failures: list[tuple[int, str | None, str | None]] = []
        # (monotonic time, method, path, status, objects in the body) of every request answered
        self.log: list[tuple[float, str, str, int, int]] = []
        self._lock = threading.RLock()
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.release = threading.Event()  # set to end a pending delay early (shutdown)
        self._connections: set[socket.socket] = set()
        # Called (once, then cleared) before the next write is applied: a person's edit
        # landing between the sync's read and its write.
        self.before_write = None

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self._host}:{self._port}"

    def start(self) -> "FakeNetbox":
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._httpd = _Server((self._host, self._port), Handler)
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True  # server_close() joins the connection threads
        self._port = self._httpd.server_address[1]
        self.release.clear()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-netbox", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            with self._lock:
                open_connections = list(self._connections)
            for sock in open_connections:  # kept alive by the client: end them, so their threads end
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def down(self) -> None:
        """NetBox is gone: nothing listens on its port (connections are refused)."""
        self.stop()

    def up(self) -> None:
        """NetBox is back on the same port."""
        if self._httpd is None:
            self.start()

    def fail_next(self, count: int, status: int, retry_after: str | None = None, method: str | None = None) -> None:
        """Answer the next `count` requests (of `method` only, when given) with `status`."""
        with self._lock:
            self._failures.extend([(status, retry_after, method)] * count)

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.counters = Counters()

    # -- data -----------------------------------------------------------------------------------
    def add(self, endpoint: str, **values) -> dict:
        """Put an object straight into the fake (what a person did in NetBox's UI)."""
        with self._lock:
            return self._create(endpoint, values, message=None)

    def all(self, endpoint: str) -> list[dict]:
        with self._lock:
            return [self.render(endpoint, o) for o in self.objects[endpoint].values()]

    def get(self, endpoint: str, id_: int) -> dict:
        with self._lock:
            return self.render(endpoint, self.objects[endpoint][id_])

    def edit(self, endpoint: str, id_: int, **values) -> None:
        """A person's edit in the UI (custom_fields merged, tags replaced, like the API)."""
        with self._lock:
            self._update(endpoint, self.objects[endpoint][id_], values)

    def _nid(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- the model -------------------------------------------------------------------------------
    def _custom_field_names(self, endpoint: str) -> list[str]:
        object_type = OBJECT_TYPES.get(endpoint)
        return [cf["name"] for cf in self.objects["extras/custom-fields"].values()
                if object_type in (cf.get("object_types") or ())]

    def _check_fields(self, endpoint: str, values: dict, creating: bool) -> dict:
        known = self.schema.request_fields[endpoint]
        clean = {}
        for key, value in values.items():
            if key == CHANGELOG_FIELD:
                continue
            if key not in known:
                self.unknown_fields.add((endpoint, key))
                continue  # DRF ignores fields it does not know
            self.written_fields.add((endpoint, key))
            clean[key] = value
        if creating:
            missing = sorted(self.schema.required[endpoint] - set(clean))
            if missing:
                raise BadRequest({k: ["This field is required."] for k in missing})
        for key, target in FOREIGN.items():
            if key in clean and clean[key] is not None:
                ref = clean[key]
                ref_id = ref.get("id") if isinstance(ref, dict) else ref
                if ref_id not in self.objects[target]:
                    raise BadRequest({key: [f"Related object not found using the provided numeric ID: {ref}"]})
                clean[key] = ref_id
        if "tags" in clean:
            clean["tags"] = [self._tag_id(t) for t in clean["tags"] or ()]
        if "custom_fields" in clean:
            allowed = set(self._custom_field_names(endpoint))
            for name in clean["custom_fields"] or {}:
                if name not in allowed:
                    raise BadRequest({"custom_fields": [f"Unknown field name '{name}' in custom field data."]})
        if "mac_address" in clean and clean["mac_address"]:
            clean["mac_address"] = str(clean["mac_address"]).upper()
        return clean

    def _tag_id(self, ref: Any) -> int:
        tags = self.objects["extras/tags"]
        if isinstance(ref, int) and ref in tags:
            return ref
        if isinstance(ref, dict):
            for tag in tags.values():
                if (ref.get("slug") and tag["slug"] == ref["slug"]) or \
                        (ref.get("name") and not ref.get("slug") and tag["name"] == ref["name"]):
                    return tag["id"]
        raise BadRequest({"tags": [f"Related object not found using the provided attributes: {ref}"]})

    def _validate(self, endpoint: str, obj: dict) -> None:
        """NetBox's model rules, checked on the object as it would be stored."""
        others = [o for o in self.objects[endpoint].values() if o["id"] != obj["id"]]
        if endpoint == "dcim/devices" and obj.get("name"):
            if any(o.get("name") == obj["name"] and o.get("site") == obj.get("site") for o in others):
                raise BadRequest({"name": ["Device name must be unique per site."]})
        if endpoint == "dcim/inventory-items":
            if obj.get("asset_tag") and any(o.get("asset_tag") == obj["asset_tag"] for o in others):
                raise BadRequest({"asset_tag": ["inventory item with this asset tag already exists."]})
            if obj.get("parent") and any(o.get("device") == obj.get("device") and o.get("parent") == obj["parent"]
                                         and o.get("name") == obj.get("name") for o in others):
                raise BadRequest({"__all__": ["Inventory item name must be unique per device and parent."]})
        if endpoint == "ipam/ip-addresses":
            host = _host(obj["address"])
            if not obj.get("vrf") and any(_host(o["address"]) == host and not o.get("vrf") for o in others):
                raise BadRequest({"address": [f"Duplicate IP address found in global table: {obj['address']}"]})
        if endpoint == "dcim/interfaces" and any(o.get("device") == obj.get("device") and o.get("name") == obj.get("name")
                                                 for o in others):
            raise BadRequest({"__all__": ["Interface with this Device and Name already exists."]})
        if endpoint in ("dcim/sites", "dcim/device-roles", "dcim/manufacturers", "dcim/platforms", "extras/tags",
                        "tenancy/tenants", "dcim/device-types"):
            if any(o.get("slug") == obj.get("slug") for o in others):
                raise BadRequest({"slug": [f"{endpoint.split('/')[1].rstrip('s')} with this slug already exists."]})
        if endpoint == "extras/custom-fields" and any(o["name"] == obj["name"] for o in others):
            raise BadRequest({"name": ["custom field with this name already exists."]})

    def _create(self, endpoint: str, values: dict, message: str | None) -> dict:
        clean = self._check_fields(endpoint, values, creating=True)
        obj = {"id": self._nid(), **clean}
        if "custom_fields" in self.schema.request_fields[endpoint]:
            obj["custom_fields"] = dict(clean.get("custom_fields") or {})
        obj.setdefault("tags", []) if "tags" in self.schema.request_fields[endpoint] else None
        now = _now()
        obj["created"] = obj["last_updated"] = now
        self._validate(endpoint, obj)
        self.objects[endpoint][obj["id"]] = obj
        self.changelog.append({"action": "create", "endpoint": endpoint, "id": obj["id"], "message": message})
        return obj

    def _update(self, endpoint: str, obj: dict, values: dict, message: str | None = None) -> dict:
        clean = self._check_fields(endpoint, values, creating=False)
        new = dict(obj)
        for key, value in clean.items():
            if key == "custom_fields":
                new["custom_fields"] = {**(obj.get("custom_fields") or {}), **(value or {})}  # merged
            else:
                new[key] = value  # tags: the whole list is replaced
        new["last_updated"] = _now()
        self._validate(endpoint, new)
        self.objects[endpoint][obj["id"]] = new
        self.changelog.append({"action": "update", "endpoint": endpoint, "id": obj["id"], "message": message,
                               "fields": sorted(clean)})
        return new

    # -- rendering -------------------------------------------------------------------------------
    def _brief(self, endpoint: str, id_: int | None) -> dict | None:
        if id_ is None or id_ not in self.objects[endpoint]:
            return None
        o = self.objects[endpoint][id_]
        brief = {"id": id_, "url": f"{self.url}/api/{endpoint}/{id_}/", "display": _display(endpoint, o)}
        for key in ("name", "slug", "model", "address", "mac_address", "family"):
            if key in o:
                brief[key] = o[key]
        return brief

    def render(self, endpoint: str, obj: dict) -> dict:
        out: dict[str, Any] = {}
        for key in self.schema.response_fields[endpoint]:
            if key == "url":
                out[key] = f"{self.url}/api/{endpoint}/{obj['id']}/"
            elif key == "display_url":
                out[key] = f"{self.url}/{endpoint}/{obj['id']}/"
            elif key == "display":
                out[key] = _display(endpoint, obj)
            elif key in FOREIGN:
                out[key] = self._brief(FOREIGN[key], obj.get(key))
            elif key == "tags":
                out[key] = [self._brief("extras/tags", t) | {"color": self.objects["extras/tags"][t].get("color")}
                            for t in obj.get("tags") or ()]
            elif key == "custom_fields":  # every field defined for the type, unset ones as null
                out[key] = {**{n: None for n in self._custom_field_names(endpoint)}, **(obj.get(key) or {})}
            elif key == "mac_address" and endpoint == "dcim/interfaces":
                mac = self.objects["dcim/mac-addresses"].get(obj.get("primary_mac_address"))
                out[key] = mac["mac_address"] if mac else None  # read-only mirror
            elif key == "assigned_object":
                target = ASSIGNABLE.get(obj.get("assigned_object_type") or "")
                out[key] = self._brief(target, obj.get("assigned_object_id")) if target else None
                if out[key] is not None and target == "dcim/interfaces":
                    iface = self.objects[target][obj["assigned_object_id"]]
                    out[key]["device"] = self._brief("dcim/devices", iface.get("device"))
            elif key == "family" and endpoint == "ipam/ip-addresses":
                version = ipaddress.ip_interface(obj["address"]).version
                out[key] = {"value": version, "label": f"IPv{version}"}
            elif key == "status" and isinstance(obj.get("status"), str):
                out[key] = {"value": obj["status"], "label": obj["status"].title()}
            else:
                out[key] = obj.get(key)
        return out

    # -- queries ---------------------------------------------------------------------------------
    def _matches(self, endpoint: str, obj: dict, key: str, value: str) -> bool:
        if key in ("id",):
            return str(obj["id"]) == value
        if key == "device_id" and endpoint in ("dcim/mac-addresses", "ipam/ip-addresses"):
            if obj.get("assigned_object_type") != "dcim.interface":
                return False
            iface = self.objects["dcim/interfaces"].get(obj.get("assigned_object_id"))
            return iface is not None and str(iface.get("device")) == value
        if key in ("device_id", "site_id", "role_id", "manufacturer_id", "interface_id", "assigned_object_id",
                   "tag_id", "parent_id"):
            field_name = {"interface_id": "assigned_object_id", "tag_id": "tags"}.get(key, key[:-3])
            if field_name == "assigned_object_id":
                return str(obj.get("assigned_object_id")) == value and obj.get("assigned_object_type") == "dcim.interface"
            if field_name == "tags":
                return int(value) in (obj.get("tags") or ())
            if key == "parent_id" and value == "null":
                return obj.get("parent") is None
            return str(obj.get(field_name)) == value
        if key in ("site", "role", "manufacturer", "platform", "tenant", "device_type"):
            ref = self.objects[FOREIGN[key]].get(obj.get(key))
            return ref is not None and ref.get("slug") == value
        if key == "device":
            ref = self.objects["dcim/devices"].get(obj.get("device"))
            return ref is not None and ref.get("name") == value
        if key == "tag":
            return any(self.objects["extras/tags"][t]["slug"] == value for t in obj.get("tags") or ())
        if key == "address":
            return _host(obj["address"]) == _host(value)
        if key == "mac_address":
            return str(obj.get("mac_address", "")).upper() == value.upper()
        if key == "object_type":
            return value in (obj.get("object_types") or ())
        return str(obj.get(key)) == value

    def query(self, endpoint: str, params: list[tuple[str, str]]) -> tuple[list[dict], int, int]:
        known = self.schema.filters[endpoint]
        limit, offset = PAGE_SIZE, 0
        found = list(self.objects[endpoint].values())
        by_key: dict[str, list[str]] = {}
        for key, value in params:
            if key == "limit":
                limit = int(value) or MAX_PAGE_SIZE
                continue
            if key == "offset":
                offset = int(value)
                continue
            if key == "brief":
                continue
            if key not in known:
                self.unknown_filters.add((endpoint, key))
                continue  # NetBox ignores it: every object matches
            self.used_filters.add((endpoint, key))
            by_key.setdefault(key, []).append(value)
        for key, values in by_key.items():  # repeated filters are OR'ed, like django-filter
            found = [o for o in found if any(self._matches(endpoint, o, key, v) for v in values)]
        return found[offset:offset + min(limit, MAX_PAGE_SIZE)], len(found), min(limit, MAX_PAGE_SIZE)


def _host(address: str) -> str:
    return str(ipaddress.ip_interface(address).ip) if "/" in address else str(ipaddress.ip_address(address))


def _display(endpoint: str, obj: dict) -> str:
    for key in ("name", "model", "address", "mac_address", "slug"):
        if obj.get(key):
            return str(obj[key])
    return f"{endpoint} {obj['id']}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        """A client that gave up (its read timeout) leaves a broken pipe: not an error here."""
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeNetbox
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.server_fake._lock:
            self.server_fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server_fake._lock:
            self.server_fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _reply(self, code: int, body: Any, extra: dict[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        with self.server_fake._lock:
            self.server_fake.log.append((time.monotonic(), self.command, self.path.split("?")[0], code,
                                         getattr(self, "_objects", 0)))
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("API-Version", self.server_fake.api_version)
        self.send_header("X-Request-ID", str(uuid.uuid4()))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        with self.server_fake._lock:
            self.server_fake.counters.bytes_out += len(raw)

    def _handle(self, method: str) -> None:
        fake = self.server_fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        self._objects = len(parsed) if isinstance(parsed, list) else (1 if parsed is not None else 0)
        with fake._lock:
            fake.counters.requests += 1
            fake.counters.bytes_in += len(raw) + len(self.requestline) + len(str(self.headers))
            fake.counters.by_method[method] = fake.counters.by_method.get(method, 0) + 1
            failure = next((f for f in fake._failures if f[2] in (None, method)), None)
            if failure is not None:
                fake._failures.remove(failure)
        if fake.delay_s:
            fake.release.wait(fake.delay_s)
        if failure is not None:
            status, retry_after, _ = failure
            self._reply(status, {"detail": "Request was throttled." if status == 429 else "Server Error"},
                        {"Retry-After": retry_after} if retry_after else None)
            return
        auth = self.headers.get("Authorization", "")
        if auth not in (f"Token {fake.token}", f"Bearer {fake.token}"):
            self._reply(403, {"detail": "Invalid token"})
            return
        parts = urlsplit(self.path)
        path = parts.path
        if not path.startswith("/api/"):
            self._reply(404, {"detail": "Not found."})
            return
        rest = path[len("/api/"):].strip("/")
        if rest in ("", "status"):
            self._reply(200, {"netbox-version": fake.schema.version.split()[0], "plugins": {}} if rest else
                        {e.split("/")[0]: f"{fake.url}/api/{e.split('/')[0]}/" for e in ENDPOINTS})
            return
        segments = rest.split("/")
        endpoint = "/".join(segments[:2])
        if endpoint not in ENDPOINTS:
            self._reply(404, {"detail": "Not found."})
            return
        key = int(segments[2]) if len(segments) > 2 and segments[2].isdigit() else None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._reply(400, {"detail": "JSON parse error"})
            return
        try:
            with fake._lock:
                code, answer = self._dispatch(method, endpoint, key, parse_qsl(parts.query, keep_blank_values=True),
                                              body)
        except BadRequest as exc:
            self._reply(400, exc.body)
            return
        if method != "GET" and 200 <= code < 300:
            with fake._lock:
                fake.counters.writes += 1
                fake.counters.objects_written += len(body) if isinstance(body, list) else 1
        self._reply(code, answer)

    def _dispatch(self, method: str, endpoint: str, key: int | None, params, body) -> tuple[int, Any]:
        fake = self.server_fake
        store = fake.objects[endpoint]
        if method == "GET":
            if key is not None:
                if key not in store:
                    return 404, {"detail": "No NetBoxModel matches the given query."}
                return 200, fake.render(endpoint, store[key])
            page, count, limit = fake.query(endpoint, params)
            offset = int(dict(params).get("offset", 0))
            base = f"{fake.url}/api/{endpoint}/"
            nxt = f"{base}?limit={limit}&offset={offset + limit}" if offset + limit < count else None
            return 200, {"count": count, "next": nxt, "previous": None,
                         "results": [fake.render(endpoint, o) for o in page]}
        if fake.before_write is not None:
            hook, fake.before_write = fake.before_write, None
            hook()
        items = body if isinstance(body, list) else [body]
        if not all(isinstance(i, dict) for i in items):
            raise BadRequest({"non_field_errors": ["Invalid data. Expected a dictionary."]})
        if isinstance(body, list) and fake.bulk_delay_per_object_s:
            fake.release.wait(fake.bulk_delay_per_object_s * len(items))
        # All-or-nothing: work on a copy, keep it only when every item passed.
        saved = {e: dict(v) for e, v in fake.objects.items()}
        saved_log, saved_id = len(fake.changelog), fake._next_id
        try:
            results = []
            for index, item in enumerate(items):
                try:
                    results.extend(self._apply(method, endpoint, key, item))
                except BadRequest as exc:
                    if not isinstance(body, list):
                        raise
                    # A bulk write answers one error dict per object, in order.
                    raise BadRequest([{}] * index + [exc.body] + [{}] * (len(items) - index - 1)) from None
        except BadRequest:
            fake.objects.update(saved)
            del fake.changelog[saved_log:]
            fake._next_id = saved_id
            raise
        if method == "DELETE":
            return 204, None
        if method not in ("POST", "PATCH", "PUT"):
            return 405, {"detail": f'Method "{method}" not allowed.'}
        rendered = [fake.render(endpoint, r) for r in results]
        return (201 if method == "POST" else 200), (rendered if isinstance(body, list) else rendered[0])

    def _apply(self, method: str, endpoint: str, key: int | None, item: dict) -> list[dict]:
        fake = self.server_fake
        store = fake.objects[endpoint]
        message = item.get(CHANGELOG_FIELD)
        if method == "POST" and key is None:
            return [fake._create(endpoint, item, message)]
        if method in ("PATCH", "PUT"):
            target = key if key is not None else item.get("id")
            if target not in store:
                raise BadRequest({"id": [f"object with id {target} does not exist"]} if key is None else
                                 {"detail": "Not found."})
            return [fake._update(endpoint, store[target], {k: v for k, v in item.items() if k != "id"},
                                 message)]
        if method == "DELETE":
            target = key if key is not None else item.get("id")
            store.pop(target, None)
            fake.changelog.append({"action": "delete", "endpoint": endpoint, "id": target, "message": message})
        return []

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PATCH(self):
        self._handle("PATCH")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")
