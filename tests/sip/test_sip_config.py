"""The [sip] section: off by default, environment overrides as the schema says, and the
problems a person must fix before the intercom starts, each naming the key."""

from __future__ import annotations

import pytest

from edge import config as configmod
from edge.assembly import all_sections
from services.doorbell.worker import DoorbellWorker
from services.sip.baresip import BaresipFiles, account_line
from services.sip.backend import BackendError
from services.sip.worker import SipWorker

SECTIONS = all_sections([DoorbellWorker, SipWorker])


def build(sip: dict, env: dict | None = None, profile: str = "pi"):
    return configmod.build(SECTIONS, {"sip": sip}, env or {}, profile, source="test")


def test_the_intercom_is_off_by_default_and_its_worker_not_run():
    config = build({})
    assert config["sip"].enabled is False and not SipWorker.enabled(config)


def test_environment_overrides_follow_the_schema():
    config = build({"enabled": True, "registrar": "pbx.lan"}, {
        "EDGE_SIP_USERNAME": "door", "EDGE_SIP_TARGETS": "**610, sip:kitchen@pbx.lan",
        "EDGE_SIP_OPEN_CODE": "#9", "EDGE_SIP_PASSWORD": "s3cret-line", "EDGE_SIP_RING_GROUP": "yes"})
    sip = config["sip"]
    assert sip.targets == ["**610", "sip:kitchen@pbx.lan"] and sip.ring_group is True
    assert sip.secret("password") == "s3cret-line" and "s3cret-line" not in repr(sip.redacted())


@pytest.mark.parametrize("sip, problem", [
    ({"enabled": True, "username": "door"}, "[sip] registrar: the intercom is enabled but has no registrar"),
    ({"enabled": True, "registrar": "pbx.lan"}, "[sip] username: the intercom is enabled but has no username"),
    ({"enabled": True, "registrar": "pbx.lan", "username": "door", "open_code": "9x"}, "[sip] open_code: '9x'"),
    ({"enabled": True, "registrar": "pbx lan:5060", "username": "door"}, "[sip] registrar: 'pbx lan:5060'"),
    ({"enabled": True, "registrar": "pbx.lan", "username": "door", "audio_source": "default"},
     "[sip] audio_source: 'default' is not a baresip audio device"),
    ({"transport": "sctp"}, "[sip] transport: 'sctp' is not one of"),
])
def test_problems_name_the_key_and_the_fix(sip, problem):
    with pytest.raises(configmod.ConfigError) as err:
        build(sip)
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_an_open_code_without_remote_open_is_warned_about():
    config = build({"enabled": True, "registrar": "pbx.lan", "username": "door", "targets": ["1"],
                    "open_code": "#9", "password_file": "/dev/null"})
    assert any("allow_remote_open" in w for w in config.warnings)


def test_the_account_line_holds_the_password_and_refuses_what_baresip_cannot_parse(tmp_path):
    sip = build({"enabled": True, "registrar": "pbx.lan:5060", "username": "door", "transport": "tcp"})["sip"]
    line = account_line(sip, "pw-123")
    assert line.startswith("<sip:door@pbx.lan;transport=tcp>;auth_user=door;auth_pass=pw-123;")
    assert 'outbound="sip:pbx.lan:5060;transport=tcp"' in line and "answermode=manual" in line
    with pytest.raises(BackendError, match="password contains") as err:
        account_line(sip, "pw;regint=1")
    assert "pw;regint=1" not in str(err.value)
    files = BaresipFiles(tmp_path / "rt", sip, "pw-123", 4444)
    files.write()
    assert "pw-123" not in (tmp_path / "rt" / "config").read_text()
    assert "ctrl_tcp_listen     127.0.0.1:4444\n" in (tmp_path / "rt" / "config").read_text()


def test_an_announcement_baresip_cannot_play_says_how_to_convert_it(tmp_path):
    import wave
    stereo = tmp_path / "hello.wav"
    with wave.open(str(stereo), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes(b"\0" * 400)
    with pytest.raises(configmod.ConfigError) as err:
        build({"enabled": True, "registrar": "pbx.lan", "username": "door", "announcement": str(stereo)})
    assert any("44100 Hz, 2 channel(s), 16-bit" in p and "sox" in p for p in err.value.problems)
    with pytest.raises(configmod.ConfigError) as err:
        build({"enabled": True, "registrar": "pbx.lan", "username": "door",
               "announcement": str(tmp_path / "missing.wav")})
    assert any(p.startswith("[sip] announcement: cannot read") for p in err.value.problems)


def test_tls_files_are_checked_and_written_as_baresips_sip_cafile_and_sip_certificate(tmp_path):
    ca, door = tmp_path / "ca.pem", tmp_path / "door.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    door.write_text(ca.read_text() + "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n")
    base = {"enabled": True, "registrar": "pbx.lan:5061", "username": "door", "transport": "tls",
            "password_file": "/dev/null", "targets": ["1"]}
    config = build(base, {"EDGE_SIP_TLS_CA_FILE": str(ca), "EDGE_SIP_TLS_CERTIFICATE": str(door)})
    assert any("does not check the registrar's certificate" in w for w in config.warnings)
    BaresipFiles(tmp_path / "rt", config["sip"], None, 4444).write()
    text = (tmp_path / "rt" / "config").read_text()
    assert f"sip_cafile          {ca}\n" in text and f"sip_certificate     {door}\n" in text
    assert "sip_verify_server   yes\n" in text  # for a baresip that can (1.1 and later)
    with pytest.raises(configmod.ConfigError) as err:
        build({**base, "tls_ca_file": str(tmp_path / "missing.pem"), "tls_certificate": str(ca)})
    assert any(p.startswith(f"[sip] tls_ca_file: cannot read {tmp_path / 'missing.pem'}") for p in err.value.problems)
    assert any(p.startswith(f"[sip] tls_certificate: {ca} holds no PEM private key") for p in err.value.problems)
    udp = build({**base, "transport": "udp", "tls_ca_file": str(ca)})
    assert any("only used with transport = \"tls\"" in w for w in udp.warnings)
    BaresipFiles(tmp_path / "udp", udp["sip"], None, 4444).write()
    assert "sip_cafile" not in (tmp_path / "udp" / "config").read_text()
