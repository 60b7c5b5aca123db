"""The [sip] config section: the line (registrar, account), the door call (targets, timers,
open code), audio, incoming callers, and the baresip child's own settings, with the checks
that tell a person what is missing before the intercom is started.

Not responsible for: turning the values into baresip's files (baresip.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from edge.config import Key, Section

TRANSPORTS = ("udp", "tcp", "tls")
DTMF_KEYS = re.compile(r"[0-9*#A-Da-d]+")
TONE, DISCARD = "tone", "discard"


def check_sip(config, problems: list[str], warnings: list[str]) -> None:
    cfg = config["sip"]
    if not cfg.enabled:
        return
    for key, example in (("registrar", "registrar = \"pbx.lan:5060\""), ("username", "username = \"door\"")):
        if not cfg[key]:
            problems.append(f"[sip] {key}: the intercom is enabled but has no {key}; for example: {example}")
    if not cfg.targets:
        warnings.append("[sip] targets: empty, so a ring calls nobody; for example: targets = [\"**610\"]")
    if cfg.password_file == "" and cfg.secret("password") is None:
        warnings.append("[sip] password_file: not set, so the line registers without a password; set "
                        "password_file (or EDGE_SIP_PASSWORD) if the PBX asks for one")
    if cfg.open_code and not DTMF_KEYS.fullmatch(cfg.open_code):
        problems.append(f"[sip] open_code: {cfg.open_code!r} has keys a phone cannot send; use 0-9, * and #, "
                        f"for example: open_code = \"#9\"")
    if cfg.open_code and not config["doorbell"]["allow_remote_open"]:
        warnings.append("[sip] open_code is set but [doorbell] allow_remote_open is false: the code opens nothing "
                        "until you set allow_remote_open = true")
    for key in ("audio_source", "audio_sink"):
        value = cfg[key]
        if value not in (TONE, DISCARD) and "," not in value:
            problems.append(f"[sip] {key}: {value!r} is not a baresip audio device; write MODULE,DEVICE, for "
                            f"example: {key} = \"alsa,default\" or \"aufile,/var/lib/edge/sound.wav\"")
    if cfg.audio_source == DISCARD or cfg.audio_sink == TONE:
        problems.append("[sip] audio_source may be \"tone\" and audio_sink \"discard\", not the other way round")
    if cfg.announcement:
        from services.sip.audio import announcement_problem  # audio.py imports this module
        problem = announcement_problem(cfg.announcement)
        if problem:
            problems.append(problem)
    if cfg.tls_ca_file or cfg.tls_certificate:
        check_tls_files(cfg, problems, warnings)
    if not re.fullmatch(r"[^\s:]+(:\d{1,5})?", cfg.registrar or "x"):
        problems.append(f"[sip] registrar: {cfg.registrar!r} is not HOST or HOST:PORT; for example: "
                        f"registrar = \"pbx.lan:5060\"")


def check_tls_files(cfg, problems: list[str], warnings: list[str]) -> None:
    """TLS files baresip cannot load are named here (baresip 1.0 refuses to start with them and
    says why only in its own output); files set for another transport are not used, which is
    said; and that baresip 1.0 does not check the registrar's certificate is said too."""
    if cfg.transport != "tls":
        warnings.append(f"[sip] tls_ca_file and tls_certificate are only used with transport = \"tls\" (it is "
                        f"{cfg.transport!r}); set transport = \"tls\" or remove them")
        return
    for key, needs, what in (("tls_ca_file", ("CERTIFICATE",), "the CA that signed the PBX's certificate"),
                             ("tls_certificate", ("CERTIFICATE", "PRIVATE KEY"), "the door's certificate and key")):
        if not cfg[key]:
            continue
        try:
            text = Path(cfg[key]).read_text(errors="replace")
        except OSError as exc:
            problems.append(f"[sip] {key}: cannot read {cfg[key]} ({exc.strerror}); give the PEM file of {what}, "
                            f"or remove the key")
            continue
        absent = [n for n in needs if f"{n}-----" not in text]  # "BEGIN CERTIFICATE-----", "EC PRIVATE KEY-----"
        if absent:
            problems.append(f"[sip] {key}: {cfg[key]} holds no PEM {' or '.join(absent).lower()}; it needs "
                            f"{what} in PEM (convert a DER file with `openssl x509 -inform der -in CERT.cer`)")
    if cfg.tls_ca_file:
        warnings.append("[sip] tls_ca_file: Debian 12's baresip 1.0 encrypts the line but does not check the "
                        "registrar's certificate against this CA (it accepts any certificate); baresip 1.1 and "
                        "later check it")


