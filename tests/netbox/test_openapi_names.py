"""Every filter and field name the sync uses exists in NetBox's OpenAPI schema: NetBox
silently ignores an unknown filter, so `?serail=X` would return every device and the sync
would match the wrong one."""

from __future__ import annotations

from services.netbox.sync import CHANGELOG_FIELD, FIELDS, FILTERS, Sync

from netbox.helpers import node_facts


def test_every_declared_filter_is_a_filter_of_its_endpoint_in_the_openapi_schema(netbox_schema):
    for endpoint, names in FILTERS.items():
        unknown = names - netbox_schema.filters[endpoint]
        assert not unknown, f"{endpoint}: {sorted(unknown)} are not NetBox filters"


def test_every_declared_write_field_is_a_request_field_in_the_openapi_schema(netbox_schema):
    for endpoint, names in FIELDS.items():
        unknown = names - netbox_schema.request_fields[endpoint]
        assert not unknown, f"{endpoint}: {sorted(unknown)} are not fields of its request schema"


def test_a_full_sync_sends_only_schema_names_and_only_declared_ones(fake, cfg, api):
    Sync(api, cfg, node_facts(), run_id="r1", node="front").run()
    Sync(api, cfg, node_facts(eth0=("192.0.2.99/24",), peripherals=("camera",)), run_id="r2", node="front").run()
    assert fake.unknown_filters == set() and fake.unknown_fields == set()
    assert fake.used_filters and all(name in FILTERS[ep] for ep, name in fake.used_filters)
    assert all(name in FIELDS[ep] for ep, name in fake.written_fields)
    assert all(entry["message"] and "run r" in entry["message"] for entry in fake.changelog), CHANGELOG_FIELD


def test_a_misspelt_filter_is_refused_before_it_reaches_netbox(cfg, api):
    sync = Sync(api, cfg, node_facts(), run_id="r", node="front")
    try:
        sync._filter("dcim/devices", serail="X")
    except ValueError as exc:
        assert "serail" in str(exc)
    else:
        raise AssertionError("an undeclared filter went through")
