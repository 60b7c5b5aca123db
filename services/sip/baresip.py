"""baresip (Debian's `baresip-core`) as the intercom's SIP stack: a child process of the
worker, driven over its ctrl_tcp module.

Responsible for: writing baresip's `config` and `accounts` into the worker's runtime
directory on every start (the user never edits baresip files; the password lives only in
`accounts`, mode 0600), starting the child through edge.child.SupervisedChild, the control
link (control.py), and translating baresip's events into backend.py's records.

Facts about baresip 1.0 this relies on (found by running it): the `menu` module provides
the commands (uanew, dial, hangup, accept, callfind, uadel, quit); call events carry the call's
"id" and "peeruri", the first one usually CALL_RINGING; `quit` hangs up every call with BYE
or CANCEL and un-registers before it exits; a source file that ends makes `menu` hang the
call up, so the generated tone outlasts the longest call; baresip also listens on the SIP
port + 1 for TLS; without `net_interface` it picks the machine's first interface; over TLS it
loads `sip_cafile` but never checks the server's certificate with it (tests/sip/
test_transports.py; baresip issue #1122), and without `sip_certificate` it cannot accept a
TLS connection (the handshake fails).

Not responsible for: when to call whom (calls.py, worker.py).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import re
import socket
import struct
import wave
from pathlib import Path

from edge.child import Backoff, ChildNotReady, SupervisedChild
from services.sip.backend import (ANSWERED, AUTH_CODES, AUTH_FAILED, DTMF, ENDED, INCOMING, REGISTERED, RINGING,
                                  UNREACHABLE, UNREGISTERED, BackendError, BackendGone, CallEvent, IntercomBackend,
                                  LineEvent, sip_code)
from services.sip.audio import padded_announcement
from services.sip.calls import same_uri
from services.sip.control import ControlError, ControlLink
from services.sip.sections import DISCARD, TONE

MODULE_PATH = "/usr/lib/baresip/modules"  # Debian's baresip-core, the same on amd64 and arm64
START_TIMEOUT_S = 10.0
QUIT_GRACE_S = 2.0  # BYE and un-REGISTER answers on a LAN, UDP retransmissions included (0.5 s, 1 s)
TONE_RATE = 8000
_UNSAFE_IN_ACCOUNT = re.compile(r"[\s;\"<>,]")
_CALL_EVENTS = {"CALL_RINGING": RINGING, "CALL_PROGRESS": RINGING, "CALL_ESTABLISHED": ANSWERED,
                "CALL_CLOSED": ENDED, "CALL_INCOMING": INCOMING, "CALL_DTMF_START": DTMF}


def free_control_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_sip_port() -> int:
    """A port free for SIP on UDP and TCP, with the next one free too (baresip's TLS)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65534:
            continue
        socks = []
        try:
            for kind, p in ((socket.SOCK_DGRAM, port), (socket.SOCK_STREAM, port), (socket.SOCK_STREAM, port + 1),
                            (socket.SOCK_DGRAM, port + 1)):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free SIP port pair on 127.0.0.1")


def account_uri(cfg) -> str:
    host = cfg.domain or cfg.registrar.rsplit(":", 1)[0]
    user = cfg.username
    return f"sip:{user}@{host}"


def target_uri(target: str, cfg) -> str:
    """An extension ("**610") becomes a URI at the account's domain; URIs stay as they are."""
    if target.startswith(("sip:", "sips:")):
        return target
    host = cfg.domain or cfg.registrar.rsplit(":", 1)[0]
    return f"sip:{target}@{host}"


def account_line(cfg, password: str | None, register: bool = True) -> str:
    """baresip's accounts line for the door (docs/examples/accounts in baresip's sources);
    without `register` (a test call from the CLI) it only authenticates its INVITEs."""
    for name, value in (("username", cfg.username), ("password", password or ""), ("registrar", cfg.registrar)):
        if _UNSAFE_IN_ACCOUNT.search(value):
            raise BackendError(f"the SIP {name} contains a space, ';', ',', '\"', '<' or '>', which baresip's "
                               f"accounts file cannot hold; choose one without them")
    transport = "" if cfg.transport == "udp" else f";transport={cfg.transport}"
    params = [f"auth_user={cfg.username}"]
    if password:
        params.append(f"auth_pass={password}")
    params += [f'outbound="sip:{cfg.registrar}{transport}"', f"regint={cfg.register_expires_s if register else 0}",
               "answermode=manual"]
    return f"<{account_uri(cfg)}{transport}>;" + ";".join(params) + "\n"


def write_tone(path: Path, seconds: float) -> None:
    """A quiet 440 Hz tone, 8 kHz mono 16-bit (baresip's aufile wants the codec's rate): the
    simulator's microphone. Written once; a file of the right length is kept (SD-card wear)."""
    frames = int(seconds * TONE_RATE)
    if path.exists() and path.stat().st_size >= 44 + 2 * frames:
        return
    period = [int(2000 * math.sin(2 * math.pi * 440 * i / TONE_RATE)) for i in range(TONE_RATE // 40)]
    chunk = struct.pack(f"<{len(period)}h", *period)
    tmp = path.with_suffix(".tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(TONE_RATE)
        out.writeframes(chunk * (frames // len(period) + 1))
    tmp.replace(path)


class BaresipFiles:
    """The files of one baresip start, in the runtime directory."""

    def __init__(self, runtime_dir: Path, cfg, password: str | None, control_port: int, register: bool = True):
        self.dir, self.cfg, self.password, self.control_port = Path(runtime_dir), cfg, password, control_port
        self.register = register

    def source(self) -> str:
        if self.cfg.audio_source == TONE:
            tone = self.dir / "tone.wav"
            write_tone(tone, self.cfg.max_talk_s + self.cfg.ring_timeout_s * max(1, len(self.cfg.targets)) + 30)
            return f"aufile,{tone}"
        return self.cfg.audio_source

    def sink(self) -> str:
        # aubridge's player feeds a bridge device nobody reads: a real sink that plays nothing
        # (baresip 1.0's aufile has no player).
        return "aubridge,edge-discard" if self.cfg.audio_sink == DISCARD else self.cfg.audio_sink

    def announcement(self) -> tuple[str, float] | None:
        """(aufile source, seconds) of the padded announcement, or None without one."""
        if not self.cfg.announcement:
            return None
        padded = self.dir / "announcement.wav"
        return f"aufile,{padded}", padded_announcement(Path(self.cfg.announcement), padded)

    def config_text(self) -> str:
        cfg = self.cfg
        host, _, port = cfg.listen.rpartition(":")
        source, sink = self.source(), self.sink()
        modules = ["g711.so", "aufile.so"]
        for module in ("alsa", "aubridge"):
            if any(s.startswith(f"{module},") for s in (source, sink)):
                modules.append(f"{module}.so")
        lines = [("poll_method", "epoll"), ("sip_listen", cfg.listen), ("sip_trans_def", cfg.transport)]
        if cfg.transport == "tls":
            lines += [(name, path) for name, path in (("sip_cafile", cfg.tls_ca_file),
                                                      ("sip_certificate", cfg.tls_certificate)) if path]
            if cfg.tls_ca_file:  # baresip 1.1 and later verify with it; 1.0 ignores the line (and verifies nothing)
                lines.append(("sip_verify_server", "yes"))
        lines += [("audio_player", sink), ("audio_source", source), ("audio_alert", sink),
                  ("module_path", MODULE_PATH)]
        if host not in ("0.0.0.0", "", "::", "[::]"):
            lines.append(("net_interface", host.strip("[]")))  # else baresip binds the first interface
        lines += [("module", m) for m in modules]
        # No account module: the account is handed over the control link once it is up
        # (BaresipBackend.start), so no registration event can happen before anyone listens.
        lines += [("module_app", "ctrl_tcp.so"), ("ctrl_tcp_listen", f"127.0.0.1:{self.control_port}"),
                  ("module_app", "menu.so")]
        return "".join(f"{k:<20}{v}\n" for k, v in lines)

    def write(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        (self.dir / "config").write_text(self.config_text())
        accounts = self.dir / "accounts"
        fd = os.open(accounts, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older file may have had another mode
        with os.fdopen(fd, "w") as out:
            out.write(account_line(self.cfg, self.password, self.register))
        (self.dir / "contacts").write_text("")  # baresip creates a sample one otherwise


class BaresipBackend(IntercomBackend):
    def __init__(self, cfg, password: str | None, runtime_dir: Path, log: logging.Logger,
                 backoff: Backoff = Backoff(), register: bool = True):
        self.cfg, self.password, self.runtime_dir, self.log = cfg, password, Path(runtime_dir), log
        self.register = register
        self.child = SupervisedChild("baresip", log, ready_line=r"baresip is ready", backoff=backoff)
        self.link: ControlLink | None = None
        self.source = ""                                        # the microphone, as baresip names it
        self.announcement: tuple[str, float] | None = None      # (aufile source, seconds)
        self._statmode_off = False
        self.control_port = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self.link is not None:  # the link of a baresip that ended
            self.link.close()
            self.link = None
        self.control_port = self.cfg.control_port or free_control_port()
        files = BaresipFiles(self.runtime_dir, self.cfg, self.password, self.control_port, self.register)
        files.write()
        self.source, self.announcement = files.source(), files.announcement()
        self._statmode_off = False
        try:
            self.child.start([self.cfg.program, "-f", str(self.runtime_dir)], cwd=self.runtime_dir)
        except OSError as exc:
            raise BackendError(f"cannot run {self.cfg.program} ({exc.strerror or exc}); install it with "
                               f"`sudo apt-get install baresip-core`") from None
        link = ControlLink(self.control_port, self.log)
        try:
            link.connect(START_TIMEOUT_S, exited=self.child.poll)
            self.child.wait_ready(START_TIMEOUT_S)
        except (ControlError, ChildNotReady) as exc:
            link.close()
            self.child.stop(2.0)
            detail = self.child.health().last_stderr
            raise BackendError(f"baresip did not start: {exc}" + (f" (it said: {detail})" if detail else "")) from None
        self.link = link
        self._add_account()

    def _add_account(self) -> None:
        """The account from the accounts file, through menu's `uanew`: it starts registering
        now that its events have a listener (baresip's account module would register while
        baresip starts, before the link is accepted). Its answer echoes the account line,
        password included, so it is never logged."""
        line = (self.runtime_dir / "accounts").read_text().strip()
        try:
            self.link.command("uanew", line)
        except ControlError:
            self.stop(2.0)
            raise BackendError("baresip did not take the account from the accounts file (check [sip] username "
                               "and registrar)") from None

    def stop(self, timeout_s: float, unregister: bool = True) -> None:
        """`quit`: baresip sends BYE or CANCEL for its calls and un-REGISTERs at once, and
        gets QUIT_GRACE_S for the answers; then SIGTERM, and SIGKILL half a second later.
        What baresip would still wait for after that are SIP transaction timers (Timer D
        keeps a cancelled INVITE 32 s over UDP), which nothing needs. Without `unregister`
        (the registrar is gone, or a restart) it gets SIGTERM at once."""
        link, self.link = self.link, None
        grace = 0.0
        if unregister and link is not None and link.connected and self.child.running:
            try:
                link.command("quit", timeout_s=min(2.0, timeout_s))
                grace = min(QUIT_GRACE_S, max(0.0, timeout_s - 0.5))
            except ControlError as exc:
                self.log.warning("baresip did not take `quit` (%s); ending it with SIGTERM", exc)
        self.child.stop(min(timeout_s, grace + 0.5), exit_grace_s=grace)
        if link is not None:
            link.close()

    def wake(self) -> None:
        """End a `next_event` wait early (the owner has something else to do: a ring)."""
        link = self.link
        if link is not None:
            link.events.put({"type": "wake"})  # no record comes of it: next_event returns None

    def kill(self, reason: str) -> None:
        self.child.kill(reason)

    @property
    def running(self) -> bool:
        return self.child.running and self.link is not None and self.link.connected

    def pid(self) -> int | None:
        return self.child.pid

    # -- events --------------------------------------------------------------------------------
    def next_event(self, timeout_s: float):
        link = self.link
        if link is None:
            return BackendGone("baresip is not running")
        try:
            raw = link.events.get(timeout=timeout_s)
        except queue.Empty:
            return None if self.child.poll() is None else BackendGone(f"baresip ended ({self.child.poll()})")
        if raw is None:
            self.link = None
            link.close()
            return BackendGone(link.ended or "the control link ended")
        return self._translate(raw)

    def _translate(self, raw: dict):
        kind, param = raw.get("type"), raw.get("param")
        param = param if isinstance(param, str) else ""
        if raw.get("class") == "register":
            if kind == "REGISTER_OK":
                return LineEvent(REGISTERED, param, sip_code(param), self._granted_expiry())
            if kind == "REGISTER_FAIL":
                code = sip_code(param)
                return LineEvent(AUTH_FAILED if code in AUTH_CODES else UNREACHABLE, param, code)
            if kind == "UNREGISTERING":
                return LineEvent(UNREGISTERED, "un-registering", None)
            return None
        call_kind = _CALL_EVENTS.get(kind)
        if call_kind is None:
            return None
        peer = raw.get("peeruri") if isinstance(raw.get("peeruri"), str) else ""
        call_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        if call_kind == ANSWERED and not self._statmode_off:
            self._quiet_status_line()
        if call_kind == DTMF and not param:
            return None
        return CallEvent(call_kind, peer, call_id, param, sip_code(param) if call_kind == ENDED else None)

    def _granted_expiry(self) -> int | None:
        """What the registrar granted, which baresip re-registers before (menu's `reginfo`
        shows it as "Expires 60s"); None when it cannot be read."""
        try:
            match = re.search(r"Expires (\d+)s", self.link.command("reginfo"))
        except ControlError:
            return None
        return int(match.group(1)) if match and int(match.group(1)) > 0 else None

    def _quiet_status_line(self) -> None:
        """menu prints a call's bit rates ten times a second while a call lasts; `statmode`
        (a toggle, available during a call) turns that off for the rest of this process."""
        self._statmode_off = True
        try:
            self.link.command("statmode")
        except ControlError as exc:
            self.log.debug("statmode: %s", exc)

    # -- requests --------------------------------------------------------------------------------
    def _command(self, command: str, params: str | None = None) -> str:
        link = self.link
        if link is None:
            raise BackendError("baresip is not running")
        try:
            return link.command(command, params)
        except ControlError as exc:
            raise BackendError(str(exc)) from None

    def dial(self, uri: str) -> str | None:
        """Call `uri`; the new call's id, or None when baresip cannot say. Its `dial` answers
        nothing, but the call it placed is the current one, whose id `callstat` shows."""
        self._command("dial", uri)
        try:
            status = self._command("callstat")
        except BackendError:
            return None
        peer, found = re.search(r"peer_uri:\s*<([^>]*)>", status), re.search(r"\bid=(\S+)", status)
        return found.group(1) if peer and found and same_uri(peer.group(1), uri) else None

    def _select(self, call_id: str | None) -> None:
        """Make `call_id` the current call. Never skipped: `hangup` and `accept` act on the
        current call, so without it they would end or take whichever call that is (the one
        just answered, in a ring group)."""
        if not call_id:
            raise BackendError("the call's id is not known yet, so it is left to time out rather than "
                               "risk ending another call")
        if "not found" in self._command("callfind", call_id):  # baresip 1.0 says so with ok
            raise BackendError(f"call {call_id} is gone already")

    def hangup(self, peer: str, call_id: str | None) -> None:
        self._select(call_id)
        self._command("hangup")

    def accept(self, peer: str, call_id: str | None) -> None:
        self._select(call_id)
        self._command("accept")

    def switch_source(self, source: str) -> None:
        """The microphone of the call going on and of the next ones (menu's `ausrc`); its
        answer says ok even when the device failed, so the text is read."""
        answer = self._command("ausrc", source)
        if "failed" in answer:
            raise BackendError(f"baresip could not switch the audio source to {source}: {answer.strip()}")

    def stop_registering(self) -> None:
        self._command("uadel", account_uri(self.cfg))

    def link_counts(self) -> dict:
        link = self.link
        return {} if link is None else {"malformed": link.malformed, "truncated": link.truncated,
                                        "broken": link.broken}
