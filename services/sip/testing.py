"""Test helpers for the intercom, shipped in the package (as gpiozero ships its testing
module): a fake ctrl_tcp server for protocol edge cases, a real kamailio registrar/proxy
with digest authentication, and real baresip and SIPp peers, all on 127.0.0.1 and free
ports, each stopped by its owner.

Not responsible for: the worker's own code; nothing here is used by the runtime.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

from edge.testing.ports import free_port, wait_listening
from edge.testing.waiting import wait_for
from services.sip.baresip import free_sip_port, write_tone
from services.sip.control import ControlError, ControlLink
from services.sip.netstring import encode


class FakeControlServer:
    """Listens like baresip's ctrl_tcp on 127.0.0.1: records the commands it receives,
    answers each (`answers`: command → (ok, data)), and sends whatever bytes a test hands
    `send_raw` (events, garbage, half a frame)."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self.port = self._listener.getsockname()[1]
        self.commands: list[dict] = []
        self.answers: dict[str, tuple[bool, str | bytes]] = {}
        self.silent: set[str] = set()  # commands it never answers
        self.conn: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="fake-ctrl-tcp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        self.conn = conn
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b":" in buf:
                size, _, rest = buf.partition(b":")
                if len(rest) <= int(size):
                    break
                message = json.loads(rest[:int(size)])
                buf = rest[int(size) + 1:]
                self.commands.append(message)
                if message["command"] not in self.silent:
                    ok, data_ = self.answers.get(message["command"], (True, ""))
                    if isinstance(data_, bytes):  # as it is: baresip passes on a PBX's bytes, UTF-8 or not
                        self.send_raw(encode(b'{"response": true, "ok": %s, "data": "%s", "token": "%s"}' % (
                            b"true" if ok else b"false", data_, str(message.get("token")).encode())))
                    else:
                        self.send({"response": True, "ok": ok, "data": data_, "token": message.get("token")})

    def send(self, message: dict) -> None:
        self.send_raw(encode(json.dumps(message).encode()))

    def send_event(self, type_: str, class_: str = "call", **fields) -> None:
        self.send({"event": True, "type": type_, "class": class_, **fields})

    def send_raw(self, data: bytes) -> None:
        wait_for(lambda: self.conn is not None, 5, message="the control link to connect")
        self.conn.sendall(data)

    def close_connection(self) -> None:
        if self.conn is not None:
            self.conn.shutdown(socket.SHUT_RDWR)
            self.conn.close()

    def close(self) -> None:
        self._listener.close()
        if self.conn is not None:
            self.conn.close()
        self._thread.join(2)


