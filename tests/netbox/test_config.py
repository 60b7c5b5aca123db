"""The [netbox] section: off by default, its problems named with the fix, a warning for a
token sent over plain http to another host, the token kept out of the values."""

from __future__ import annotations

import pytest

from edge.assembly import all_sections, worker_classes
from edge.config import ConfigError, build, load
from services.netbox.sections import SECTION
from services.netbox.worker import NetboxWorker


def section(values: dict, env: dict | None = None):
    return build([SECTION], {"netbox": values}, env or {}, "pi")


def test_the_worker_is_off_by_default_and_neither_essential_nor_critical():
    config = load(all_sections(worker_classes()), None, {})
    assert NetboxWorker.enabled(config) is False
    assert not NetboxWorker.essential and not NetboxWorker.critical


def test_plain_http_to_another_host_draws_a_warning_and_loopback_does_not(tmp_path):
    token = tmp_path / "token"
    token.write_text("0123456789abcdef\n")
    remote = section({"enabled": True, "url": "http://netbox.lan", "site": "home", "token_file": str(token)})
    assert any("plain http" in w and "https://" in w for w in remote.warnings)
    local = section({"enabled": True, "url": "http://127.0.0.1:8000", "site": "home", "token_file": str(token)})
    assert local.warnings == []
    assert "0123456789abcdef" not in repr(local["netbox"].redacted())
    assert local["netbox"].secret("token") == "0123456789abcdef"


def test_an_enabled_sync_without_token_or_site_names_what_to_set():
    with pytest.raises(ConfigError) as caught:
        section({"enabled": True, "url": "https://netbox.example.org"})
    text = str(caught.value)
    assert "token_file" in text and "EDGE_NETBOX_TOKEN" in text and "site" in text


def test_the_url_and_token_come_from_the_environment_too():
    config = section({"enabled": True, "site": "home"},
                     {"EDGE_NETBOX_URL": "https://netbox.example.org", "EDGE_NETBOX_TOKEN": "abc123def456"})
    assert config["netbox"].url == "https://netbox.example.org" and config["netbox"].secret("token") == "abc123def456"


def test_doctor_says_whether_netbox_answers_and_takes_the_token(fake):
    from edge.doctor import FAIL, OK
    from netbox.helpers import netbox_config

    good = NetboxWorker.doctor({"netbox": netbox_config(fake)})
    assert [c.status for c in good] == [OK] and "API 4.4" in good[0].detail
    bad = NetboxWorker.doctor({"netbox": netbox_config(fake, token="revoked")})
    assert bad[0].status == FAIL and "token" in bad[0].detail and bad[0].fix
    assert fake.counters.writes == 0


def test_a_server_that_is_not_netbox_is_named_not_crashed_on(tmp_path):
    """A web server answering HTML where NetBox should be (a proxy's error page)."""
    import http.server
    import threading

    from services.netbox.client import SERVER_ERROR, check_version, classify, make_api
    from netbox.helpers import netbox_config

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>502 Bad Gateway</html>"
            self.send_response(200)
            self.send_header("API-Version", "4.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Html)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        class Where:
            url = f"http://127.0.0.1:{server.server_address[1]}"
            token = "t"
        cfg = netbox_config(Where, token="t")
        api = make_api(cfg, "t")
        check_version(api)
        with pytest.raises(Exception) as caught:
            list(api.dcim.devices.filter(name="x"))
        failure = classify(caught.value)
        api.http_session.close()
        assert failure.kind == SERVER_ERROR and "not JSON" in failure.message
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