SIP_SECTION = Section("sip", (
    Key("enabled", bool, False, "run the intercom (needs baresip: sudo apt-get install baresip-core)"),
    Key("registrar", str, "", "the PBX or registrar as HOST or HOST:PORT", example="pbx.lan:5060"),
    Key("domain", str, "", "the SIP domain of the account (default: the registrar's host)", example="pbx.lan"),
    Key("transport", str, "udp", "how SIP reaches the registrar", choices=TRANSPORTS),
    Key("tls_ca_file", str, "", "with transport = \"tls\": a PEM file of the CA(s) the registrar's certificate "
        "should be signed by (baresip's sip_cafile). Debian 12's baresip 1.0 encrypts but does NOT check the "
        "certificate against it (tested: a certificate from another CA is accepted); baresip 1.1 and later do",
        example="/etc/edge/pbx-ca.pem"),
    Key("tls_certificate", str, "", "with transport = \"tls\": a PEM file holding the door's own certificate and "
        "its private key (baresip's sip_certificate). Without it the door cannot accept a TLS connection, so "
        "requests from the PBX (a call to the door, the house phone hanging up) arrive only if the PBX reuses "
        "the door's connection", example="/etc/edge/door-tls.pem"),
    Key("username", str, "", "the door's SIP account (extension)", example="door"),
    Key("password_file", str, "", "a file holding the account's password (or EDGE_SIP_PASSWORD)",
        example="/etc/edge/sip.password", secret_file=True),
    Key("register_expires_s", int, 600, "registration lifetime asked for; the registrar may grant less, and the "
        "line re-registers before what it granted runs out", min=10, max=86400),
    Key("targets", list, [], "extensions or SIP URIs called when the doorbell rings, in order",
        example=["**610", "sip:kitchen@pbx.lan"]),
    Key("ring_group", bool, False, "call every target at once; the first to answer takes the call"),
    Key("ring_timeout_s", float, 30.0, "how long a target rings before the call moves on (CANCEL)", min=1,
        max=300),
    Key("max_talk_s", float, 120.0, "a call is ended after this long", min=5, max=3600),
    Key("open_code", str, "", "the DTMF code that opens the door (empty: DTMF opens nothing)", example="#9"),
    Key("digit_timeout_s", float, 3.0, "a code's keys must follow each other within this", min=0.5, max=30),
    Key("max_wrong_codes", int, 3, "the call is ended after this many wrong codes", min=1, max=20),
    Key("hangup_after_open_s", float, 5.0, "the call ends this long after the door was opened", min=0, max=600),
    Key("audio_source", str, "alsa,default", "microphone: MODULE,DEVICE for baresip (\"alsa,plughw:1,0\"), or "
        "\"tone\" (a generated test tone)", profiles={"sim": TONE}),
    Key("audio_sink", str, "alsa,default", "speaker: MODULE,DEVICE for baresip, or \"discard\" (nothing is played)",
        profiles={"sim": DISCARD}),
    Key("announcement", str, "", "a WAV file (8 kHz, mono, 16-bit) played to whoever answers a door call, "
        "before the microphone", example="/etc/edge/someone-at-the-door.wav"),
    Key("allowed_callers", list, [], "SIP users or URIs whose calls to the door are answered; others are rejected",
        example=["sip:kitchen@pbx.lan"]),
    Key("listen", str, "0.0.0.0:5062", "local address and port of the door's SIP stack (the next port is "
        "taken too, for TLS)"),
    Key("control_port", int, 0, "baresip's control port on 127.0.0.1 (0: a free one)", min=0, max=65535),
    Key("retry_min_s", float, 5.0, "first wait before registering again after a failure", min=0.1, max=600),
    Key("retry_max_s", float, 300.0, "longest wait between registration attempts", min=1, max=3600),
    Key("program", str, "baresip", "the baresip program"),
), "the SIP intercom: calls the house phones when the doorbell rings", checks=(check_sip,))