# One UDP worker: with two, the door's ACK and the BYE right after it (a 200 that crossed the
# CANCEL) were now and then forwarded in reverse order, and the SIPp peer failed its scenario.
KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
{tls}mpath="{modules}"
{tls_modules}loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "kex.so"
modparam("usrloc", "db_mode", 0)
# kamailio counts a binding's expiry in whole seconds, so a 3 s grant lasts 2 to 3 s, while
# baresip refreshes at 90 % of it (2.7 s): a call in that gap found no binding (404, about 1
# run in 8). Expired bindings are used until usrloc's timer removes them (not within a
# test's life); clients are still told the short grant.
modparam("usrloc", "timer_interval", 600)
modparam("registrar", "use_expired_contacts", 1)
modparam("registrar", "max_expires", {max_expires})
modparam("registrar", "min_expires", 1)
modparam("registrar", "default_expires", {max_expires})
modparam("auth", "qop", "auth")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    xlog("L_NOTICE", "EDGE-REQ $rm from=$fU to=$rU proto=$pr\\n");
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here"); exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    $var(pw) = "";
{passwords}
    if (is_method("REGISTER")) {{
        if (!pv_www_authenticate("$fd", "$var(pw)", "0")) {{ www_challenge("$fd", "0"); exit; }}
        save("location");
        exit;
    }}
    if (is_method("INVITE")) {{
        if (!pv_proxy_authenticate("$fd", "$var(pw)", "0")) {{ proxy_challenge("$fd", "0"); exit; }}
        consume_credentials();
        record_route();
    }}
{routes}
    if (!lookup("location")) {{ sl_send_reply("404", "Not Found"); exit; }}
    t_relay();
}}
"""


class Kamailio:
    """kamailio as registrar and proxy on 127.0.0.1:`port`: digest authentication (401 for
    REGISTER, 407 for INVITE, qop=auth) for `users` ({name: password}), a granted expiry of
    at most `max_expires` s, and `routes` ({extension: port}) to peers that do not register
    (SIPp). With `tls` ((certificate, key) PEM files) it also takes TLS on `tls_port`
    (Debian's kamailio-tls-modules). Every request it receives is logged with its transport,
    so tests count them (`requests()`)."""

    MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"

    def __init__(self, workdir: Path, users: dict[str, str], *, max_expires: int = 60,
                 routes: dict[str, int] | None = None, port: int | None = None,
                 tls: tuple[Path, Path] | None = None):
        self.workdir = Path(workdir)
        self.users, self.max_expires, self.routes = users, max_expires, dict(routes or {})
        self.port = port or free_sip_port()
        self.tls = tls
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen | None = None
        self.log_path = self.workdir / "kamailio.log"

    @classmethod
    def modules_dir(cls) -> str:
        return next((m for m in (cls.MODULES, "/usr/lib/aarch64-linux-gnu/kamailio/modules/",
                                 "/usr/lib/kamailio/modules/") if os.path.isdir(m)), cls.MODULES)

    def config(self) -> str:
        passwords = "\n".join(f'    if ($fU == "{u}") {{ $var(pw) = "{p}"; }}' for u, p in self.users.items())
        routes = "\n".join(f'    if ($rU == "{ext}") {{ $du = "sip:127.0.0.1:{port}"; t_relay(); exit; }}'
                           for ext, port in self.routes.items())
        modules = self.modules_dir()
        tls = tls_modules = ""
        if self.tls:
            tls = f"enable_tls=yes\nlisten=tls:127.0.0.1:{self.tls_port}\n"
            tls_modules = "".join(f'{line}\n' for line in (
                'loadmodule "tls.so"', f'modparam("tls", "certificate", "{self.tls[0]}")',
                f'modparam("tls", "private_key", "{self.tls[1]}")', 'modparam("tls", "verify_certificate", 0)',
                'modparam("tls", "require_certificate", 0)', 'modparam("tls", "tls_method", "TLSv1.2+")'))
        return KAMAILIO_CFG.format(port=self.port, modules=modules, max_expires=self.max_expires,
                                   passwords=passwords, routes=routes, tls=tls, tls_modules=tls_modules)

    def start(self, program: str = "kamailio") -> "Kamailio":
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "kamailio.cfg"
        cfg.write_text(self.config())
        self.proc = subprocess.Popen([program, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4",
                                      "-Y", str(self.workdir)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "ab"), start_new_session=True)
        try:
            wait_listening(self.proc, self.port, "kamailio", self.log_path)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop it and its children (its own process group: it was started in a session of its own)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def requests(self, method: str, user: str | None = None, proto: str | None = None) -> int:
        """How many `method` requests from `user` (any user when None) it has received, over
        `proto` ("udp", "tcp", "tls"; any when None)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        who, over = re.escape(user) if user else r"\S+", proto or r"\S+"
        pattern = rf"EDGE-REQ {method} from={who} to=\S* proto={over}\n"
        return len(re.findall(pattern, text))


class HousePhone:
    """A second baresip as the house phone: registers at `registrar` as `user`, answers
    every call at once (answermode=auto), sends DTMF (`send_dtmf`) and dials the door
    (`dial`). Its control link's events are kept in `seen`."""

    def __init__(self, workdir: Path, user: str, password: str, registrar: int, *, auto_answer: bool = True,
                 record: bool = False):
        self.workdir = Path(workdir)
        self.record = record  # baresip's sndfile filter keeps what it hears in heard/dump-*-dec.wav
        self.user, self.password, self.registrar, self.auto_answer = user, password, registrar, auto_answer
        self.sip_port = free_sip_port()
        self.control_port = free_port()
        self.proc: subprocess.Popen | None = None
        self.link: ControlLink | None = None
        self.seen: list[dict] = []
        self.uri = f"sip:{user}@127.0.0.1"

    def start(self) -> "HousePhone":
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "config").write_text(
            f"poll_method epoll\nsip_listen 127.0.0.1:{self.sip_port}\nnet_interface 127.0.0.1\n"
            f"audio_player aufile,/dev/null\naudio_alert aufile,/dev/null\n"
            f"audio_source aufile,{self.workdir / 'voice.wav'}\nmodule_path /usr/lib/baresip/modules\n"
            f"module g711.so\nmodule aufile.so\nmodule_app ctrl_tcp.so\n"
            f"ctrl_tcp_listen 127.0.0.1:{self.control_port}\nmodule_app menu.so\nmodule_app account.so\n"
            + (f"module sndfile.so\nsnd_path {self.workdir / 'heard'}\n" if self.record else ""))
        (self.workdir / "heard").mkdir(exist_ok=True)
        write_tone(self.workdir / "voice.wav", 120)
        mode = "auto" if self.auto_answer else "manual"
        (self.workdir / "accounts").write_text(
            f'<{self.uri}>;auth_pass={self.password};outbound="sip:127.0.0.1:{self.registrar}";regint=60;'
            f"answermode={mode}\n")
        (self.workdir / "contacts").write_text("")
        self.proc = subprocess.Popen(["baresip", "-f", str(self.workdir)], stdout=open(self.workdir / "log", "ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.link = ControlLink(self.control_port, logging.getLogger("test.house-phone"))
        self.link.connect(10)
        return self

    def events(self) -> list[dict]:
        while self.link is not None:
            try:
                event = self.link.events.get_nowait()
            except Exception:
                break
            if event is None:
                break
            self.seen.append(event)
        return self.seen

    def wait_event(self, type_: str, timeout: float = 10) -> dict:
        return wait_for(lambda: next((e for e in self.events() if e.get("type") == type_), None), timeout,
                        message=f"the house phone to see {type_}")

    def heard(self) -> Path:
        """The WAV of what it heard in its last call (with `record`)."""
        return max((self.workdir / "heard").glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)

    def registered(self) -> bool:
        """Whether its registration stands; False while baresip is too busy starting up to
        answer (seen on a loaded CI machine: no answer to the first command within 5 s)."""
        try:
            return "OK" in self.link.command("reginfo")
        except ControlError:
            return False

    def wait_registered(self, timeout: float = 10) -> None:
        """Until its registration stands; a timeout shows the end of baresip's own log (why
        it is not registered: no answer, a refusal, a port it could not bind)."""
        def why() -> str:
            log = self.workdir / "log"
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
            return f"the {self.user} phone to register; baresip said:\n{tail}"
        wait_for(self.registered, timeout, message=why)

    def send_dtmf(self, keys: str) -> None:
        self.link.command("sndcode", keys)

    def dial(self, uri: str) -> None:
        self.link.command("dial", uri)

    def hangup(self) -> None:
        self.link.command("hangup")

    def stop(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# SIPp answering-side scenarios (SIPp's own XML; [last_*] repeats the request's headers).
_UAS_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
  <recv request="INVITE" />
"""
# A response to the last request, up to its body: with _NO_BODY or _ANSWER_SDP after it.
_REPLY_HEAD = """  <send><![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      [last_Record-Route:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
"""
_NO_BODY = """      Content-Length: 0

    ]]></send>
"""
_REPLY = _REPLY_HEAD + _NO_BODY
# The end of a 200 OK that answers with audio (PCMU), from its Content-Type on.
_ANSWER_SDP = """      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000

    ]]></send>
"""
SIPP_SCENARIOS = {
    # Busy Here: the door moves on (or gives up).
    "busy": _UAS_HEAD.format(name="busy") + _REPLY.format(status="100 Trying") + _REPLY.format(
        status="486 Busy Here") + """  <recv request="ACK" />
</scenario>
""",
    # Rings and never answers: passes only when the door CANCELs (200 to the CANCEL, 487 to
    # the INVITE with the INVITE's CSeq, then the ACK).
    "no_answer": """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="no_answer">
  <recv request="INVITE">
    <action><ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invite_cseq" /></action>
  </recv>
""" + _REPLY.format(status="180 Ringing") + """  <recv request="CANCEL" />
""" + _REPLY.format(status="200 OK") + _REPLY.format(status="487 Request Terminated").replace(
        "[last_CSeq:]", "CSeq: [$invite_cseq] INVITE") + """  <recv request="ACK" />
</scenario>
""",
    # Answers just as the door gives up: its 200 crosses the door's CANCEL (sent after it
    # answered the CANCEL), so the scenario passes only when the door ACKs that 200 and
    # hangs the call up with BYE.
    "answer_crossing_cancel": """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer_crossing_cancel">
  <recv request="INVITE">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invite_cseq" />
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="invite_via1" />
      <ereg regexp=".*" search_in="hdr" header="Via:" occurrence="2" assign_to="invite_via2" />
      <ereg regexp=".*" search_in="hdr" header="Record-Route:" assign_to="invite_rr" />
    </action>
  </recv>
""" + _REPLY.format(status="180 Ringing") + """  <recv request="CANCEL" />
""" + _REPLY.format(status="200 OK") + """  <send><![CDATA[
      SIP/2.0 200 OK
      Via: [$invite_via1]
      Via: [$invite_via2]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$invite_cseq] INVITE
      Record-Route: [$invite_rr]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
""" + _ANSWER_SDP + """  <recv request="ACK" />
  <recv request="BYE" />
""" + _REPLY.format(status="200 OK") + """</scenario>
""",
    # Answers, then keys `#` and `9` as SIP INFO (application/dtmf-relay), and waits for the
    # door's BYE.
    "answer_info_dtmf": _UAS_HEAD.format(name="answer_info_dtmf").replace(
        '<recv request="INVITE" />', '<recv request="INVITE" rrs="true" />') + _REPLY.format(status="180 Ringing")
    + _REPLY_HEAD.format(status="200 OK") + _ANSWER_SDP + """  <recv request="ACK">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="door_side" />
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="our_side" />
    </action>
  </recv>
""" + "".join(f"""  <send><![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$our_side]
      To: [$door_side]
      [routes]
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={key}
      Duration=160
    ]]></send>
  <recv response="200" />
""" for cseq, key in ((1, "#"), (2, "9"))) + """  <recv request="BYE" />
""" + _REPLY.format(status="200 OK") + """</scenario>
""",
}


class Sipp:
    """SIPp (Debian's sip-tester) answering one call with a scenario of SIPP_SCENARIOS on
    127.0.0.1:`port`; `wait()` returns its exit code (0: the call went as the scenario says)."""

    def __init__(self, workdir: Path, scenario: str, program: str = "sipp"):
        self.workdir, self.scenario, self.program = Path(workdir), scenario, program
        self.port = free_sip_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sipp":
        self.workdir.mkdir(parents=True, exist_ok=True)
        path = self.workdir / f"{self.scenario}.xml"
        path.write_text(SIPP_SCENARIOS[self.scenario])
        self.proc = subprocess.Popen([self.program, "-sf", str(path), "-i", "127.0.0.1", "-p", str(self.port),
                                      "-m", "1", "-nostdin", "-timeout", "60s", "-trace_err",
                                      "-error_file", str(self.workdir / "errors.log"), "-trace_msg",
                                      "-message_file", str(self.workdir / "messages.log")],
                                     cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait(self, timeout: float = 15) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
