"""Fixtures of the NetBox tests: NetBox's OpenAPI schema (EDGE_TEST_DATA/netbox; skips, or
fails in CI, without it), a fake NetBox on a free loopback port, the [netbox] section
pointing at it with short timeouts, and pynetbox's API for it (helpers in helpers.py)."""

from __future__ import annotations

import pytest

from edge.testing.fake_netbox import FakeNetbox, Schema, openapi_path
from edge.testing.requirements import find_test_data
from services.netbox.client import make_api

from netbox.helpers import netbox_config


@pytest.fixture(scope="session")
def netbox_schema() -> Schema:
    return Schema(openapi_path(find_test_data("netbox/openapi.json")))


@pytest.fixture
def fake(netbox_schema):
    server = FakeNetbox(netbox_schema).start()
    yield server
    server.stop()


@pytest.fixture
def cfg(fake):
    return netbox_config(fake)


@pytest.fixture
def api(cfg):
    client = make_api(cfg, cfg.secret("token"), backoff_factor=0.01)
    yield client
    client.http_session.close()
